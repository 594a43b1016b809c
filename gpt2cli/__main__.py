import sys

from gpt2cli.cli import main

sys.exit(main())
