"""The NumPy GPT-2 engine: arrays in, arrays out (model.py the forward pass, kernels.py its products)."""
