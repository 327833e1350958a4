"""ftlab.rlhf.dpo: the loss on hand-computed values, and the same loss as TRL's DPOTrainer on the same batch."""

import math

import pytest
import torch

from ftlab import compare, data, models
from ftlab.rlhf import dpo


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
        dpo.PairCollator(tok)([{"prompt": "a", "chosen": "b"}])


def test_sequence_logprobs_count_only_reply_tokens():
    model, tok = models.load("tiny-llama")
    rows = data.load("preferences", "train", n=2)
    batch = dpo.PairCollator(tok)(rows)
    logps = dpo.sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    row = 0
    ids, labels = batch["input_ids"][row], batch["labels"][row]
    expected = sum(logits[row, t - 1].log_softmax(-1)[ids[t]] for t in range(1, len(ids)) if labels[t] != -100)
    assert logps[row].item() == pytest.approx(expected.item(), abs=1e-4)


def test_loss_equals_trl_dpotrainer(tmp_path):
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    base, tok = models.load("tiny-llama")
    rows = data.load("preferences", "train", n=4)
    conversational = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                       "chosen": [{"role": "assistant", "content": r["chosen"]}],
                       "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", beta=0.1, max_length=None)
    ours, _ = compare.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)  # a non-zero adapter
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=base, args=args, train_dataset=data.as_hf_dataset(conversational),
                         processing_class=tok, peft_config=peft_config)
    compare.copy_lora_to_peft(ours, trainer.model)  # reference = adapter off on both sides
    theirs_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    ours_batch = dpo.PairCollator(tok)(rows)
    assert torch.equal(theirs_batch["input_ids"], ours_batch["input_ids"])
    theirs = trainer.compute_loss(trainer.model, theirs_batch).item()
    out = dpo.dpo_batch_loss(ours, ours_batch, beta=0.1)
    assert abs(theirs - math.log(2)) > 1e-4  # the adapter moved the policy away from the reference
    assert out["loss"].item() == pytest.approx(theirs, abs=1e-6)
