"""ftlab.rlhf.grpo: group advantages and losses on hand-computed cases, and one step equal to TRL's GRPOTrainer
and RLOOTrainer on the same completions (compare.trl.group_parity)."""

import copy
import math

import pytest
import torch

from ftlab import compare, data, models
from ftlab.rlhf import grpo, ppo


def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of (1, 0, 0, 1)
    want = torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4)
    adv = grpo.group_advantages(rewards, 4)
    torch.testing.assert_close(adv[:4], want)
    assert adv[4:].abs().max() == 0  # a group of equal rewards teaches nothing
    torch.testing.assert_close(grpo.group_advantages(rewards, 4, "none")[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    batch = grpo.group_advantages(rewards, 4, "batch")
    torch.testing.assert_close(batch[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (rewards.std() + 1e-4))


def test_rloo_advantages_leave_one_out():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0])
    # sample 0: baseline (0 + 0 + 1) / 3; sample 4: baseline (1 + 2 + 2) / 3
    adv = grpo.rloo_advantages(rewards, 4)
    assert adv[0].item() == pytest.approx(1 - 1 / 3) and adv[1].item() == pytest.approx(0 - 2 / 3)
    assert adv[4].item() == pytest.approx(3 - 5 / 3)
    # the same as G / (G - 1) times the centred reward
    centred = rewards.view(2, 4) - rewards.view(2, 4).mean(1, keepdim=True)
    torch.testing.assert_close(adv, (centred * 4 / 3).flatten())


def test_grpo_loss_aggregations_differ_on_unequal_lengths():
    # ratio 1 everywhere, no KL: each token's loss is -A_i.
    # Completion 0 has 1 token (A = +1), completion 1 has 3 (A = -1).
    logps = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]]).bool()
    adv = torch.tensor([1.0, -1.0])
    per_completion, _ = grpo.grpo_loss(logps, logps.detach(), None, adv, mask, epsilon=0.2, beta=0.0)
    per_token, _ = grpo.grpo_loss(logps, logps.detach(), None, adv, mask, epsilon=0.2, beta=0.0, loss_type="dapo")
    assert per_completion.item() == pytest.approx(0.0)  # mean of -1 and +1
    assert per_token.item() == pytest.approx((-1 + 3) / 4)  # the long completion's tokens outweigh the short one's


def test_grpo_loss_clips_and_adds_k3():
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(1.5), math.log(0.5)]], requires_grad=True)  # ratios 1.5 and 0.5: both out of band
    loss, stats = grpo.grpo_loss(new, old, old, torch.tensor([1.0]), torch.ones(1, 2).bool(), epsilon=0.2, beta=0.1)
    # token 0: -min(1.5, 1.2) = -1.2 (clipped, no gradient); token 1: -min(0.5, 0.8) = -0.5 (unclipped)
    # k3 with log(ref/pi) = -log(rho): rho^-1 + log(rho) - 1
    k3 = [1 / 1.5 + math.log(1.5) - 1, 1 / 0.5 + math.log(0.5) - 1]
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.1 * sum(k3)) / 2, abs=1e-6)
    assert stats["clip_ratio/region_mean"].item() == pytest.approx(0.5)  # only the ratio above the band clipped
    loss.backward()
    # d/dlog(rho) of the clipped token: only the KL term's beta * (1 - 1/rho) / 2
    assert new.grad[0, 0].item() == pytest.approx(0.1 * (1 - 1 / 1.5) / 2, abs=1e-6)


def test_rloo_loss_is_sequence_level():
    seq = torch.tensor([-3.0, -5.0], requires_grad=True)
    loss, _ = grpo.rloo_loss(seq, seq.detach(), torch.tensor([2.0, -2.0]), epsilon=0.2)
    loss.backward()
    torch.testing.assert_close(seq.grad, torch.tensor([-1.0, 1.0]))  # d(-mean(rho A))/dlog pi = -A / N


