"""Packing (ftlab.sft.pack): boundaries, positions, and no attention across examples."""

import pytest
import torch

from ftlab import data, losses, models, sft
from ftlab.losses import IGNORE_INDEX


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny-llama")


@pytest.fixture(scope="module")
def features(tiny):
    tok = tiny[1]
    return [data.encode_chat(tok, r["prompt"], r["response"]) for r in data.load("instructions", "train", n=9)]


def test_worked_example():
    feats = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]},
             {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9]}]
    rows = sft.pack(feats, seq_len=5)
    assert rows == [
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, -100, 5], "position_ids": [0, 1, 2, 0, 1]},
        {"input_ids": [6, 7, 8, 9], "labels": [-100, 7, 8, 9], "position_ids": [0, 1, 2, 3]},  # first label dropped
    ]


def test_boundaries_and_lengths(features):
    seq_len = 128
    rows = sft.pack(features, seq_len)
    assert all(len(r["input_ids"]) <= seq_len for r in rows)
    assert len(rows) < len(features)  # several examples share a row
    # every token kept, in order; each example starts at position 0 and is not a target there
    assert sum((r["input_ids"] for r in rows), []) == sum((f["input_ids"] for f in features), [])
    starts = [i for r in rows for i, p in enumerate(r["position_ids"]) if p == 0]
    assert len(starts) == len(features)
    for r in rows:
        for i, p in enumerate(r["position_ids"]):
            assert p == 0 or r["position_ids"][i - 1] == p - 1
            if p == 0:
                assert r["labels"][i] == IGNORE_INDEX


def test_long_example_is_cut_and_bad_seq_len_named():
    rows = sft.pack([{"input_ids": list(range(10))}, {"input_ids": [1, 2]}], seq_len=4)
    assert [r["input_ids"] for r in rows] == [[0, 1, 2, 3], [1, 2]]
    with pytest.raises(ValueError, match="seq_len"):
        sft.pack([{"input_ids": [1]}], seq_len=0)


def test_block_causal_mask():
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    assert sft.segment_ids(pos).tolist() == [[0, 0, 0, 1, 1]]
    mask = sft.block_causal_mask(pos)[0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(tiny, features, attn):
    model, tok = tiny
    model.set_attn_implementation(attn)
    try:
        rows = sft.pack(features, 128)
        batch = sft.pad_packed(rows, tok.pad_token_id)
        with torch.no_grad():
            packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
            alone = iter([model(input_ids=torch.tensor([f["input_ids"]])).logits[0] for f in features])
        for i, row in enumerate(rows):
            starts = [t for t, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
            for a, b in zip(starts, starts[1:]):
                # fp32; the packed run multiplies longer matrices, so sums are reordered: 1e-5 absolute
                torch.testing.assert_close(packed[i, a:b], next(alone), atol=1e-5, rtol=1e-5)
        assert next(alone, None) is None  # every example compared
    finally:
        model.set_attn_implementation("sdpa")


def test_cache_default_leaks_across_examples(tiny, features):
    """The trap packed_loss avoids: with the default use_cache, the boundaries are ignored."""
    model, tok = tiny
    batch = sft.pad_packed(sft.pack(features[:2], 256), tok.pad_token_id)
    n0 = len(features[0]["input_ids"])
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, n0:]
        alone = model(input_ids=torch.tensor([features[1]["input_ids"]])).logits[0]
    assert (leaky - alone).abs().max() > 1e-3


def test_packed_loss_equals_padded_loss(tiny):
    model, tok = tiny
    rows = data.load("instructions", "train", n=8)
    padded = data.ChatCollator(tok, 128)(rows)
    packed = sft.PackedChatCollator(tok, 128)(rows)
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert losses.count_targets(packed["labels"]) == losses.count_targets(padded["labels"])
    with torch.no_grad():
        a = losses.summed_loss(model, padded)
        b = sft.packed_loss(model, packed)
    torch.testing.assert_close(b, a, atol=0, rtol=1e-5)


def test_training_on_packed_batches_follows_the_padded_run(tiny):
    """Same rows, same targets, token-weighted: the loop's losses match whether batches are padded or packed."""
    import copy

    from ftlab import train
    model, tok = tiny
    rows = data.load("instructions", "train", n=16)
    cfg = train.TrainConfig(steps=3, batch_size=8, micro_batch_size=4, lr=1e-3, progress=False)
    padded = train.train(copy.deepcopy(model), rows, cfg, collate=data.ChatCollator(tok, 128))
    packed = train.train(copy.deepcopy(model), rows, cfg, collate=sft.PackedChatCollator(tok, 128),
                         loss_fn=sft.packed_loss)
    # fp32; only summation order differs (longer rows), and it compounds over three AdamW steps
    torch.testing.assert_close(torch.tensor(packed["loss"]), torch.tensor(padded["loss"]), atol=0, rtol=1e-5)
