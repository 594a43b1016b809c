"""What tests share: models.py (tiny random GPT-2 checkpoints in the Hub's layouts), cli.py (the one way
to run the command), hubserver.py (a Hub on 127.0.0.1), reference.py (transformers where installed, and
plain greedy decoding)."""
