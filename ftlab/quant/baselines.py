"""The formats NF4 is measured against, and the tools to measure them: level usage, entropy, optimal levels.

    w_hat = fake_quantize(w, "int4", blocksize=64)     # a round trip through a format: same shape and dtype
    quantize_weights(model, "fp4")                     # every nn.Linear but lm_head rounds through it, in place
    levels, counts = code_usage(w, nf4.NF4_CODE, 64)   # how many weights each level receives
    entropy_bits(counts)                               # 4.0 only when 16 levels are used equally often
    lloyd_max_code(samples)                            # 16 levels that minimise the squared error on `samples`

A round trip (quantize, then dequantize in float32) gives exactly the weights a 4-bit layer computes with,
so a model whose linear weights were replaced by `fake_quantize(w, fmt)` has the outputs of a model that
stores `fmt` (for "nf4-dq" that is `linear4bit.Linear4bit`'s, bit for bit in float32; the tests check it).

Formats (all blockwise, one scale per block of `blocksize` values, except the two float ones):
  fp32, bf16   the weights as they are, and rounded to bfloat16
  nf4          NF4 levels (normal quantiles), absmax scale in float32
  nf4-dq       nf4 with the scales double-quantized (QLoRA's default)
  fp4          bitsandbytes' 4-bit float (1 sign, 2 exponent, 1 mantissa bit), absmax scale
  int4         symmetric integers k/7, k = -7..7: only 15 distinct levels (16 codes, zero twice)
  int4-asym    16 evenly spaced levels from the block's minimum to its maximum (two float32 numbers per
               block): the affine grid of GGUF's Q4_1; GPTQ and AWQ use the same grid with an integer zero point
"""

from __future__ import annotations

import torch
from torch import nn

from ftlab.checks import positive_int
from ftlab.quant import nf4
from ftlab.quant.linear4bit import quantizable_linears

__all__ = ["FORMATS", "bits_per_weight", "fake_quantize", "quantize_weights", "code_usage", "entropy_bits",
           "lloyd_max_code", "distinct_per_block"]

FORMATS = ("fp32", "bf16", "nf4", "nf4-dq", "fp4", "int4", "int4-asym")
_CODES = {"nf4": nf4.NF4_CODE, "fp4": nf4.FP4_CODE, "int4": nf4.int4_code()}


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def bits_per_weight(fmt: str, blocksize: int = 64) -> float:
    """Storage per weight: the code bits plus each block's scales spread over its values."""
    _check_format(fmt)
    blocksize = positive_int("blocksize", blocksize)
    if fmt in ("fp32", "bf16"):
        return {"fp32": 32.0, "bf16": 16.0}[fmt]
    if fmt == "nf4-dq":
        return nf4.bits_per_parameter(blocksize, double_quant=True)
    return 4 + (64 if fmt == "int4-asym" else 32) / blocksize


