"""4-bit quantization from scratch: NF4 (nf4.py) and a 4-bit linear layer for QLoRA (linear4bit.py).

nf4.py is byte-exact with bitsandbytes' CPU quantizer and faster than it on CPU (lookup grid, cache-sized
chunks, one thread per core); triton_nf4.py is the same dequantize as a Triton kernel (optional extra
`triton`; tested bit for bit on CPU under TRITON_INTERPRET=1); baselines.py compares data types.
"""
