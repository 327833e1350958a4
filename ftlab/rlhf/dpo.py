"""DPO from scratch: the policy trained directly on preference pairs, against a frozen reference.

Bradley-Terry says p(y_w > y_l | x) = sigma(r(x, y_w) - r(x, y_l)). The KL-regularised RLHF optimum
is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x), so r(x, y) = beta log(pi*(y|x) / pi_ref(y|x))
+ beta log Z(x). Substituting, Z(x) cancels in the difference, and the reward model disappears:

    L_DPO = -log sigma( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

    collate = StackedPairCollator(tok, max_length=128)     # the B chosen rows, then the B rejected rows
    cfg = TrainConfig(steps=20, batch_size=8, lr=5e-4)     # the rest of TrainConfig's defaults are DPOTrainer's
    history = train(model, rows, cfg, collate=collate, loss_fn=dpo_loss_fn(beta=0.1))
    history["rewards/margins"]                             # TRL's logged numbers, one per step (below)

DPO trains through `ftlab.train.train`, the loop every chapter uses. `dpo_loss_fn` sums the loss over
a batch's pairs and the collator gives `labels` one entry per pair, so train divides by the number of
pairs: the loss is the mean over pairs, whatever the micro-batching. It also reports TRL's numbers,
which train logs per step, averaged over the batch's pairs like the loss: rewards/chosen,
rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen, logps/rejected.
TrainConfig's defaults are DPOTrainer's: AdamW (betas 0.9/0.999, eps 1e-8) without weight decay, no
warmup, a linear decay to 0 at the last step, the gradient norm clipped to 1.0. Only the learning rate
(TRL's default is 1e-6) and the order of the pairs (each draws its own shuffle) differ.

Two relatives change one piece of the loss (`loss_type` of summed_dpo_loss and dpo_loss_fn):

    "ipo"    IPO (Azar et al. 2023): (h - 1/(2 tau))^2, h the difference of the per-token mean log-ratios, tau = beta
             (TRL's DPOTrainer(loss_type="ipo") divides by the reply length, as the IPO authors do)
    "simpo"  SimPO (Meng et al. 2024): -log sigma(beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma),
             no reference model (TRL: the experimental CPOTrainer with loss_type="simpo")

The reference is the policy with its LoRA adapter switched off (no copy of the weights), as in
TRL's DPOTrainer with a peft model. Formatting uses `ftlab.data.encode_chat`, which splits prompt
and reply exactly as DPOTrainer does for conversational data, so the two see the same tokens.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ftlab import data
from ftlab.losses import IGNORE_INDEX
from ftlab.tuners import lora


class StackedPairCollator:
    """Rows with `prompt`, `chosen`, `rejected` -> one padded batch: the B chosen sequences, then the B rejected.

    `reply_labels` [2B, T] holds the reply tokens (prompt and padding are -100), the tokens DPOTrainer's
    completion mask keeps. `labels` [B] has one entry per pair (0: the first reply, the chosen one, wins),
    as in reward.RewardPairCollator, so ftlab.train counts pairs and averages the loss over them.
    """

    def __init__(self, tokenizer, max_length: int | None = None):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        both = data.encode_pairs(self.tokenizer, rows, self.max_length)
        return {"input_ids": both["input_ids"], "attention_mask": both["attention_mask"],
                "reply_labels": both["labels"], "labels": torch.zeros(len(rows), dtype=torch.long)}


def sequence_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) = sum over reply tokens of log p(y_t | x, y_<t), one number per row: (B,)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
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


def ipo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor, tau: float):
    """Per-pair IPO loss and the implicit rewards (as dpo_loss). Returns (losses, chosen_rewards, rejected_rewards).

        h    = (log pi(y_w|x) - log pi_ref(y_w|x)) / |y_w| - (log pi(y_l|x) - log pi_ref(y_l|x)) / |y_l|
        loss = (h - 1 / (2 tau))^2          a squared error: the margin is pulled to 1/(2 tau), not to infinity
    """
    if not tau > 0:
        raise ValueError(f"tau (beta) must be positive, got {tau!r}")
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
    losses = (h - 1 / (2 * tau)) ** 2
    return losses, (tau * chosen_ratio).detach(), (tau * rejected_ratio).detach()


def simpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, chosen_tokens: torch.Tensor,
               rejected_tokens: torch.Tensor, beta: float, gamma: float):
    """Per-pair SimPO loss and its rewards. Returns (losses, chosen_rewards, rejected_rewards).

        r(x, y) = beta / |y| * log pi(y|x)          the mean token log-prob: no reference, no length advantage
        loss    = -log sigma(r(x, y_w) - r(x, y_l) - gamma)      gamma: the margin the chosen reward must clear
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta!r}")
    chosen_rewards = beta * policy_chosen / chosen_tokens.clamp(min=1)
    rejected_rewards = beta * policy_rejected / rejected_tokens.clamp(min=1)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


LOSS_TYPES = ("sigmoid", "ipo", "simpo")


def reply_token_counts(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(|y_w|, |y_l|): the reply tokens of each chosen and rejected row of a StackedPairCollator batch."""
    return (batch["reply_labels"][:, 1:] != IGNORE_INDEX).sum(-1).chunk(2)


def pair_logprobs(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(y_w|x), log pi(y_l|x)) for a StackedPairCollator batch."""
    logps = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["reply_labels"])
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


def summed_dpo_loss(model: nn.Module, batch: dict, beta: float, ref_model: nn.Module | None = None,
                    loss_type: str = "sigmoid", simpo_gamma: float = 0.5) -> dict:
    """The DPO loss of a StackedPairCollator batch, summed over its pairs, and TRL's logged numbers, summed
    too: {"loss": sum of L_DPO, "rewards/chosen": sum of r_hat(x, y_w), ...}. ftlab.train divides each by
    the number of pairs, so the history holds the means TRL logs. `loss_type`: "sigmoid" (DPO), "ipo" (beta is
    IPO's tau) or "simpo" (margin `simpo_gamma`; it runs no reference)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    chosen, rejected = pair_logprobs(model, batch)
    if loss_type == "simpo":
        losses, chosen_rewards, rejected_rewards = simpo_loss(chosen, rejected, *reply_token_counts(batch), beta,
                                                              simpo_gamma)
    else:
        ref_chosen, ref_rejected = reference_logprobs(model, batch, ref_model)
        if loss_type == "ipo":
            losses, chosen_rewards, rejected_rewards = ipo_loss(chosen, rejected, ref_chosen, ref_rejected,
                                                                *reply_token_counts(batch), beta)
        else:
            losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    return {"loss": losses.sum(), "rewards/chosen": chosen_rewards.sum().item(),
            "rewards/rejected": rejected_rewards.sum().item(),
            "rewards/margins": (chosen_rewards - rejected_rewards).sum().item(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).sum().item(),
            "logps/chosen": chosen.detach().sum().item(), "logps/rejected": rejected.detach().sum().item()}


def dpo_loss_fn(beta: float, ref_model: nn.Module | None = None, loss_type: str = "sigmoid",
                simpo_gamma: float = 0.5) -> Callable[[nn.Module, dict], dict]:
    """The `loss_fn` for ftlab.train: summed_dpo_loss with `beta`, the loss type (and the reference, default:
    adapter off) fixed."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    return functools.partial(summed_dpo_loss, beta=beta, ref_model=ref_model, loss_type=loss_type,
                             simpo_gamma=simpo_gamma)
