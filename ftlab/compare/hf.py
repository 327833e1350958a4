"""transformers' Trainer on the run ftlab.train makes (chapter 01): the same batches, settings and losses.

    history = trainer_run(model, rows, cfg, collate, output_dir=tmp)    # {"step", "loss", "lr", "grad_norm"}
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ftlab.train import TrainConfig, batch_indices


def trainer_run(model: nn.Module, dataset, config: TrainConfig, collate: Callable, output_dir: str) -> dict:
    """Run transformers' Trainer with `config`'s settings on the batches `ftlab.train.train` would draw.

    The rows are laid out in the order of `ftlab.train.batch_indices` (all steps, one after the other)
    and read sequentially, so both loops see identical batches. Returns the per-step history
    (step, loss, lr, grad_norm) from the Trainer's logs.
    """
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    if config.micro_batch_size not in (None, config.batch_size):
        raise ValueError("trainer_run compares whole-batch steps: set micro_batch_size=None")
    stream = [dataset[i] for step in range(config.steps)
              for i in batch_indices(step, config.batch_size, len(dataset), config.seed, config.shuffle)]
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=config.batch_size, max_steps=config.steps,
        learning_rate=config.lr, weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.schedule, max_grad_norm=config.max_grad_norm or 0.0, optim="adamw_torch",
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="sequential", remove_unused_columns=False, seed=config.seed,
        disable_tqdm=not config.progress, dataloader_num_workers=0, bf16=False)
    history = {"step": [], "loss": [], "lr": [], "grad_norm": []}

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                history["step"].append(state.global_step)
                history["loss"].append(logs["loss"])
                history["lr"].append(logs.get("learning_rate"))
                history["grad_norm"].append(logs.get("grad_norm"))

    trainer = Trainer(model=model, args=args, train_dataset=stream, data_collator=collate, callbacks=[Record()])
    trainer.remove_callback(PrinterCallback)  # its per-step dicts would flood the notebook; Record keeps them
    trainer.train()
    model.eval()
    return history
