"""Models on disk and on the Hub: names, folders, downloads, and reading checkpoints and tokenizers."""