def test_bad_settings_name_the_field():
    for field, value in [("estimator", "ppo"), ("scale_rewards", "std"), ("loss_type", "bnpo"), ("num_generations", 1),
                         ("beta", -0.1), ("epsilon", 0), ("response_length", 0)]:
        with pytest.raises(ValueError, match=field):
            grpo.GRPOConfig(**{field: value})
    with pytest.raises(ValueError, match="G = 3"):
        grpo.group_advantages(torch.zeros(4), 3)


@pytest.fixture(scope="module")
def tiny():
    base, tok = models.load("tiny-llama")
    reward_model, _ = models.load("tiny-llama", task="classification", num_labels=1, seed=1)  # scores vary per text
    rows = data.load("reviews", "train")
    # prompts of one token length: TRL's loss passes no position ids, so left padding would shift its positions
    by_length = {}
    for r in rows:
        by_length.setdefault(len(data.encode_chat(tok, r["prompt"])["input_ids"]), []).append(r["prompt"])
    prompts = max(by_length.values(), key=len)[:2]
    return base, tok, reward_model, prompts


def test_sample_groups_repeats_prompts_and_masks_after_stop(tiny):
    base, tok, reward_model, prompts = tiny
    policy, _ = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)
    cfg = grpo.GRPOConfig(num_generations=3, response_length=6)
    ids = [data.encode_chat(tok, p)["input_ids"] for p in prompts]
    torch.manual_seed(0)
    roll = grpo.sample_groups(policy, reward_model, ids, pad_id=tok.pad_token_id, stop_id=tok.eos_token_id, cfg=cfg)
    assert roll.queries.shape[0] == 6 and all(torch.equal(roll.queries[i], roll.queries[i // 3 * 3]) for i in range(6))
    assert torch.equal(roll.mask, roll.responses != tok.pad_token_id)
    grouped = roll.advantages.view(2, 3)
    assert grouped.sum(1).abs().max() < 1e-5  # standardised within each group


def _with_stops(query_responses, context_length, stop_id, pad_id):
    """End some completions early, so completions differ in length (a random model rarely stops by itself)."""
    out = query_responses.clone()
    for row, at in enumerate([1, 3, 7, 5, 2, 7, 4, 6]):
        if at < out.shape[1] - context_length - 1:
            out[row, context_length + at] = stop_id
            out[row, context_length + at + 1:] = pad_id
    return out


@pytest.mark.parametrize("estimator, loss_type", [("grpo", "grpo"), ("grpo", "dapo"), ("rloo", "grpo")])
def test_one_step_equals_trl(tiny, tmp_path, estimator, loss_type):
    base, tok, reward_model, prompts = tiny
    cfg = grpo.GRPOConfig(estimator=estimator, loss_type=loss_type, num_generations=4, response_length=8, beta=0.05)
    policy, _ = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)
    ids = [data.encode_chat(tok, p)["input_ids"] for p in prompts]
    queries = data.left_pad([q for q in ids for _ in range(cfg.num_generations)], tok.pad_token_id)
    torch.manual_seed(0)
    sampled, _ = ppo.generate(policy, queries, tok.pad_token_id, tok.eos_token_id, cfg)
    query_responses = _with_stops(sampled, queries.shape[1], tok.eos_token_id, tok.pad_token_id)
    trainer = compare.trl.group_trainer(cfg, copy.deepcopy(base), tok, prompts, reward_model,
                                        target_modules=["q_proj", "v_proj"], r=4, alpha=8,
                                        prompts_per_update=len(prompts), updates=1, lr=0.5, output_dir=str(tmp_path),
                                        sgd=True)
    compare.peft.copy_lora_to_peft(policy, trainer.model)
    result = compare.trl.group_parity(cfg, policy, trainer, reward_model, tok, query_responses, lr=0.5)

    # advantages: the same scores through the same arithmetic; log-probs: ours divide the logits by
    # temperature + 1e-7 (ppo's sampler convention), TRL's by the temperature, a relative 1e-7 on logits of order 10
    assert result["tensors"]["advantages"] <= 1e-5
    for name in ("reference log-probs", "old log-probs (summed)"):
        if name in result["tensors"]:
            assert result["tensors"][name] <= 5e-5, name
    ours, theirs = result["loss"]
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert result["moved"] > 1e-3  # the step changed the weights, so equal weights after it mean equal gradients
    # TRL shuffles the batch's rows before the loss and computes the head on a slice of positions (logits_to_keep),
    # so the gradient's last bits differ; at lr 0.5 that was 3e-6 against a step of 2e-2 (grpo-grpo)
    assert result["weights_max_abs"] <= 1e-3 * result["moved"]


def test_grpo_and_dapo_losses_differ_on_the_parity_batch(tiny):
    # the parity above would prove nothing about loss_type if both aggregations gave the same number here
    base, tok, reward_model, prompts = tiny
    policy, _ = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)
    cfg = grpo.GRPOConfig(num_generations=4, response_length=8, beta=0.05)
    ids = [data.encode_chat(tok, p)["input_ids"] for p in prompts]
    queries = data.left_pad([q for q in ids for _ in range(4)], tok.pad_token_id)
    torch.manual_seed(0)
    sampled, _ = ppo.generate(policy, queries, tok.pad_token_id, tok.eos_token_id, cfg)
    qr = _with_stops(sampled, queries.shape[1], tok.eos_token_id, tok.pad_token_id)
    roll = grpo.score_groups(policy, reward_model, queries, qr, pad_id=tok.pad_token_id, stop_id=tok.eos_token_id,
                             cfg=cfg)
    with torch.no_grad():
        a, _ = grpo.group_loss(policy, roll, pad_id=tok.pad_token_id, cfg=cfg)
        b, _ = grpo.group_loss(policy, roll, pad_id=tok.pad_token_id, cfg=grpo.GRPOConfig(**{**cfg.__dict__,
                                                                                             "loss_type": "dapo"}))
    assert abs(a.item() - b.item()) > 1e-4


def test_parity_refuses_prompts_of_different_lengths(tiny, tmp_path):
    base, tok, reward_model, _ = tiny
    rows = data.load("reviews", "train")
    lengths = {}
    for r in rows:
        lengths.setdefault(len(data.encode_chat(tok, r["prompt"])["input_ids"]), r["prompt"])
    prompts = list(lengths.values())[:2]
    cfg = grpo.GRPOConfig(num_generations=2, response_length=4)
    trainer = compare.trl.group_trainer(cfg, copy.deepcopy(base), tok, prompts, reward_model,
                                        target_modules=["q_proj"], r=4, alpha=8, prompts_per_update=2, updates=1,
                                        lr=0.1, output_dir=str(tmp_path), sgd=True)
    with pytest.raises(ValueError, match="one token length"):
        compare.trl.group_parity(cfg, None, trainer, reward_model, tok, torch.zeros(4, 40, dtype=torch.long), lr=0.1)


def test_train_grpo_logs_trl_names_and_decays_lr(tiny):
    base, tok, reward_model, prompts = tiny
    policy, _ = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)
    ids = [data.encode_chat(tok, p)["input_ids"] for p in prompts]
    cfg = grpo.GRPOConfig(num_generations=2, response_length=4)
    history = grpo.train_grpo(policy, reward_model, ids, pad_id=tok.pad_token_id, stop_id=tok.eos_token_id, cfg=cfg,
                              updates=2, prompts_per_update=2, lr=1e-3)
    assert [h["update"] for h in history] == [1, 2] and history[0]["lr"] == 1e-3 and history[1]["lr"] == 5e-4
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "loss", "kl",
                "clip_ratio/region_mean"):
        assert math.isfinite(history[-1][key]), key
    with pytest.raises(ValueError, match="prompts_per_update"):
        grpo.train_grpo(policy, reward_model, ids, pad_id=tok.pad_token_id, stop_id=tok.eos_token_id, cfg=cfg,
                        updates=1, prompts_per_update=3, lr=1e-3)
