"""LoRA training step, ours (ftlab.tuners.lora) vs peft: time and peak memory, alternating in one process.

    python benchmarks/bench_lora.py                          # the profile's decoder, LoRA r=8 on q,k,v,o
    python benchmarks/bench_lora.py --model tiny-llama --targets all-linear --repeats 10

One step = forward, backward and an AdamW step on the same batch of instruction examples, for two
models adapted from copies of one base with identical LoRA weights (ftlab.compare.peft.lora_pair). Time:
ftlab.compare.time_pair (ours and peft alternate; ratio = median ours / median peft). Memory: the
peak tensor memory of one step each (runtime.PeakMemory), after a warm-up step so that AdamW's state
already exists on both sides. Goal from issue 7: time ratio <= 1.05, memory ratio <= 1.0.
Writes benchmarks/results/lora.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftlab import compare, data, models, runtime  # noqa: E402
from ftlab.tuners import lora  # noqa: E402

QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]


def train_step(model, batch):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main(argv=None) -> dict:
    P = runtime.profile()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=P.causal_lm, help=f"a course decoder (default: the profile's, {P.causal_lm})")
    ap.add_argument("--targets", default="qkvo", help="'qkvo' (default) or 'all-linear'")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=P.micro_batch_size, help="examples per step")
    ap.add_argument("--repeats", type=int, default=P.bench_repeats)
    args = ap.parse_args(argv)
    if args.targets not in ("qkvo", "all-linear"):
        ap.error(f"--targets must be 'qkvo' or 'all-linear', got {args.targets!r}")
    if args.batch < 1 or args.repeats < 1 or args.rank < 1:
        ap.error("--batch, --repeats and --rank must be positive")
    targets = QKVO if args.targets == "qkvo" else "all-linear"

    base, tok = models.load(args.model)
    rows = [{"text": f"{r['prompt']}\n{r['response']}"} for r in data.load("instructions", "train", n=args.batch)]
    batch = {k: v.to(runtime.device()) for k, v in data.CausalLMCollator(tok, P.seq_len)(rows).items()}
    ours, theirs = compare.peft.lora_pair(base, targets, r=args.rank, alpha=2 * args.rank)
    del base
    ours.train(), theirs.train()
    ours_step, theirs_step = train_step(ours, batch), train_step(theirs, batch)
    print(f"{args.model}, LoRA r={args.rank} on {args.targets}: {lora.count_trainable(ours):,} trainable; "
          f"batch {tuple(batch['input_ids'].shape)}; {runtime.describe()}", flush=True)

    time = compare.time_pair(ours_step, theirs_step, repeats=args.repeats, warmup=1)
    memory = compare.memory_pair(ours_step, theirs_step)
    print(f"time per step: ours {time['ours_median_s'] * 1e3:.1f} ms, peft {time['theirs_median_s'] * 1e3:.1f} ms, "
          f"ratio {time['ratio']:.3f} (goal <= 1.05)")
    print(f"peak memory per step: ours {memory['ours_bytes'] / 2**20:.1f} MiB, peft "
          f"{memory['theirs_bytes'] / 2**20:.1f} MiB, ratio {memory['ratio']:.3f} (goal <= 1.0)")
    payload = {"model": args.model, "targets": args.targets, "rank": args.rank,
               "batch_shape": list(batch["input_ids"].shape), "trainable": lora.count_trainable(ours),
               "time": time, "memory": memory}
    path = compare.write_result("lora", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
