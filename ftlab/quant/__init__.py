"""4-bit quantization from scratch: NF4 (nf4.py) and a 4-bit linear layer for QLoRA (linear4bit.py)."""
