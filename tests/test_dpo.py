"""ftlab.rlhf.dpo: the loss on hand-computed values, the same loss as TRL's DPOTrainer on the same batch, and
training through ftlab.train with TRL's logged numbers."""

import math

import pytest
import torch

from ftlab import compare, data, losses, models, train
from ftlab.rlhf import dpo
from ftlab.tuners import lora


def test_loss_is_log_two_when_policy_equals_reference():
    logps = torch.tensor([-10.0, -3.0])
    losses, chosen, rejected = dpo.dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.1)
    torch.testing.assert_close(losses, torch.full((2,), math.log(2)))
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0


def test_loss_hand_computed():
    # log-ratios: chosen -10 - (-11) = 1, rejected -15 - (-14) = -1; margin 0.1 * 2 = 0.2
    losses, chosen, rejected = dpo.dpo_loss(torch.tensor([-10.0]), torch.tensor([-15.0]), torch.tensor([-11.0]),
                                            torch.tensor([-14.0]), beta=0.1)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.1)


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta"):
        dpo.dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0)


def test_collator_rejects_rows_without_pairs():
    _, tok = models.load("tiny-llama")
    with pytest.raises(ValueError, match="rejected"):
        dpo.StackedPairCollator(tok)([{"prompt": "a", "chosen": "b"}])


def test_sequence_logprobs_count_only_reply_tokens():
    model, tok = models.load("tiny-llama")
    rows = data.load("preferences", "train", n=2)
    batch = dpo.StackedPairCollator(tok)(rows)
    logps = dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["reply_labels"])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    row = 0
    ids, labels = batch["input_ids"][row], batch["reply_labels"][row]
    expected = sum(logits[row, t - 1].log_softmax(-1)[ids[t]] for t in range(1, len(ids)) if labels[t] != -100)
    assert logps[row].item() == pytest.approx(expected.item(), abs=1e-4)


def test_loss_equals_trl_dpotrainer(tmp_path):
    base, tok = models.load("tiny-llama")
    rows = data.load("preferences", "train", n=4)
    ours, _ = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)  # a non-zero adapter
    trainer = compare.trl.dpo_trainer(base, tok, rows, target_modules=["q_proj", "v_proj"], r=4, alpha=8, beta=0.1,
                                      output_dir=str(tmp_path))
    compare.peft.copy_lora_to_peft(ours, trainer.model)  # reference = adapter off on both sides
    result = compare.trl.dpo_parity(ours, trainer, rows, beta=0.1)
    assert abs(result["trl"] - math.log(2)) > 1e-4  # the adapter moved the policy away from the reference
    assert result["loss_abs"] <= 1e-6


def test_collator_counts_pairs_for_train():
    _, tok = models.load("tiny-llama")
    batch = dpo.StackedPairCollator(tok)(data.load("preferences", "train", n=3))
    assert batch["input_ids"].shape[0] == batch["reply_labels"].shape[0] == 6  # chosen rows, then rejected rows
    assert losses.count_targets(batch["labels"]) == 3  # ftlab.train divides the summed loss by the pairs


@pytest.fixture
def policy():
    model, tok = models.load("tiny-llama")
    return lora.add_lora(model, ["q_proj", "v_proj"], r=4, alpha=8), tok


def test_train_logs_trl_numbers_and_starts_at_log_two(policy):
    model, tok = policy
    rows = data.load("preferences", "train", n=6)
    cfg = train.TrainConfig(steps=3, batch_size=4, micro_batch_size=3, lr=5e-3, progress=False)
    history = train.train(model, rows, cfg, collate=dpo.StackedPairCollator(tok), loss_fn=dpo.dpo_loss_fn(0.1))
    names = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
             "logps/rejected"]
    assert all(len(history[name]) == 3 for name in names)
    # step 1: a fresh adapter makes the policy its own reference, so every pair's loss is log 2; the micro-batches
    # hold 3 + 1 pairs, and only a mean over pairs (not tokens, not micro-batches) gives log 2 again
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-6)
    assert history["rewards/margins"][0] == 0 and history["rewards/accuracies"][0] == 0
    assert history["loss"][-1] < math.log(2) and history["rewards/margins"][-1] > 0  # it learned the pairs


