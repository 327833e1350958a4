"""The Triton NF4 dequantize kernel (ftlab.quant.triton_nf4) against our PyTorch dequantize, bit for bit.

No GPU is needed: Triton's interpreter runs the kernel on CPU tensors. It must be on before the kernel
module is imported (@triton.jit decides when the kernel is defined), so this file sets it first. The
optional extra is installed by `make setup` (CI included); without it these tests fail with the install line.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from ftlab.quant import nf4, triton_nf4  # noqa: E402


def test_the_kernel_module_runs_interpreted_here():
    assert triton_nf4.AVAILABLE, f"CI must install the triton extra: {triton_nf4.INSTALL}"
    assert triton_nf4.INTERPRETED


# ragged last blocks, odd element counts, a single element, odd blocksizes (a byte straddles two blocks),
# more than one program (BLOCK bytes each), and a multi-dimensional shape
CASES = [((1,), 64), ((7,), 64), ((64,), 64), ((65,), 64), ((3, 37), 64), ((129,), 33), ((5, 7, 11), 32),
         ((2 * triton_nf4.BLOCK + 3,), 64), ((4 * triton_nf4.BLOCK + 1,), 4096), ((4096,), 4096), ((301,), 5),
         ((100,), 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape, blocksize", CASES, ids=[f"{s}-bs{b}" for s, b in CASES])
def test_triton_dequantize_is_bit_exact(shape, blocksize, dtype):
    gen = torch.Generator().manual_seed(hash((shape, blocksize)) % 2**31)
    x = (torch.randn(shape, generator=gen) * 10 ** float(torch.empty(1).uniform_(-3, 3, generator=gen))).to(dtype)
    q = nf4.quantize_nf4(x, blocksize)
    ours = triton_nf4.dequantize_nf4(q)
    assert ours.shape == x.shape and ours.dtype == dtype
    assert torch.equal(ours, nf4.dequantize_nf4(q))


def test_triton_dequantize_with_double_quantized_scales():
    q = nf4.quantize_nf4(torch.randn(64 * 300 + 5), 64)
    absmax = nf4.double_dequantize(nf4.double_quantize(q.absmax))
    assert torch.equal(triton_nf4.dequantize_nf4(q, absmax), nf4.dequantize_nf4(q, absmax))


def test_a_wrong_nibble_order_would_be_caught():
    """The comparison can fail: swapping the two nibbles of every byte (low first) changes the values."""
    q = nf4.quantize_nf4(torch.randn(1000), 64)
    swapped = nf4.NF4Tensor((q.packed << 4) | (q.packed >> 4), q.absmax, q.shape, q.dtype, q.blocksize)
    assert not torch.equal(triton_nf4.dequantize_nf4(swapped), nf4.dequantize_nf4(q))


def test_bad_input_is_named():
    q = nf4.quantize_nf4(torch.randn(100), 64)
    with pytest.raises(TypeError, match="NF4Tensor"):
        triton_nf4.dequantize_nf4(torch.zeros(4))
    with pytest.raises(ValueError, match="absmax"):
        triton_nf4.dequantize_nf4(q, absmax=torch.ones(5))
