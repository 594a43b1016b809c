from gpt2cli.cli import run

run()
