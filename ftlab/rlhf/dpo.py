"""DPO from scratch: the policy trained directly on preference pairs, against a frozen reference.

Bradley-Terry says p(y_w > y_l | x) = sigma(r(x, y_w) - r(x, y_l)). The KL-regularised RLHF optimum
is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x), so r(x, y) = beta log(pi*(y|x) / pi_ref(y|x))
+ beta log Z(x). Substituting, Z(x) cancels in the difference, and the reward model disappears:

    L_DPO = -log sigma( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

    batch = PairCollator(tok, max_length=128)(rows)       # chosen rows first, then rejected rows
    out = dpo_batch_loss(model, batch, beta=0.1)           # out["loss"], TRL's rewards/* numbers
    history = train_dpo(model, rows, collate, steps=20, batch_size=8, lr=5e-4, beta=0.1)

The reference is the policy with its LoRA adapter switched off (no copy of the weights), as in
TRL's DPOTrainer with a peft model. Formatting uses `ftlab.data.encode_chat`, which splits prompt
and reply exactly as DPOTrainer does for conversational data, so the two see the same tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ftlab import data
from ftlab.tuners import lora


class PairCollator:
    """Rows with `prompt`, `chosen`, `rejected` -> one padded batch: the B chosen sequences, then the B rejected.

    `labels` holds the reply tokens (prompt and padding are -100), the same tokens as DPOTrainer's
    completion mask.
    """

    def __init__(self, tokenizer, max_length: int | None = None):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return data.encode_pairs(self.tokenizer, rows, self.max_length)


def sequence_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) = sum over reply tokens of log p(y_t | x, y_<t), one number per row: (B,)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    targets = labels[:, 1:]
    mask = targets != data.IGNORE_INDEX
    per_token = torch.gather(logits, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    return (per_token * mask).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float):
    """Per-pair DPO loss and the implicit rewards. Returns (losses, chosen_rewards, rejected_rewards).

        r_hat(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))          the implicit reward
        loss        = -log sigma(r_hat(x, y_w) - r_hat(x, y_l))        Bradley-Terry on implicit rewards
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta!r}")
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def pair_logprobs(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(y_w|x), log pi(y_l|x)) for a PairCollator batch."""
    logps = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return logps.chunk(2)


@torch.no_grad()
def reference_logprobs(model: nn.Module, batch: dict, ref_model: nn.Module | None = None):
    """The reference's (chosen, rejected) log-probs: `ref_model`, or `model` with its adapter off."""
    if ref_model is not None:
        return pair_logprobs(ref_model, batch)
    lora.set_lora_enabled(model, False)
    try:
        return pair_logprobs(model, batch)
    finally:
        lora.set_lora_enabled(model, True)


def dpo_batch_loss(model: nn.Module, batch: dict, beta: float, ref_model: nn.Module | None = None) -> dict:
    """Mean DPO loss of a PairCollator batch, plus TRL's logged numbers (rewards/chosen, margins, accuracy)."""
    ref_chosen, ref_rejected = reference_logprobs(model, batch, ref_model)
    chosen, rejected = pair_logprobs(model, batch)
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    return {"loss": losses.mean(), "rewards/chosen": chosen_rewards.mean().item(),
            "rewards/rejected": rejected_rewards.mean().item(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
            "logps/chosen": chosen.detach().mean().item(), "logps/rejected": rejected.detach().mean().item()}


def train_dpo(model: nn.Module, rows: list[dict], collate: PairCollator, *, steps: int, batch_size: int,
              lr: float, beta: float, max_grad_norm: float = 1.0, seed: int = 0,
              ref_model: nn.Module | None = None) -> list[dict]:
    """DPO with DPOTrainer's defaults: AdamW (no weight decay), linear decay to zero, gradient norm clipped
    to `max_grad_norm`, pairs drawn in a shuffled order. Returns one dict of logged numbers per step."""
    if steps < 1 or batch_size < 1 or len(rows) < batch_size:
        raise ValueError(f"need steps >= 1 and 1 <= batch_size <= len(rows); got steps={steps}, "
                         f"batch_size={batch_size}, len(rows)={len(rows)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (add a LoRA adapter first)")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / steps)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    history = []
    model.train()
    for step in range(steps):
        picked = [rows[order[(step * batch_size + i) % len(order)]] for i in range(batch_size)]
        out = dpo_batch_loss(model, collate(picked), beta, ref_model)
        out["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        history.append({"step": step + 1, **out, "loss": out["loss"].item(), "grad_norm": grad_norm.item(),
                        "lr": schedule.get_last_lr()[0]})
        schedule.step()
    model.eval()
    return history
