"""ftlab.memory: the training-memory estimate by part (weights, grads, optimizer, activations, constants)."""

import pytest
import torch

from ftlab import memory


def test_estimate_full_adamw_is_16_bytes_per_param():
    for dtype in ("fp32", "bf16"):  # fp32: 4+4+8; mixed: 2 weights + 2 grads + 4 master + 8 moments
        est = memory.estimate_memory(1_000_000, "full", "adamw", dtype, n_layers=0)
        assert est.weights + est.grads + est.optimizer == 16_000_000 and est.activations == 0


def test_estimate_orders_methods_and_options():
    arch = dict(batch=2, seq_len=1024, n_layers=32, hidden=4096, intermediate=11008, vocab_size=32000)
    full = memory.estimate_memory(6.7e9, "full", "adamw", "bf16", **arch)
    eight = memory.estimate_memory(6.7e9, "full", "adamw8bit", "bf16", **arch)
    lora = memory.estimate_memory(6.7e9, "lora", "adamw", "bf16", lora_params=4e7, **arch)
    qlora = memory.estimate_memory(6.7e9, "qlora", "adamw", "bf16", lora_params=4e7, **arch)
    assert full.total > eight.total > lora.total > qlora.total
    assert qlora.weights == pytest.approx(6.7e9 * 0.5 + 4e7 * 4)
    assert 0 < qlora.quant_constants < 0.02 * 6.7e9  # double quant: ~0.127 bits/param
    ckpt = memory.estimate_memory(6.7e9, "lora", "adamw", "bf16", lora_params=4e7, grad_checkpointing=True, **arch)
    assert ckpt.activations < lora.activations / 5
    double = memory.estimate_memory(6.7e9, "lora", "adamw", "bf16", lora_params=4e7, **{**arch, "batch": 4})
    assert double.activations == pytest.approx(2 * lora.activations)
    with pytest.raises(ValueError):
        memory.estimate_memory(1e6, "prefix")


def test_estimate_qlora_keeps_unquantized_params_in_dtype():
    kept = 2.6e8  # embeddings + lm_head of a 7B Llama stay in bf16 under QLoRA
    all_nf4 = memory.estimate_memory(6.7e9, "qlora", "adamw", "bf16", lora_params=4e7)
    mixed = memory.estimate_memory(6.7e9, "qlora", "adamw", "bf16", lora_params=4e7, n_unquantized=kept)
    assert mixed.weights - all_nf4.weights == pytest.approx(kept * (2 - 0.5))
    assert mixed.quant_constants < all_nf4.quant_constants
    with pytest.raises(ValueError, match="n_unquantized"):
        memory.estimate_memory(6.7e9, "lora", lora_params=4e7, n_unquantized=kept)
    with pytest.raises(ValueError, match="n_unquantized"):
        memory.estimate_memory(1e6, "qlora", n_unquantized=2e6)


def test_timeline_follows_allocations_and_frees():
    mib = 2**20
    with memory.Timeline("cpu") as tl:
        a = torch.ones(4 * mib // 4)  # 4 MiB of float32
        b = torch.ones(2 * mib // 4)
        del a
        c = torch.ones(mib // 4)
        del b, c
    assert tl.seconds == sorted(tl.seconds) and len(tl.seconds) == len(tl.bytes) >= 6
    assert tl.peak_bytes == pytest.approx(6 * mib, rel=0.01)  # a and b at once, before c
    assert tl.bytes[-1] == pytest.approx(0, abs=0.01 * mib)  # everything freed by the end
    with pytest.raises(ValueError, match="cpu and cuda"):
        memory.Timeline("mps")
