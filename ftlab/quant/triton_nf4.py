"""NF4 dequantize as a Triton kernel, written from scratch: the GPU version of `nf4.dequantize_nf4`.

    from ftlab.quant import nf4, triton_nf4
    w_hat = triton_nf4.dequantize_nf4(nf4.quantize_nf4(w))   # equal, bit for bit, to nf4.dequantize_nf4

One program handles BLOCK packed bytes: it loads them once, splits each into its high nibble (element
2i) and low nibble (element 2i+1), reads both levels from the 16-entry codebook and both elements'
block scales, multiplies in float32, interleaves the two halves back into element order, rounds once
into the output dtype and stores 2 * BLOCK values. That is the PyTorch version's recipe (byte -> pair
of levels, times absmax, one cast) with the whole pipeline in registers: each byte is read once from
memory and each output written once, so the kernel is limited by memory bandwidth alone.

The bfloat16 rounding is written out in integer arithmetic (round to nearest, ties to even, on the
float32 bits, as torch does): Triton's interpreter casts float32 to bfloat16 by truncating, so a plain
`.to(tl.bfloat16)` would make the CPU check disagree with what the GPU computes.

Triton is an optional dependency (about 1 GB; CUDA builds of torch bring it): `pip install "ftlab[triton]"`.
Without a GPU, Triton's interpreter runs the same kernel on CPU tensors with numpy; it must be switched on
before this module is imported (os.environ["TRITON_INTERPRET"] = "1"), which is how tests/test_triton_nf4.py
checks the kernel bit for bit on a CPU machine.
"""

from __future__ import annotations

import os

import torch

from ftlab.quant.nf4 import NF4_CODE, NF4Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # the optional extra is not installed
    triton = tl = None

__all__ = ["AVAILABLE", "INSTALL", "INTERPRETED", "dequantize_nf4", "BLOCK"]

AVAILABLE = triton is not None
INSTALL = 'pip install "ftlab[triton]"   (or: pip install triton==3.7.1, the version torch 2.13 is built with)'
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # decided once: @triton.jit reads it when a kernel is defined
BLOCK = 1024  # packed bytes per program: 2048 outputs, 8 per thread with 8 warps

if AVAILABLE:
    @triton.jit
    def _dequantize_kernel(packed_ptr, absmax_ptr, code_ptr, out_ptr, n, blocksize, BLOCK: tl.constexpr,
                           BF16_BITS: tl.constexpr):
        first = tl.program_id(0).to(tl.int64) * BLOCK  # int64: a 7B model has more than 2^31 weights
        byte_index = first + tl.arange(0, BLOCK)
        even = 2 * byte_index  # element index of each byte's high nibble
        byte = tl.load(packed_ptr + byte_index, mask=even < n, other=0).to(tl.int32)
        high = tl.load(code_ptr + (byte >> 4))
        low = tl.load(code_ptr + (byte & 0xF))
        # A byte's two elements can lie in different blocks when the blocksize is odd: two scale loads.
        high_scale = tl.load(absmax_ptr + even // blocksize, mask=even < n, other=0.0)
        low_scale = tl.load(absmax_ptr + (even + 1) // blocksize, mask=even + 1 < n, other=0.0)
        # float32 in element order: pair each high value with its low value, then flatten the pairs. (Not
        # tl.interleave, a library @triton.jit function: if triton was imported before TRITON_INTERPRET was
        # set, by bitsandbytes for one, it stays compiled and cannot run inside an interpreted kernel.)
        values = tl.reshape(tl.join(high * high_scale, low * low_scale), (2 * BLOCK,))
        index = 2 * first + tl.arange(0, 2 * BLOCK)
        if BF16_BITS:  # out_ptr holds int16: round float32 to bfloat16 ourselves, to nearest, ties to even
            bits = values.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            tl.store(out_ptr + index, bits.to(tl.int16), mask=index < n)
        else:
            tl.store(out_ptr + index, values.to(out_ptr.dtype.element_ty), mask=index < n)


def dequantize_nf4(q: NF4Tensor, absmax: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `ftlab.quant.nf4.dequantize_nf4`, computed by the Triton kernel.

    Runs on CUDA tensors, or on CPU tensors when the interpreter was switched on before import.
    """
    if not AVAILABLE:
        raise ImportError(f"triton is not installed; {INSTALL}")
    if not isinstance(q, NF4Tensor):
        raise TypeError(f"q must be an NF4Tensor (from quantize_nf4), got {type(q).__name__}")
    device = q.packed.device
    if device.type == "cpu" and not INTERPRETED:
        raise RuntimeError("q is on the CPU: Triton runs CPU tensors only in its interpreter; set "
                           "os.environ['TRITON_INTERPRET'] = '1' before importing ftlab.quant.triton_nf4")
    absmax = (q.absmax if absmax is None else absmax).float().contiguous()
    n_blocks = -(-q.numel // q.blocksize)
    if absmax.numel() != n_blocks:
        raise ValueError(f"absmax has {absmax.numel()} values but {q.numel} elements in blocks of {q.blocksize} "
                         f"need {n_blocks}")
    out = torch.empty(q.numel, dtype=q.dtype, device=device)
    bf16 = q.dtype == torch.bfloat16
    grid = (triton.cdiv(q.packed.numel(), BLOCK),)
    _dequantize_kernel[grid](q.packed.contiguous(), absmax, NF4_CODE.to(device), out.view(torch.int16) if bf16 else out,
                             q.numel, q.blocksize, BLOCK=BLOCK, BF16_BITS=bf16)
    return out.reshape(q.shape)
