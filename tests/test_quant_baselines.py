"""The comparison formats (ftlab.quant.baselines): FP4 against bitsandbytes, int4 grids, usage, Lloyd-Max."""

from __future__ import annotations

import copy
import math

import bitsandbytes.functional as bnbF
import pytest
import torch
from torch import nn

from ftlab import models
from ftlab.quant import baselines, linear4bit, nf4


@pytest.mark.parametrize("blocksize", (32, 64, 256))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_fp4_round_trip_is_bitsandbytes_fp4(blocksize, dtype):
    x = (torch.randn(37, 129, generator=torch.Generator().manual_seed(blocksize)) * 0.05).to(dtype)
    packed, state = bnbF.quantize_4bit(x, blocksize=blocksize, quant_type="fp4")
    state.shape = torch.Size([x.numel()])  # bitsandbytes' CPU 2-D dequantize is wrong for ragged rows
    theirs = bnbF.dequantize_4bit(packed, state).reshape(x.shape)
    assert torch.equal(baselines.fake_quantize(x, "fp4", blocksize), theirs)


@pytest.mark.parametrize("double_quant", (False, True))
def test_nf4_round_trip_is_what_linear4bit_computes_with(double_quant):
    torch.manual_seed(0)
    base = nn.Linear(192, 130)  # 130 * 192 weights: the scales fill one 256-block and part of another
    layer = linear4bit.Linear4bit(base, 64, double_quant, torch.float32)
    fmt = "nf4-dq" if double_quant else "nf4"
    assert torch.equal(baselines.fake_quantize(base.weight.detach(), fmt), layer.dequantized_weight(torch.float32))


def test_quantized_weights_give_the_4bit_model_outputs_exactly():
    model, _ = models.load("tiny-llama")
    four_bit = linear4bit.quantize_model(copy.deepcopy(model), compute_dtype=torch.float32)
    fake = baselines.quantize_weights(copy.deepcopy(model), "nf4-dq")
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fake(input_ids=ids).logits, four_bit(input_ids=ids).logits)
        assert not torch.equal(fake(input_ids=ids).logits, model(input_ids=ids).logits)
    assert torch.equal(fake.lm_head.weight, model.lm_head.weight)  # skipped, as in QLoRA


def test_int4_has_fifteen_levels_and_the_affine_grid_sixteen():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    assert baselines.fake_quantize(x, "int4", 4096).unique().numel() <= 15
    asym = baselines.fake_quantize(x, "int4-asym", 4096)
    assert asym.unique().numel() == 16
    assert asym.min() == x.min() and asym.max() == x.max()  # the block's ends are levels


def test_affine_int4_error_is_at_most_half_a_step_and_reproduces_its_own_grid():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, generator=g)  # ragged last block of 1000 - 15 * 64 = 40
    y = baselines.fake_quantize(x, "int4-asym", 64)
    for start in range(0, 1000, 64):
        block, rounded = x[start:start + 64], y[start:start + 64]
        step = (block.max() - block.min()) / 15
        assert (rounded - block).abs().max() <= step / 2 * (1 + 1e-5)
    # weights already on a Q4_1-style grid come back unchanged (up to float32 rounding)
    low, step = torch.randn(16, 1, generator=g), torch.rand(16, 1, generator=g) + 0.1
    k = torch.randint(0, 16, (16, 32), generator=g)
    k[:, 0], k[:, 1] = 0, 15
    grid = (low + k * step).reshape(-1)
    assert torch.allclose(baselines.fake_quantize(grid, "int4-asym", 32), grid, rtol=0, atol=1e-5)
    assert baselines.distinct_per_block(grid, 32).max() <= 16


def test_constant_block_and_dtype_survive_the_affine_grid():
    x = torch.full((64,), 0.25, dtype=torch.bfloat16)
    y = baselines.fake_quantize(x, "int4-asym", 64)
    assert y.dtype == torch.bfloat16 and torch.equal(y, x)


def test_bits_per_weight():
    assert baselines.bits_per_weight("nf4", 64) == 4.5
    assert baselines.bits_per_weight("int4-asym", 64) == 5.0  # a minimum and a step per block
    assert math.isclose(baselines.bits_per_weight("nf4-dq", 64), nf4.bits_per_parameter(64, double_quant=True))
    assert baselines.bits_per_weight("bf16") == 16


def test_code_usage_counts_every_value_per_level_and_entropy_peaks_at_equal_use():
    x = torch.randn(64 * 50 + 3, generator=torch.Generator().manual_seed(2))
    levels, counts = baselines.code_usage(x, nf4.NF4_CODE, 64)
    assert torch.equal(levels, nf4.NF4_CODE) and counts.sum() == x.numel()
    # absmax scaling puts each block's largest magnitude on +-1 exactly: one of the two ends per block
    assert counts[0] + counts[15] >= 50
    levels, counts = baselines.code_usage(x, nf4.int4_code(), 64)  # the two zero codes are one level
    assert levels.numel() == 15 and counts.sum() == x.numel()
    assert baselines.code_usage(x, nf4.fp4_code(), 64)[0].numel() == 15  # 0 and -0
    assert baselines.entropy_bits(torch.ones(16)) == 4.0
    assert baselines.entropy_bits(counts) < math.log2(15)
    assert baselines.entropy_bits(torch.tensor([5, 0, 5])) == 1.0


def test_lloyd_max_beats_equal_mass_levels_on_squared_error():
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(3))
    quantile_levels = torch.quantile(x, (torch.arange(16) + 0.5) / 16)
    lloyd = baselines.lloyd_max_code(x, 16)

    def mse(levels):
        idx = torch.bucketize(x, (levels[1:] + levels[:-1]) / 2)
        return (levels[idx] - x).pow(2).mean().item()

    assert mse(lloyd) < 0.9 * mse(quantile_levels)
    # ...and the lower error comes with less even use (lower entropy): equal use is not minimum error
    def use(levels):
        return torch.bincount(torch.bucketize(x, (levels[1:] + levels[:-1]) / 2), minlength=16)

    assert baselines.entropy_bits(use(lloyd)) < baselines.entropy_bits(use(quantile_levels))
    # on uniform data the squared-error optimum is evenly spaced cell centres
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(baselines.lloyd_max_code(u, 4), torch.tensor([0.125, 0.375, 0.625, 0.875]), atol=5e-3)


def test_distinct_per_block_counts_repeats():
    x = torch.tensor([1.0, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0, 9.0])
    assert baselines.distinct_per_block(x, 4).tolist() == [3, 1]
    with pytest.raises(ValueError, match="full block"):
        baselines.distinct_per_block(torch.ones(3), 4)


@pytest.mark.parametrize("call, match", [
    (lambda: baselines.fake_quantize(torch.ones(8), "int3"), "format 'int3'"),
    (lambda: baselines.fake_quantize(torch.ones(8, dtype=torch.int64), "nf4"), "float32"),
    (lambda: baselines.fake_quantize(torch.ones(8), "int4-asym", 0), "blocksize"),
    (lambda: baselines.fake_quantize(torch.tensor([1.0, float("nan")]), "int4-asym"), "NaN"),
    (lambda: baselines.quantize_weights(nn.Sequential(nn.ReLU()), "nf4"), "no nn.Linear"),
    (lambda: baselines.quantize_weights(nn.Linear(4, 4), "nf4", skip="lm_head"), "skip"),
    (lambda: baselines.entropy_bits(torch.zeros(4)), "positive total"),
    (lambda: baselines.lloyd_max_code(torch.ones(3), 16), "at least 16"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
