"""One PPO update, ours (ftlab.rlhf.ppo) vs TRL 1.12's PPOTrainer at equal settings, alternating in one process.

    python benchmarks/bench_ppo.py                       # the profile's decoder
    python benchmarks/bench_ppo.py --model tiny-llama --repeats 5

One update = score a rollout (reference log-probs with the adapter off, values, reward-model scores,
KL-shaped rewards, GAE, whitening) and run `num_ppo_epochs` x `num_mini_batches` AdamW steps on the
policy's LoRA adapter and the value model. Both sides start from the same weights and work on the same
responses, sampled once beforehand (TRL's sampler is swapped for a lookup, `compare.trl.fixed_rollout`), so
the timing compares the PPO code, not two random draws of response lengths; sampling itself is
`model.generate` on both sides. TRL's time includes what its `train()` does around one update
(callbacks, logging, garbage collection), which is part of what a user pays per update.
Before timing, `compare.trl.ppo_parity` checks on copies that both sides compute the same update (the
check chapter 08 and tests/test_ppo.py run); the script stops if they do not.
Time: ftlab.compare.time_pair (alternating; ratio = median ours / median TRL). Goal (issue 11): <= 1.0.
Writes benchmarks/results/ppo.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftlab import compare, data, models, runtime  # noqa: E402
from ftlab.rlhf import ppo  # noqa: E402
from ftlab.tuners import lora  # noqa: E402

TARGETS = ["q_proj", "v_proj"]


def adamw(*modules, lr: float):
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # constant: every repeat does the same work


def main(argv=None) -> dict:
    P = runtime.profile()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=P.causal_lm, help=f"a course decoder (default: the profile's, {P.causal_lm})")
    ap.add_argument("--batch", type=int, default=P.batch_size, help="prompts per rollout")
    ap.add_argument("--response-length", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=P.bench_repeats)
    args = ap.parse_args(argv)
    if args.batch < 2 or args.repeats < 1 or args.response_length < 1:
        ap.error("--batch must be at least 2; --repeats and --response-length must be positive")
    warnings.filterwarnings("ignore", category=FutureWarning)

    base, tok = models.load(args.model)
    tok.padding_side = "left"
    reward_model, _ = models.load(args.model, task="classification", num_labels=1, seed=1)
    value0 = lora.add_lora(copy.deepcopy(reward_model), TARGETS, r=8, alpha=16, trainable=["score"])
    policy, peft_policy = compare.peft.lora_pair(base, TARGETS, r=8, alpha=16)
    del base
    cfg = ppo.PPOConfig(response_length=args.response_length, num_ppo_epochs=2, num_mini_batches=2,
                        missing_eos_penalty=1.0)
    prompts = [data.encode_chat(tok, r["prompt"])["input_ids"] for r in data.load("preferences", "train", n=args.batch)]
    queries = data.left_pad(prompts, tok.pad_token_id)
    torch.manual_seed(0)
    query_responses, gen_logits = ppo.generate(policy, queries, tok.pad_token_id, tok.eos_token_id, cfg)

    # First the proof that both sides compute the same update (one SGD step, on copies), then the timing.
    one = ppo.PPOConfig(**{**cfg.__dict__, "num_ppo_epochs": 1, "num_mini_batches": 1})
    parity = compare.trl.ppo_parity(one, copy.deepcopy(policy), copy.deepcopy(peft_policy), value0, reward_model, tok,
                                    prompts, query_responses, gen_logits, lr=0.1, output_dir=tempfile.mkdtemp())
    worst = max(parity["tensors"].values())
    print(f"parity with TRL on one update: tensors within {worst:.1e}, weights after an SGD step within "
          f"{parity['weights_max_abs']:.1e} (the step moved them by {parity['moved']:.1e})", flush=True)
    if worst > 1e-5 or parity["weights_max_abs"] > 1e-6:
        sys.exit("the two sides no longer compute the same update: timing them would compare different work")

    value_ours, value_trl = copy.deepcopy(value0), copy.deepcopy(value0)
    opt_ours, _ = adamw(policy, value_ours, lr=1e-4)
    opt_trl, sched_trl = adamw(peft_policy, value_trl, lr=1e-4)
    trainer = compare.trl.ppo_trainer(cfg, peft_policy, value_trl, copy.deepcopy(reward_model), tok, prompts,
                                      batch_size=args.batch, updates=1, lr=1e-4, output_dir=tempfile.mkdtemp(),
                                      optimizers=(opt_trl, sched_trl))
    gen = torch.Generator().manual_seed(0)

    def ours():
        roll = ppo.score_rollout(policy, value_ours, reward_model, queries, query_responses, gen_logits,
                                 pad_id=tok.pad_token_id, stop_id=tok.eos_token_id, cfg=cfg)
        ppo.ppo_update(policy, value_ours, opt_ours, roll, pad_id=tok.pad_token_id, cfg=cfg, generator=gen)

    print(f"{args.model}: rollout {tuple(query_responses.shape)}, {cfg.num_ppo_epochs} epochs x "
          f"{cfg.num_mini_batches} minibatches; {runtime.describe()}", flush=True)
    with compare.trl.fixed_rollout(queries, query_responses, gen_logits):
        time = compare.time_pair(ours, trainer.train, repeats=args.repeats, warmup=1)
    print(f"time per PPO update: ours {time['ours_median_s']:.3f} s, TRL {time['theirs_median_s']:.3f} s, "
          f"ratio {time['ratio']:.3f} (goal <= 1.0)")
    payload = {"model": args.model, "rollout_shape": list(query_responses.shape), "num_ppo_epochs": cfg.num_ppo_epochs,
               "num_mini_batches": cfg.num_mini_batches, "generation": "excluded (same responses fed to both)",
               "parity": {"tensors_max_abs": worst, "weights_max_abs": parity["weights_max_abs"]}, "time": time}
    path = compare.write_result("ppo", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
