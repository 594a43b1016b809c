"""Decoding strategies over the engine: logits in, token ids and text out; nothing printed, no files."""
