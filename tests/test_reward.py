"""ftlab.rlhf.reward: the Bradley-Terry loss, the last-real-token head, and exchange with transformers / TRL."""

import math

import pytest
import torch

from ftlab import data, models
from ftlab.losses import count_targets
from ftlab.rlhf.reward import (
    RewardModel,
    RewardPairCollator,
    bradley_terry_loss,
    last_token_index,
    pairwise_accuracy,
    pairwise_loss,
    pairwise_rewards,
    score_pairs,
)
from ftlab.train import TrainConfig, train


@pytest.fixture(scope="module")
def rm():
    return RewardModel.from_pretrained("tiny-llama", seed=0, device="cpu")


@pytest.fixture(scope="module")
def rows():
    return data.load("preferences", "train", n=6)


def test_bt_loss_hand_computed():
    r_c, r_r = torch.tensor([1.5, 0.0, -1.0]), torch.tensor([0.5, 0.0, 1.0])
    # -log sigma(d) = log(1 + e^-d) for d = 1, 0, -2
    want = [math.log1p(math.exp(-1)), math.log(2), math.log1p(math.exp(2))]
    torch.testing.assert_close(bradley_terry_loss(r_c, r_r, reduction="none"), torch.tensor(want))
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(sum(want) / 3, rel=1e-6)
    assert bradley_terry_loss(r_c, r_r, reduction="sum").item() == pytest.approx(sum(want), rel=1e-6)
    # a margin m shifts the difference: d = 1 - 1 = 0 -> log 2
    assert bradley_terry_loss(r_c[:1], r_r[:1], margin=1.0).item() == pytest.approx(math.log(2), rel=1e-6)


def test_bt_loss_is_shift_invariant_and_stable():
    r_c, r_r = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(bradley_terry_loss(r_c + 10, r_r + 10), bradley_terry_loss(r_c, r_r))
    big = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert torch.isfinite(big) and big.item() == pytest.approx(400.0)


def test_bt_loss_bad_input_is_named():
    with pytest.raises(ValueError, match="r_rejected"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="reduction"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), reduction="max")


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy(torch.tensor([2.0, 1.0, 0.0, 5.0]), torch.tensor([1.0, 1.0, 3.0, 4.0])) == 0.5
    with pytest.raises(ValueError, match="r_chosen"):
        pairwise_accuracy(torch.zeros(0), torch.zeros(0))


def test_last_token_index_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(left).tolist() == [4, 4]
    with pytest.raises(ValueError, match="no real tokens"):
        last_token_index(torch.tensor([[0, 0]]))


