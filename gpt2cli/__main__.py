from gpt2cli.entry import run

run()
