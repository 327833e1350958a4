"""Our training loop (ftlab.train.train) vs transformers' Trainer: same model, data and steps.

    python benchmarks/bench_train_loop.py               # the profile's causal LM, 5 optimizer steps per run
    python benchmarks/bench_train_loop.py --steps 10

Both sides start from a copy of the same weights and train on the same rows in the same order
(no shuffling), with the same batch, micro-batch (gradient accumulation), AdamW, warmup, linear
decay and clipping, so they do the same arithmetic; the losses are checked to agree before timing.
Each timed call builds its trainer and runs all steps, alternating ours/theirs in one process
(ftlab.compare.time_pair). Memory: peak bytes allocated during one such call (ftlab.compare.memory_pair).
Ratios are ours / Trainer (goal: time <= 1.1, memory <= 1.0). Writes benchmarks/results/train_loop.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from ftlab import compare, data, models, runtime, train  # noqa: E402

LR = 3e-4


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per timed run (default 5)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating pairs (default: the profile's)")
    args = ap.parse_args(argv)
    P = runtime.profile()
    repeats = args.repeats or P.bench_repeats
    hf_logging.set_verbosity_error()
    base, tok = models.load(P.causal_lm)
    rows = [{"text": r["prompt"] + "\n" + r["response"]} for r in data.load("instructions", "train", n=P.n_train)]
    collate = data.CausalLMCollator(tok, max_length=P.seq_len)
    on_cpu = runtime.device().type == "cpu"

    def ours():
        cfg = train.TrainConfig(steps=args.steps, batch_size=P.batch_size, micro_batch_size=P.micro_batch_size,
                                lr=LR, warmup_steps=1, max_grad_norm=1.0, shuffle=False, progress=False)
        return train.train(copy.deepcopy(base), rows, cfg, collate=collate)["loss"]

    def theirs():
        targs = TrainingArguments(
            output_dir=tempfile.mkdtemp(), max_steps=args.steps, per_device_train_batch_size=P.micro_batch_size,
            gradient_accumulation_steps=P.accumulation_steps, learning_rate=LR, warmup_steps=1,
            lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
            train_sampling_strategy="sequential", logging_steps=1, save_strategy="no", report_to="none",
            disable_tqdm=True, use_cpu=on_cpu, bf16=False, dataloader_num_workers=0, remove_unused_columns=False)
        trainer = Trainer(model=copy.deepcopy(base), args=targs, train_dataset=rows, data_collator=collate)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        return [log["loss"] for log in trainer.state.log_history if "loss" in log]

    a, b = ours(), theirs()  # also the warm-up
    gap = max(abs(x - y) for x, y in zip(a, b))
    assert len(a) == len(b) == args.steps and gap < 1e-4, f"the two loops disagree (max loss gap {gap:.2e})"
    time = compare.time_pair(ours, theirs, repeats=repeats, warmup=0)
    memory = compare.memory_pair(ours, theirs)
    payload = {"model": P.causal_lm, "steps": args.steps, "batch_size": P.batch_size,
               "micro_batch_size": P.micro_batch_size, "repeats": repeats, "max_loss_gap": gap,
               "time": time, "memory": memory}
    path = compare.write_result("train_loop", payload)
    print(f"{P.causal_lm}, {args.steps} steps of batch {P.batch_size} (micro-batch {P.micro_batch_size}), "
          f"{repeats} alternating pairs; losses agree to {gap:.1e}")
    print(f"time per run: ours {time['ours_median_s']:.2f} s, Trainer {time['theirs_median_s']:.2f} s, "
          f"ratio {time['ratio']:.2f} (goal <= 1.1)")
    print(f"peak memory: ours {memory['ours_bytes'] / 2**20:.1f} MiB, "
          f"Trainer {memory['theirs_bytes'] / 2**20:.1f} MiB, "
          f"ratio {memory['ratio']:.2f} (goal <= 1.0)")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