def test_logged_numbers_are_the_batch_means(policy):
    model, tok = policy
    rows = data.load("preferences", "train", n=5)
    collate = dpo.StackedPairCollator(tok)
    with torch.no_grad():  # a moved adapter, so the numbers are not all 0 or log 2
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    moved = lora.lora_state_dict(model)
    first = [rows[i] for i in train.batch_indices(0, 5, len(rows))]
    with torch.no_grad():
        want = {k: float(v) / len(first) for k, v in dpo.summed_dpo_loss(model, collate(first), 0.1).items()}
    assert 0 < want["rewards/accuracies"] < 1 and want["loss"] != pytest.approx(math.log(2))
    for micro in (None, 2):  # one micro-batch, and 2 + 2 + 1 pairs
        lora.load_lora_state_dict(model, moved)
        cfg = train.TrainConfig(steps=1, batch_size=5, micro_batch_size=micro, lr=1e-3, progress=False)
        history = train.train(model, rows, cfg, collate=collate, loss_fn=dpo.dpo_loss_fn(0.1))
        assert {k: history[k][0] for k in want} == pytest.approx(want, rel=1e-5, abs=1e-6), micro


def test_ipo_and_simpo_hand_computed():
    # IPO: log-ratios 2 (chosen, 4 tokens) and -1 (rejected, 2 tokens): h = 2/4 + 1/2 = 1; target 1/(2 * 0.25) = 2
    losses, _, _ = dpo.ipo_loss(torch.tensor([-8.0]), torch.tensor([-7.0]), torch.tensor([-10.0]), torch.tensor([-6.0]),
                                torch.tensor([4]), torch.tensor([2]), tau=0.25)
    assert losses.item() == pytest.approx((1 - 2) ** 2)
    # SimPO: beta 2, mean log-probs -8/4 and -6/2: rewards -4 and -6, margin 0.5: -log sigma(2 - 0.5)
    losses, chosen, rejected = dpo.simpo_loss(torch.tensor([-8.0]), torch.tensor([-6.0]), torch.tensor([4]),
                                              torch.tensor([2]), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((-4.0, -6.0))
    with pytest.raises(ValueError, match="loss_type"):
        dpo.dpo_loss_fn(0.1, loss_type="kto")


def test_ipo_equals_trl_dpotrainer(tmp_path):
    base, tok = models.load("tiny-llama")
    rows = data.load("preferences", "train", n=4)
    ours, _ = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)
    trainer = compare.trl.dpo_trainer(base, tok, rows, target_modules=["q_proj", "v_proj"], r=4, alpha=8, beta=0.1,
                                      output_dir=str(tmp_path), loss_type="ipo")
    compare.peft.copy_lora_to_peft(ours, trainer.model)
    result = compare.trl.dpo_parity(ours, trainer, rows, beta=0.1, loss_type="ipo")
    assert result["loss_abs"] <= 1e-5 * max(1.0, result["trl"])
    with pytest.raises(ValueError, match="ipo"):  # asking for DPO's loss from an IPO trainer is refused
        compare.trl.dpo_parity(ours, trainer, rows, beta=0.1)


def test_simpo_equals_trl_cpo_loss():
    base, tok = models.load("tiny-llama")
    rows = data.load("preferences", "train", n=4)
    ours, _ = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)
    result = compare.trl.simpo_parity(ours, tok, rows, beta=2.0, gamma=0.5)
    assert result["loss_abs"] <= 1e-6
    assert abs(result["trl"] - math.log(2)) > 1e-3  # not the trivial value of equal rewards and no margin