def _affine_int4(x: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Per block: 16 levels min + k * (max - min) / 15, each value rounded to the nearest (float32)."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    out = torch.empty_like(flat)
    for start, stop in ((0, n // blocksize * blocksize), (n // blocksize * blocksize, n)):
        if stop == start:
            continue
        blocks = flat[start:stop].view(-1, min(blocksize, stop - start))
        low, high = blocks.amin(1, keepdim=True), blocks.amax(1, keepdim=True)
        step = (high - low) / 15
        k = torch.where(step > 0, (blocks - low) / step.clamp(min=torch.finfo(torch.float32).tiny), 0.0)
        out[start:stop] = (low + k.round().clamp(0, 15) * step).reshape(-1)
    return out.reshape(x.shape)


def fake_quantize(x: torch.Tensor, fmt: str, blocksize: int = 64) -> torch.Tensor:
    """`x` stored in `fmt` and read back: what a layer holding `fmt` computes with (same shape and dtype)."""
    _check_format(fmt)
    if not isinstance(x, torch.Tensor) or x.dtype not in nf4.SUPPORTED_DTYPES:
        got = getattr(x, "dtype", type(x).__name__)
        raise ValueError(f"x must be a float32, bfloat16 or float16 tensor, got {got}")
    if fmt == "fp32":
        return x.clone()
    if fmt == "bf16":
        return x.bfloat16().to(x.dtype)
    if fmt == "int4-asym":
        positive_int("blocksize", blocksize)
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or infinity; min/max scaling needs finite values")
        return _affine_int4(x, blocksize).to(x.dtype)
    if fmt == "nf4-dq":
        q = nf4.quantize_nf4(x, blocksize)
        return nf4.dequantize_nf4(q, nf4.double_dequantize(nf4.double_quantize(q.absmax)))
    code = _CODES[fmt]
    return nf4.dequantize_4bit_with_code(nf4.quantize_4bit_with_code(x, code, blocksize), code)


@torch.no_grad()
def quantize_weights(model: nn.Module, fmt: str, blocksize: int = 64,
                     skip: list[str] | tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Round the weight of every nn.Linear (except names matching `skip`) through `fmt`, in place.

    The same layers `linear4bit.quantize_model` replaces; biases, norms and embeddings stay as they are.
    """
    _check_format(fmt)
    for name in quantizable_linears(model, skip):
        layer = model.get_submodule(name)
        layer.weight.copy_(fake_quantize(layer.weight.detach(), fmt, blocksize))
    return model


def code_usage(x: torch.Tensor, code: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels, counts): the distinct levels of `code` in ascending order and how many values of `x` each
    receives under blockwise absmax quantization. Codes that share a level (int4's two zeros, FP4's 0 and
    -0) count as one level; a padding nibble (odd element count) is not counted.
    """
    q = nf4.quantize_4bit_with_code(x, code, blocksize)
    per_code = torch.bincount(nf4.unpack_nibbles(q.packed, q.numel).cpu(), minlength=16)
    levels, level_of_code = code.float().cpu().unique(return_inverse=True)
    return levels, torch.zeros(levels.numel(), dtype=torch.int64).index_add_(0, level_of_code, per_code)


def entropy_bits(counts: torch.Tensor) -> float:
    """Shannon entropy of the level frequencies, in bits: log2(number of levels) when all are equally used."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("counts must be a 1-D tensor of non-negative counts with a positive total")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


def lloyd_max_code(samples: torch.Tensor, n_levels: int = 16, iterations: int = 100) -> torch.Tensor:
    """Levels minimising the mean squared error of nearest-level rounding on `samples` (Lloyd's algorithm).

    Starts from equal-mass levels (the sample quantiles, NF4's idea) and alternates the two conditions of a
    squared-error optimum: each value goes to its nearest level, each level is the mean of its values.
    Every iteration can only lower the error, so the result is at least as good as its (near) equal-mass start.
    """
    n_levels = positive_int("n_levels", n_levels)
    iterations = positive_int("iterations", iterations)
    x = samples.reshape(-1).double()
    if x.numel() < n_levels or not torch.isfinite(x).all():
        raise ValueError(f"samples needs at least {n_levels} finite values, got {x.numel()}")
    probs = (torch.arange(n_levels, dtype=torch.float64) + 0.5) / n_levels
    subsample = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:1 << 20]  # quantile's limit
    levels = torch.quantile(x[subsample], probs)
    for _ in range(iterations):
        cell = torch.bucketize(x, (levels[1:] + levels[:-1]) / 2)
        total = torch.zeros(n_levels, dtype=torch.float64).index_add_(0, cell, x)
        count = torch.bincount(cell, minlength=n_levels).double()
        levels = torch.where(count > 0, total / count.clamp(min=1), levels).sort().values
    return levels.float()


def distinct_per_block(x: torch.Tensor, blocksize: int = 32) -> torch.Tensor:
    """The number of distinct values in each full block of `blocksize` consecutive values (int64)."""
    blocksize = positive_int("blocksize", blocksize)
    flat = x.reshape(-1)
    n_full = flat.numel() // blocksize
    if n_full == 0:
        raise ValueError(f"x has {flat.numel()} values: not one full block of {blocksize}")
    ordered = flat[: n_full * blocksize].view(n_full, blocksize).sort(dim=1).values
    return 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(1)