def test_reward_reads_last_real_token_whatever_the_padding(rm):
    tok = rm.tokenizer
    ids = data.encode_chat(tok, "Add 2 and 3.", "It is 5.")["input_ids"]
    alone = rm(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    padded = torch.tensor([ids + [tok.pad_token_id] * 7])
    mask = torch.tensor([[1] * len(ids) + [0] * 7])
    torch.testing.assert_close(rm(padded, mask), alone, rtol=1e-5, atol=1e-6)
    # the state the head reads is that of the last real token ("\n" after <|im_end|>), not a pad
    hidden = rm.body(input_ids=padded, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(rm(padded, mask), rm.head(hidden[:, len(ids) - 1]).squeeze(-1))
    assert not torch.allclose(rm(padded, mask), rm.head(hidden[:, -1]).squeeze(-1))


def test_to_hf_from_hf_bit_exact(rm, rows):
    from transformers import LlamaForSequenceClassification

    hf = rm.to_hf()
    assert isinstance(hf, LlamaForSequenceClassification) and hf.config.num_labels == 1
    batch = RewardPairCollator(rm.tokenizer)(rows)
    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    ours = rm(ids, mask)
    theirs = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()
    back = RewardModel.from_hf(hf, rm.tokenizer)
    assert torch.equal(back(ids, mask), ours)
    with pytest.raises(ValueError, match="num_labels"):
        RewardModel.from_hf(models.load("tiny-llama", task="classification", num_labels=2)[0], rm.tokenizer)


def test_to_hf_is_a_copy(rm):
    hf = rm.to_hf()
    with torch.no_grad():
        hf.score.weight.add_(1.0)
    assert not torch.equal(hf.score.weight, rm.head.weight)


def test_save_load_round_trip(rm, rows, tmp_path):
    rm.save(tmp_path / "rm")
    back = RewardModel.load(tmp_path / "rm")
    prompts, replies = [r["prompt"] for r in rows], [r["chosen"] for r in rows]
    assert torch.equal(back.score(prompts, replies), rm.score(prompts, replies))


def test_load_errors_name_the_problem(rm, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        RewardModel.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="reward_model.json"):
        RewardModel.load(tmp_path / "empty")
    rm.save(tmp_path / "rm")
    cfg = (tmp_path / "rm" / "config.json")
    cfg.write_text(cfg.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    with pytest.raises(ValueError, match="does not match"):
        RewardModel.load(tmp_path / "rm")


def test_score_batches_agree(rm, rows):
    prompts, replies = [r["prompt"] for r in rows], [r["rejected"] for r in rows]
    torch.testing.assert_close(rm.score(prompts, replies, batch_size=1), rm.score(prompts, replies, batch_size=4),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="responses"):
        rm.score(prompts, replies[:2])


def test_pair_collator_matches_encode_chat(rm, rows):
    tok = rm.tokenizer
    batch = RewardPairCollator(tok, max_length=48)(rows)
    assert count_targets(batch["labels"]) == len(rows)
    for i, r in enumerate(rows):
        for side in ("chosen", "rejected"):
            want = data.encode_chat(tok, r["prompt"], r[side], 48)["input_ids"]
            n = int(batch[f"{side}_attention_mask"][i].sum())
            assert batch[f"{side}_input_ids"][i, :n].tolist() == want
    with pytest.raises(ValueError, match=r"row 0 lacks \[.rejected.\]"):
        RewardPairCollator(tok)([{"prompt": "a", "chosen": "b"}])


def test_pairwise_loss_sums_and_uses_margin(rm, rows):
    collate = RewardPairCollator(rm.tokenizer)
    batch = collate(rows)
    r_c, r_r = pairwise_rewards(rm, batch)
    torch.testing.assert_close(pairwise_loss(rm, batch), bradley_terry_loss(r_c, r_r, reduction="sum"))
    with_margin = collate([{**r, "margin": 0.5} for r in rows])
    torch.testing.assert_close(pairwise_loss(rm, with_margin),
                               bradley_terry_loss(r_c, r_r, margin=0.5, reduction="sum"))


def test_bt_loss_equals_trl_on_the_same_batch(rm, rows, tmp_path):
    """TRL's RewardTrainer.compute_loss on its own tokenization of the conversational dataset = ours."""
    from trl import RewardConfig, RewardTrainer

    tok = rm.tokenizer
    conv = data.as_hf_dataset([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    args = RewardConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                        activation_checkpointing=False, max_length=None, per_device_train_batch_size=len(rows))
    trainer = RewardTrainer(model=rm.to_hf(), args=args, train_dataset=conv, processing_class=tok)
    for r, ex in zip(rows, trainer.train_dataset):  # same tokens as encode_chat, chosen and rejected
        assert ex["chosen_ids"] == data.encode_chat(tok, r["prompt"], r["chosen"])["input_ids"]
        assert ex["rejected_ids"] == data.encode_chat(tok, r["prompt"], r["rejected"])["input_ids"]
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    ours_batch = RewardPairCollator(tok)(rows)
    theirs = trainer.compute_loss(trainer.model, dict(trl_batch))
    ours = pairwise_loss(rm, ours_batch) / len(rows)
    # same weights, same tokens, same padding: the only difference is sum/n versus mean -> last-bit rounding
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)


def test_train_loop_learns_pairs(rows):
    rm = RewardModel.from_pretrained("tiny-llama", seed=1, device="cpu")
    cfg = TrainConfig(steps=8, batch_size=6, micro_batch_size=3, lr=3e-3, progress=False)
    history = train(rm, rows, cfg, collate=RewardPairCollator(rm.tokenizer, 96), loss_fn=pairwise_loss)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=0.05)  # near-zero head: a coin flip at first
    assert history["loss"][-1] < history["loss"][0] - 0.1
    r_c, r_r = score_pairs(rm, rows)
    assert pairwise_accuracy(r_c, r_r) > 0.5


def test_score_keeps_input_order(rm, rows):
    prompts = [r["prompt"] for r in rows]
    replies = [r["chosen"] if i % 2 else r["rejected"] for i, r in enumerate(rows)]
    forward = rm.score(prompts, replies, batch_size=2)
    backward = rm.score(prompts[::-1], replies[::-1], batch_size=2)
    torch.testing.assert_close(backward, forward.flip(0), rtol=1e-5, atol=1e-6)
    alone = torch.cat([rm.score([p], [r]) for p, r in zip(prompts, replies)])
    torch.testing.assert_close(forward, alone, rtol=1e-5, atol=1e-6)


def test_score_pairs_keeps_row_order(rm, rows):
    r_c, r_r = score_pairs(rm, rows, batch_size=2)
    torch.testing.assert_close(r_c, rm.score([r["prompt"] for r in rows], [r["chosen"] for r in rows]).cpu(),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r_r, rm.score([r["prompt"] for r in rows], [r["rejected"] for r in rows]).cpu(),
                               rtol=1e-5, atol=1e-6)


def test_train_top_freezes_the_rest():
    model = RewardModel.from_pretrained("tiny-llama", seed=0, device="cpu")
    n = model.train_top(1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("body.layers.1.", "body.norm.", "head.")) for name in trainable)
    assert n == sum(p.numel() for name, p in model.named_parameters() if name in trainable)
    with pytest.raises(ValueError, match="n_blocks"):
        model.train_top(3)
