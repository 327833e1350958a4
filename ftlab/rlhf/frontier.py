"""Proxy against gold, and reward against KL (chapter 08): what a policy trained on a learned reward really gained.

    gold = RolloutGold(judge, tok)                                  # train_ppo(..., on_rollout=gold)
    point = evaluate(policy, proxy, judge, tok, held_out, cfg)      # held-out: proxy, gold, KL to the reference
    points, history = dpo_run(policy, pairs, train_cfg, beta, lambda: evaluate(...), 2, collate)

The proxy is the reward model the policy optimises; the gold judge (`judge.SentimentJudge`) is an independent
measure of what the proxy stands for, which the policy never sees. Plotting both against the KL from the
reference shows over-optimisation (Gao, Schulman & Hilton 2022): the proxy keeps rising while gold stalls or
falls. The same held-out evaluation scores PPO and DPO policies, so their reward-KL frontiers (Rafailov et al.
2023, fig. 2) are measured in the same units.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from ftlab import train as training
from ftlab.checks import positive_int
from ftlab.data import left_pad
from ftlab.rlhf import dpo, grpo, ppo, reward
from ftlab.runtime import eval_mode
from ftlab.tuners import lora


def task_settings(profile) -> dict:
    """Chapter 08's review task under a profile, shared by the chapter and benchmarks/rlhf_sweep.py: the adapter,
    PPO's settings and learning rate, equal data for every method (PPO: `updates` rollouts of `rollout` prompts;
    GRPO: as many completions, in groups of `group_size`; DPO: `dpo_steps` steps of `dpo_batch` pairs, the same
    number of prompts), the betas of the sweep, and `live_updates`, the shorter PPO run the chapter itself
    trains. The first `held_out` test prompts evaluate every policy; the test pairs after them measure the proxy."""
    # ci 4 updates of 8 prompts, cpu 8 of 8, gpu 60 of 32
    updates, rollout = max(4, profile.train_steps // 5), 2 * profile.micro_batch_size
    dpo_batch = profile.micro_batch_size
    dpo_steps = updates * rollout // dpo_batch
    return {"lora": dict(target_modules=["q_proj", "v_proj"], r=8, alpha=16),
            # one pass over each rollout in two minibatches: TRL's default of 4 passes costs 4x the update time
            "ppo": ppo.PPOConfig(kl_coef=0.05, response_length=8, num_ppo_epochs=1, num_mini_batches=2),
            "lr": 5e-3,  # LoRA takes a far larger step than full fine-tuning (TRL's default 3e-6 is for full weights)
            "updates": updates, "live_updates": max(2, updates // 4), "rollout": rollout, "group_size": 4,
            "dpo_batch": dpo_batch, "dpo_steps": dpo_steps, "dpo_every": max(1, dpo_steps // 2),
            "held_out": 32, "proxy_pairs": min(192, profile.n_train // 8),  # ci 12, cpu 50, gpu all 192 review pairs
            "ppo_betas": [0.0, 0.05, 0.2], "dpo_betas": [0.05, 0.1, 0.5], "grpo_betas": [0.05]}


def review_proxy(model_name: str, n_pairs: int, held_out: list[dict], device=None):
    """The proxy the review task's policy optimises: chapter 07's recipe (`reward.fit_proxy`, a head on the frozen
    body's cached features) fitted on the first `n_pairs` of `proxy_rows("reviews")`, rescaled to unit spread on
    the `held_out` pairs. Returns it as a transformers sequence-classification model (what PPO and TRL call) and
    {n_pairs, held_out, accuracy, spread}."""
    rows = reward.proxy_rows("reviews", n_pairs)
    model = reward.fit_proxy(model_name, rows, device=device)
    accuracy, spread = reward.unit_scale(model, held_out)
    return model.to_hf(), {"n_pairs": len(rows), "held_out": len(held_out), "accuracy": accuracy, "spread": spread}


def response_texts(tokenizer, responses: torch.Tensor, pad_id: int) -> list[str]:
    """The replies of a [B, T] response tensor, padding and special tokens left out."""
    return [tokenizer.decode(r[r != pad_id], skip_special_tokens=True) for r in responses]


class RolloutGold:
    """An `on_rollout` hook for `ppo.train_ppo`: the gold judge's mean P(positive) of the rollout's replies
    (as the reward model saw them: cut after the stop token), logged as `gold`."""

    def __init__(self, judge, tokenizer, stop_id: int | None = None):
        self.judge, self.tokenizer = judge, tokenizer
        self.stop_id = tokenizer.eos_token_id if stop_id is None else stop_id

    def __call__(self, roll: ppo.Rollout) -> dict:
        pad_id = self.tokenizer.pad_token_id
        finished = ppo.truncate_after_stop(roll.responses, self.stop_id, pad_id)
        return {"gold": self.judge.positive(response_texts(self.tokenizer, finished, pad_id)).mean().item()}


@torch.no_grad()
def evaluate(policy, proxy, judge, tokenizer, prompts: list, cfg: ppo.PPOConfig, seed: int = 1) -> dict:
    """One reply per prompt sampled from `policy` as PPO samples (cfg's temperature and length, a fixed seed;
    the caller's random stream is left as it was), scored by the proxy and by the gold judge, and its KL to
    the reference (the policy with its adapter off):

        kl = mean over prompts of  sum_t [log pi(y_t) - log pi_ref(y_t)]   (logits / temperature, as objective/kl)

    an unbiased estimate of the sequence-level KL of the sampling distributions. Returns the means, and the
    per-prompt gold values and texts for paired tests and reading."""
    with eval_mode(policy):  # no dropout while sampling or scoring, whatever mode the caller trains in
        return _evaluate(policy, proxy, judge, tokenizer, prompts, cfg, seed)


def _evaluate(policy, proxy, judge, tokenizer, prompts: list, cfg: ppo.PPOConfig, seed: int) -> dict:
    pad_id, stop_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(policy.parameters()).device
    queries = left_pad(prompts, pad_id).to(device)
    context = queries.shape[1]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        query_responses, _ = ppo.generate(policy, queries, pad_id, stop_id, cfg)
    responses = ppo.truncate_after_stop(query_responses[:, context:], stop_id, pad_id)
    query_responses = torch.cat([queries, responses], 1)
    real = responses != pad_id
    logprobs = ppo.token_logprobs(ppo.policy_logits(policy, query_responses, pad_id, context, cfg.temperature),
                                  responses)
    with ppo.reference_of(policy) as ref:
        ref_logprobs = ppo.token_logprobs(ppo.policy_logits(ref, query_responses, pad_id, context, cfg.temperature),
                                          responses)
    kl = ((logprobs - ref_logprobs) * real).sum(1)
    texts = response_texts(tokenizer, responses, pad_id)
    gold = judge.positive(texts)
    return {"proxy": ppo.sequence_scores(proxy, query_responses, pad_id, context).mean().item(),
            "gold": gold.mean().item(), "kl": kl.mean().item(), "length": real.sum(1).float().mean().item(),
            "gold_each": gold, "texts": texts}


class EvalEvery:
    """A `train.train` callback that calls `evaluate()` before every `every`-th step and keeps the points with
    the training seconds and steps done so far (evaluation time left out)."""

    def __init__(self, evaluate: Callable[[], dict], every: int):
        self.evaluate, self.every = evaluate, positive_int("every", every)
        self.points, self.eval_seconds, self.start = [], 0.0, None

    def on_step_begin(self, step: int, model) -> None:
        now = time.perf_counter()
        self.start = now if self.start is None else self.start
        if step % self.every == 0:
            self.add(step, now)

    def add(self, steps_done: int, now: float) -> None:
        seconds = now - self.start - self.eval_seconds
        point = self.evaluate()
        self.eval_seconds += time.perf_counter() - now
        self.points.append({"steps": steps_done, "seconds": seconds, **point})


def dpo_run(policy, pairs: list[dict], cfg: training.TrainConfig, beta: float, evaluate: Callable[[], dict],
            every: int, collate: dpo.StackedPairCollator, loss_type: str = "sigmoid") -> tuple[list[dict], dict]:
    """Train `policy` with the DPO loss on `pairs` (its adapter as it is now), evaluating every `every` steps and
    after the last. Returns the points (each with `steps`, `pairs_seen`, training `seconds`, and what `evaluate`
    returns) and the training history (DPO's rewards/* and logps/* per step)."""
    tracker = EvalEvery(evaluate, every)
    history = training.train(policy, pairs, cfg, collate=collate, loss_fn=dpo.dpo_loss_fn(beta, loss_type=loss_type),
                             callbacks=[tracker])
    tracker.add(cfg.steps, time.perf_counter())
    for point in tracker.points:
        point["pairs_seen"] = point["steps"] * cfg.batch_size
    return tracker.points, history


def sweep(policy, value_init, proxy, judge, tokenizer, prompts: list, pairs: list[dict], held_out: list, *,
          fresh_adapter: dict, ppo_cfg: ppo.PPOConfig, ppo_betas, dpo_betas, seeds, updates: int, rollout: int,
          dpo_cfg: training.TrainConfig, lr: float, dpo_every: int, grpo_betas=(), group_size: int = 4,
          progress: bool = False) -> list[dict]:
    """PPO on the proxy at each of `ppo_betas`, GRPO on the proxy at each of `grpo_betas` (groups of `group_size`,
    as many completions per update as PPO's rollout) and DPO on `pairs` at each of `dpo_betas`, once per seed,
    every run from `fresh_adapter`. Returns one record per run: method, beta, seed, its curve (PPO and GRPO: per
    update, on their own samples, with `gold` from the judge; DPO: held-out points every `dpo_every` steps, and
    its chosen/rejected log-probs per step), and `final`, the held-out `evaluate` of the trained policy (with its
    texts, and per-prompt gold for paired tests)."""
    plan = [(seed, method, beta) for method, betas in (("PPO", ppo_betas), ("GRPO", grpo_betas), ("DPO", dpo_betas))
            for seed in seeds for beta in betas]
    if progress:
        from tqdm.auto import tqdm

        plan = tqdm(plan, desc="runs")
    collate, records = dpo.StackedPairCollator(tokenizer), []
    for seed, method, beta in plan:
        lora.load_lora_state_dict(policy, fresh_adapter)
        check = lambda: evaluate(policy, proxy, judge, tokenizer, held_out, ppo_cfg)  # noqa: E731
        record = {"method": method, "beta": beta, "seed": seed}
        if method == "PPO":
            history = ppo.train_ppo(policy, copy.deepcopy(value_init), proxy, prompts, pad_id=tokenizer.pad_token_id,
                                    stop_id=tokenizer.eos_token_id, cfg=replace(ppo_cfg, kl_coef=beta),
                                    updates=updates, batch_size=rollout, lr=lr, seed=seed,
                                    on_rollout=RolloutGold(judge, tokenizer))
            record["curve"] = [{"samples": h["samples"], "seconds": h["seconds"], "gold": h["gold"],
                                "proxy": h["objective/scores"], "kl": h["objective/kl"],
                                "length": h["response_length"], "explained_variance": h["val/explained_variance"]}
                               for h in history]
            final = check()
        elif method == "GRPO":
            cfg = grpo.GRPOConfig(num_generations=group_size, response_length=ppo_cfg.response_length,
                                  temperature=ppo_cfg.temperature, beta=beta)
            history = grpo.train_grpo(policy, proxy, prompts, pad_id=tokenizer.pad_token_id,
                                      stop_id=tokenizer.eos_token_id, cfg=cfg, updates=updates,
                                      prompts_per_update=rollout // group_size, lr=lr, seed=seed,
                                      on_rollout=RolloutGold(judge, tokenizer))
            record["curve"] = [{"samples": h["samples"], "seconds": h["seconds"], "gold": h["gold"],
                                "proxy": h["reward"], "length": h["completions/mean_length"],
                                "zero_std_groups": h["frac_reward_zero_std"]} for h in history]
            final = check()
        else:
            points, history = dpo_run(policy, pairs, replace(dpo_cfg, seed=seed), beta, check, dpo_every, collate)
            record["curve"] = [{k: v for k, v in p.items() if k not in ("texts", "gold_each")} for p in points]
            record["logps"] = {"chosen": history["logps/chosen"], "rejected": history["logps/rejected"]}
            final = points[-1]
        record["final"] = {k: v.tolist() if torch.is_tensor(v) else v for k, v in final.items()}
        records.append(record)
    lora.load_lora_state_dict(policy, fresh_adapter)
    return records
