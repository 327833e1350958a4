"""PPO and DPO over beta and seeds on chapter 08's review task, every policy scored by the proxy it learned from
and by a gold judge it never saw: the over-optimisation curves and the reward-KL frontier, with more seeds and
betas than the chapter's `cpu` run has time for.

    python benchmarks/rlhf_sweep.py            # the profile's decoder, 3 seeds (about 45 min on 1 CPU thread)
    FTLAB_PROFILE=ci python benchmarks/rlhf_sweep.py --seeds 1 --out /tmp/sweep.json       # a smoke run

The settings are chapter 08's (`frontier.task_settings`): the policy is the profile's decoder with a LoRA
adapter, the proxy is chapter 07's recipe fitted on review pairs (`frontier.review_proxy`), the gold judge is
`judge.SentimentJudge`. PPO, GRPO and DPO learn from the same number of prompts' worth of data: PPO samples
one reply per prompt, GRPO as many completions in groups, DPO reads one written pair per prompt. Every run
starts from the same fresh adapter.
Writes benchmarks/results/rlhf_sweep_<profile>.json (or --out); chapter 08 plots it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftlab import compare, data, models, runtime, train  # noqa: E402
from ftlab.rlhf import frontier, judge  # noqa: E402
from ftlab.tuners import lora  # noqa: E402


def main(argv=None) -> dict:
    P = runtime.profile()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds per (method, beta)")
    s = frontier.task_settings(P)
    ap.add_argument("--ppo-betas", type=float, nargs="+", default=s["ppo_betas"])
    ap.add_argument("--dpo-betas", type=float, nargs="+", default=s["dpo_betas"])
    ap.add_argument("--grpo-betas", type=float, nargs="*", default=s["grpo_betas"], help="none: no GRPO runs")
    ap.add_argument("--out", type=Path, default=None,
                    help="a .json path to write (default benchmarks/results/rlhf_sweep_<profile>.json)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or min(args.ppo_betas + args.grpo_betas) < 0 or min(args.dpo_betas) <= 0:
        ap.error("--seeds must be positive, --ppo-betas and --grpo-betas non-negative, --dpo-betas positive")
    warnings.filterwarnings("ignore", category=FutureWarning)
    device = runtime.device()
    base, tok = models.load(P.causal_lm)
    tok.padding_side = "left"
    torch.manual_seed(0)
    policy = lora.add_lora(base, **s["lora"])
    fresh = lora.lora_state_dict(policy)
    train_rows, test_rows = data.load("reviews", "train"), data.load("reviews", "test")
    proxy, proxy_info = frontier.review_proxy(P.causal_lm, s["proxy_pairs"], test_rows[s["held_out"]:], device)
    value_init = copy.deepcopy(proxy).requires_grad_(False)
    value_init.score.requires_grad_(True)
    gold = judge.SentimentJudge.fit()
    prompts = [data.encode_chat(tok, r["prompt"])["input_ids"] for r in train_rows]
    held_out = [data.encode_chat(tok, r["prompt"])["input_ids"] for r in test_rows[:s["held_out"]]]
    pairs = train_rows[:s["dpo_steps"] * s["dpo_batch"]]
    dpo_cfg = train.TrainConfig(steps=s["dpo_steps"], batch_size=s["dpo_batch"], lr=s["lr"], progress=False)
    with runtime.Timer() as t:
        records = frontier.sweep(policy, value_init, proxy, gold, tok, prompts, pairs, held_out, fresh_adapter=fresh,
                                 ppo_cfg=s["ppo"], ppo_betas=args.ppo_betas, dpo_betas=args.dpo_betas,
                                 seeds=range(args.seeds), updates=s["updates"], rollout=s["rollout"],
                                 dpo_cfg=dpo_cfg, lr=s["lr"], dpo_every=s["dpo_every"], grpo_betas=args.grpo_betas,
                                 group_size=s["group_size"], progress=True)
    payload = {"model": P.causal_lm, "seconds": t.seconds, "proxy": proxy_info,
               "settings": {**s, "ppo": vars(s["ppo"]), "seeds": args.seeds, "ppo_betas": args.ppo_betas,
                            "dpo_betas": args.dpo_betas, "grpo_betas": args.grpo_betas,
                            "threads": torch.get_num_threads()},
               "runs": records}
    path = (compare.write_result(f"rlhf_sweep_{P.name}", payload) if args.out is None
            else compare.write_result(args.out.stem, payload, folder=args.out.parent))
    print(f"{len(records)} runs in {t.seconds:.0f} s -> {path}")
    return payload


if __name__ == "__main__":
    main()
