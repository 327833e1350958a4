"""ftlab.rlhf.frontier and the diagnostics it reads: explained variance by hand, the held-out KL (0 exactly for
the reference itself, the hand sum of log-ratios otherwise), the gold hook on PPO rollouts, and a tiny sweep."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab import data, models, runtime, train
from ftlab.rlhf import frontier, judge, ppo
from ftlab.tuners import lora

ROOT = Path(__file__).resolve().parents[1]


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])  # the last position is padding: left out
    assert ppo.explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)
    assert ppo.explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0)
    assert ppo.explained_variance(returns - 1, returns, mask) == pytest.approx(1.0)  # constant offset: no spread
    # values anti-correlated with returns: error (-2, 0, 2), Var 8/3 against 2/3 -> 1 - 4 = -3
    assert ppo.explained_variance(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), returns, mask) == pytest.approx(-3.0)
    assert math.isnan(ppo.explained_variance(returns, torch.ones_like(returns), mask))  # nothing to explain


@pytest.fixture(scope="module")
def task():
    base, tok = models.load("tiny-llama")
    tok.padding_side = "left"
    proxy, _ = models.load("tiny-llama", task="classification", num_labels=1, seed=1)
    value = copy.deepcopy(proxy).requires_grad_(False)
    value.score.requires_grad_(True)
    torch.manual_seed(0)
    policy = lora.add_lora(base, ["q_proj", "v_proj"], r=4, alpha=8)
    rows = data.load("reviews", "train", n=8)
    prompts = [data.encode_chat(tok, r["prompt"])["input_ids"] for r in rows]
    return dict(policy=policy, tok=tok, proxy=proxy, value=value, rows=rows, prompts=prompts,
                fresh=lora.lora_state_dict(policy), judge=judge.SentimentJudge.fit(),
                cfg=ppo.PPOConfig(response_length=6, num_ppo_epochs=1, num_mini_batches=2))


def test_evaluate_kl_is_zero_for_the_reference_and_the_log_ratio_sum_otherwise(task):
    policy, tok, cfg = task["policy"], task["tok"], task["cfg"]
    lora.load_lora_state_dict(policy, task["fresh"])
    at_start = frontier.evaluate(policy, task["proxy"], task["judge"], tok, task["prompts"], cfg)
    assert at_start["kl"] == 0  # adapter B = 0: the policy is the reference, bit for bit
    assert at_start["gold_each"].shape == (len(task["prompts"]),)
    torch.testing.assert_close(task["judge"].positive(at_start["texts"]), at_start["gold_each"])
    with torch.no_grad():
        for layer in lora.lora_layers(policy).values():
            layer.lora_B.weight.normal_(std=0.5)
    state = torch.random.get_rng_state()
    moved = frontier.evaluate(policy, task["proxy"], task["judge"], tok, task["prompts"], cfg, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's stream is untouched
    assert moved["kl"] != 0
    again = frontier.evaluate(policy, task["proxy"], task["judge"], tok, task["prompts"], cfg, seed=3)
    assert again["texts"] == moved["texts"] and again["kl"] == moved["kl"]  # a fixed seed: the same samples
    lora.load_lora_state_dict(policy, task["fresh"])


def test_train_ppo_logs_gold_samples_and_seconds(task):
    policy, tok = task["policy"], task["tok"]
    lora.load_lora_state_dict(policy, task["fresh"])
    seen = []

    class Gold(frontier.RolloutGold):
        def __call__(self, roll):
            out = super().__call__(roll)
            finished = ppo.truncate_after_stop(roll.responses, tok.eos_token_id, tok.pad_token_id)
            seen.append(self.judge.positive(frontier.response_texts(tok, finished, tok.pad_token_id)).mean().item())
            return out

    history = ppo.train_ppo(policy, copy.deepcopy(task["value"]), task["proxy"], task["prompts"],
                            pad_id=tok.pad_token_id, stop_id=tok.eos_token_id, cfg=task["cfg"], updates=2,
                            batch_size=4, lr=1e-3, on_rollout=Gold(task["judge"], tok))
    assert [h["samples"] for h in history] == [4, 8]
    assert 0 < history[0]["seconds"] < history[1]["seconds"]
    assert [h["gold"] for h in history] == seen
    assert all(h["val/explained_variance"] <= 1 for h in history)
    lora.load_lora_state_dict(policy, task["fresh"])


def test_sweep_records_every_run_from_the_same_start(task):
    policy, tok = task["policy"], task["tok"]
    dpo_cfg = train.TrainConfig(steps=3, batch_size=2, lr=1e-3, progress=False)
    records = frontier.sweep(policy, task["value"], task["proxy"], task["judge"], tok, task["prompts"], task["rows"],
                             task["prompts"][:4], fresh_adapter=task["fresh"], ppo_cfg=task["cfg"],
                             ppo_betas=[0.0, 0.1], dpo_betas=[0.1], seeds=[0, 1], updates=2, rollout=4,
                             dpo_cfg=dpo_cfg, lr=1e-3, dpo_every=2, grpo_betas=[0.05], group_size=2)
    assert [(r["method"], r["beta"], r["seed"]) for r in records] == [
        ("PPO", 0.0, 0), ("PPO", 0.1, 0), ("PPO", 0.0, 1), ("PPO", 0.1, 1), ("GRPO", 0.05, 0), ("GRPO", 0.05, 1),
        ("DPO", 0.1, 0), ("DPO", 0.1, 1)]
    ppo_run, grpo_run, dpo_run = records[0], records[4], records[6]
    assert [p["samples"] for p in grpo_run["curve"]] == [4, 8]  # two groups of 2 per update: PPO's 4 samples
    assert [p["samples"] for p in ppo_run["curve"]] == [4, 8]
    assert [p["steps"] for p in dpo_run["curve"]] == [0, 2, 3]  # before training, every 2 steps, after the last
    assert dpo_run["curve"][0]["kl"] == 0  # step 0 is the fresh adapter: the reference itself
    assert [p["pairs_seen"] for p in dpo_run["curve"]] == [0, 4, 6]
    assert len(dpo_run["logps"]["chosen"]) == 3
    assert len(ppo_run["final"]["gold_each"]) == 4
    after = lora.lora_state_dict(policy)
    assert all(torch.equal(after[k], v) for k, v in task["fresh"].items())  # handed back fresh


def test_sweep_script_writes_what_chapter_08_reads(tmp_path):
    out = tmp_path / "sweep.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rlhf_sweep.py"), "--seeds", "1", "--ppo-betas",
                          "0.05", "--dpo-betas", "0.1", "--grpo-betas", "--out", str(out)],
                         capture_output=True, text=True, env={**os.environ, "FTLAB_PROFILE": "ci"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 runs in" in run.stdout and str(out) in run.stdout
    written = json.loads(out.read_text())
    assert written["environment"]["profile"] == "ci" and written["model"] == "tiny-llama"
    assert [(r["method"], r["beta"]) for r in written["runs"]] == [("PPO", 0.05), ("DPO", 0.1)]
    assert written["settings"]["ppo"] == vars(frontier.task_settings(runtime.profile("ci"))["ppo"])
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rlhf_sweep.py"), "--dpo-betas", "0"],
                         capture_output=True, text=True, env={**os.environ, "FTLAB_PROFILE": "ci"}, timeout=600)
    assert bad.returncode == 2 and "--dpo-betas positive" in bad.stderr


@pytest.mark.parametrize("path", sorted(ROOT.glob("benchmarks/results/rlhf_sweep_*.json")),
                         ids=lambda p: p.name)
def test_committed_sweep_matches_the_settings_chapter_08_uses(path):
    # chapter 08 refuses a sweep measured with other settings; this catches it in CI, before a learner does
    sweep = json.loads(path.read_text())
    settings = frontier.task_settings(runtime.profile(sweep["environment"]["profile"]))
    assert sweep["model"] == runtime.profile(sweep["environment"]["profile"]).causal_lm
    assert sweep["settings"]["ppo"] == vars(settings["ppo"])
    for key in ("updates", "rollout", "lr", "group_size", "dpo_batch", "dpo_steps", "dpo_every", "held_out",
                "proxy_pairs"):
        assert sweep["settings"][key] == settings[key], key
    assert sweep["settings"]["seeds"] >= 2  # issue 24: at least two seeds under cpu
