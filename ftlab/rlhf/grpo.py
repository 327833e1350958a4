"""GRPO and RLOO from scratch: policy gradients with a group baseline instead of a critic.

    cfg = GRPOConfig(num_generations=4, response_length=8, beta=0.04)          # estimator="rloo" for RLOO
    roll = sample_groups(policy, rule, prompts, pad_id=tok.pad_token_id, stop_id=tok.eos_token_id, cfg=cfg)
    stats = update(policy, optimizer, roll, pad_id=tok.pad_token_id, cfg=cfg)  # num_iterations steps
    history = train_grpo(policy, rule, prompts, pad_id=..., stop_id=..., cfg=cfg, updates=8,
                         prompts_per_update=3, lr=5e-3)

Each prompt is answered `num_generations` (G) times; the G completions form a group and each is judged
against its siblings, so no value model is trained. Two estimators share the sampling and scoring:

  GRPO (Shao et al. 2024)   A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4), given to every token of
                            completion i; PPO's clipped ratio per token; the KL to the reference is a loss term
                            beta * k3 per token; the loss is averaged over each completion's tokens, then over
                            completions (loss_type="grpo"), or over all tokens of the batch ("dapo").
  RLOO (Ahmadian et al. 2024)   r_i = score_i - beta * sum_t (log pi_old - log pi_ref) (the KL in the reward),
                            A_i = r_i - mean of the other G - 1 rewards; one clipped ratio per completion
                            (the ratio of the summed log-probs); the loss is the mean over completions.

Every convention follows TRL 1.12's GRPOTrainer and RLOOTrainer (trl/trainer/grpo_trainer.py,
rloo_trainer.py) so that the same completions give the same numbers: the unbiased group std, the 1e-4,
log-probs from logits divided by the sampling temperature, completions cut after the first stop token
(which stays), the reference as the policy with its LoRA adapter switched off. One difference is
deliberate: like `ppo`, the forward passes give left-padded prompts position ids that skip the padding
(what generation used); TRL's loss passes none, so with prompts of unequal length its positions are
shifted. `compare.trl.group_parity` therefore takes prompts of one length, where the two agree.
The sampler, log-probs, reward-model call and k3 estimator are `ppo`'s.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ftlab.checks import number, positive_int
from ftlab.data import left_pad
from ftlab.rlhf import ppo
from ftlab.runtime import eval_mode
from ftlab.train import lr_factor

STD_EPS = 1e-4  # added to the group std before dividing (TRL's value): a group of equal rewards gives 0, not NaN


@dataclass
class GRPOConfig:
    """Settings of GRPO and RLOO. Names follow TRL's GRPOConfig where it has one; `response_length` and
    `temperature` are ppo.PPOConfig's, because the sampler is ppo.generate."""

    estimator: str = "grpo"  # "grpo": group-standardised advantages, per-token ratio; "rloo": leave-one-out
    num_generations: int = 8  # G, completions per prompt
    response_length: int = 16  # new tokens per completion (TRL: max_completion_length)
    temperature: float = 1.0  # sampling temperature; log-probs use logits / temperature
    beta: float = 0.04  # KL coefficient (DeepSeekMath's 0.04; TRL's GRPO default 0 drops the reference)
    epsilon: float = 0.2  # clip range of the ratio
    num_iterations: int = 1  # mu: optimizer steps on one batch of groups
    scale_rewards: str = "group"  # GRPO: divide by the std of the "group", of the "batch", or "none" (Dr. GRPO)
    loss_type: str = "grpo"  # GRPO: "grpo" mean per completion then over completions; "dapo" mean over all tokens
    max_grad_norm: float | None = 1.0  # gradient clipping in train_grpo (TRL's default); None: no clipping

    def __post_init__(self):
        if self.estimator not in ("grpo", "rloo"):
            raise ValueError(f"estimator must be 'grpo' or 'rloo', got {self.estimator!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {self.scale_rewards!r}")
        if self.loss_type not in ("grpo", "dapo"):
            raise ValueError(f"loss_type must be 'grpo' or 'dapo', got {self.loss_type!r}")
        self.num_generations = positive_int("num_generations", self.num_generations)
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be at least 2 (a group baseline needs siblings), "
                             f"got {self.num_generations}")
        for name in ("response_length", "num_iterations"):
            setattr(self, name, positive_int(name, getattr(self, name)))
        self.temperature = number("temperature", self.temperature, above=0)
        self.beta = number("beta", self.beta, low=0)
        self.epsilon = number("epsilon", self.epsilon, above=0)
        if self.max_grad_norm is not None:
            self.max_grad_norm = number("max_grad_norm", self.max_grad_norm, above=0)


# --- advantages from a group of rewards ------------------------------------------------------------

def _groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(N,) rewards, each prompt's G completions consecutive -> (N / G, G)."""
    if rewards.dim() != 1 or len(rewards) % num_generations or num_generations < 2:
        raise ValueError(f"rewards must be one value per completion, G = {num_generations} >= 2 per prompt in a row; "
                         f"got shape {tuple(rewards.shape)}")
    return rewards.view(-1, num_generations)


def group_advantages(rewards: torch.Tensor, num_generations: int, scale: str = "group") -> torch.Tensor:
    """GRPO's advantages: A_i = (r_i - mean_group) / (std + 1e-4), std of the group, of the batch, or 1 ("none")."""
    grouped = _groups(rewards, num_generations)
    centred = (grouped - grouped.mean(1, keepdim=True)).flatten()  # r_i - mean(r_1..r_G)
    if scale == "none":  # Dr. GRPO: no division, so near-uniform groups are not blown up
        return centred
    if scale == "group":
        std = grouped.std(1, keepdim=True).expand_as(grouped).flatten()  # unbiased (G - 1), as TRL
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return centred / (std + STD_EPS)


def rloo_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """RLOO's advantages: A_i = r_i - (sum_j r_j - r_i) / (G - 1), the mean of the other completions."""
    grouped = _groups(rewards, num_generations)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (num_generations - 1)
    return (grouped - baseline).flatten()


# --- the losses ------------------------------------------------------------------------------------

def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, *, epsilon: float, beta: float, loss_type: str = "grpo"):
    """GRPO's loss on (N, T) per-token log-probs. Returns (loss, stats).

        rho_t = exp(log pi - log pi_old)
        l_t   = -min(rho_t A_i, clip(rho_t, 1 - eps, 1 + eps) A_i) + beta * k3_t,
        k3_t  = pi_ref / pi - log(pi_ref / pi) - 1                        (>= 0; with the gradient of log pi)
        loss  = mean_i (sum_t l_t m_t / sum_t m_t)            loss_type "grpo"
              = sum_{i,t} l_t m_t / sum_{i,t} m_t              loss_type "dapo"
    """
    mask = mask.float()
    adv = advantages.unsqueeze(1)
    ratio = (logprobs - old_logprobs).exp()
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * adv, clipped * adv)
    stats = {}
    if beta:
        kl = ppo.kl_penalty(logprobs, ref_logprobs, "k3")
        per_token = per_token + beta * kl
        stats["kl"] = ((kl * mask).sum() / mask.sum()).detach()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        raise ValueError(f"loss_type must be 'grpo' or 'dapo', got {loss_type!r}")
    with torch.no_grad():  # the share of tokens whose ratio left the band in the direction the advantage pushes
        clip = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
        stats["clip_ratio/region_mean"] = (clip.float() * mask).sum() / mask.sum()
    return loss, stats


def rloo_loss(seq_logprobs: torch.Tensor, old_seq_logprobs: torch.Tensor, advantages: torch.Tensor, *,
              epsilon: float):
    """RLOO's loss on (N,) summed log-probs: one ratio per completion. Returns (loss, stats).

        rho_i = exp(log pi(y_i|x) - log pi_old(y_i|x)),   loss = mean_i -min(rho_i A_i, clip(rho_i) A_i)
    """
    ratio = (seq_logprobs - old_seq_logprobs).exp()
    loss = -torch.min(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages).mean()
    with torch.no_grad():
        clip = ((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + epsilon) & (advantages > 0))
    return loss, {"clip_ratio/region_mean": clip.float().mean()}


# --- sampling and scoring groups --------------------------------------------------------------------

@dataclass
class GroupRollout:
    queries: torch.Tensor  # (N, Q) left-padded prompt ids, each prompt G times in a row
    responses: torch.Tensor  # (N, T) completions, padding after the first stop token (which stays)
    mask: torch.Tensor  # (N, T) True on completion tokens
    old_logprobs: torch.Tensor  # (N, T) log pi_old per token (the policy that sampled)
    ref_logprobs: torch.Tensor | None  # (N, T) log pi_ref per token; None when beta = 0
    scores: torch.Tensor  # (N,) the reward model's (or rule's) score
    rewards: torch.Tensor  # (N,) what the baseline compares: scores, minus beta * KL for RLOO
    advantages: torch.Tensor  # (N,) one per completion

    @property
    def query_responses(self) -> torch.Tensor:
        return torch.cat([self.queries, self.responses], 1)


def completion_logprobs(model: nn.Module, query_responses: torch.Tensor, pad_id: int, context_length: int,
                        temperature: float) -> torch.Tensor:
    """log pi(y_t | x, y_<t) for each completion position, from logits / temperature: (N, T)."""
    logits = ppo.policy_logits(model, query_responses, pad_id, context_length, temperature)
    return ppo.token_logprobs(logits, query_responses[:, context_length:])


@torch.no_grad()
def score_groups(policy: nn.Module, reward_model: nn.Module, queries: torch.Tensor, query_responses: torch.Tensor, *,
                 pad_id: int, stop_id: int | None, cfg: GRPOConfig) -> GroupRollout:
    """Everything one update needs from sampled groups: masks, old and reference log-probs, scores, advantages.

    `reward_model` is a sequence classifier in transformers' layout (or `verifiable.KeywordReward`), scored at
    each completion's last token as in `ppo`.
    """
    context_length = queries.shape[1]
    responses = query_responses[:, context_length:]
    if stop_id is not None:
        responses = ppo.truncate_after_stop(responses, stop_id, pad_id)
    last_index = ppo.first_true_index(responses == pad_id) - 1
    mask = torch.arange(responses.shape[1], device=responses.device) <= last_index.unsqueeze(1)
    query_responses = torch.cat([queries, responses], 1)
    with eval_mode(policy):
        old = completion_logprobs(policy, query_responses, pad_id, context_length, cfg.temperature)
        ref = None
        if cfg.beta:
            with ppo.reference_of(policy):
                ref = completion_logprobs(policy, query_responses, pad_id, context_length, cfg.temperature)
    scores = ppo.sequence_scores(reward_model, query_responses, pad_id, context_length)
    if cfg.estimator == "rloo":
        rewards = scores - cfg.beta * ((old - ref) * mask).sum(1) if cfg.beta else scores  # k1 KL, summed
        advantages = rloo_advantages(rewards, cfg.num_generations)
    else:
        rewards = scores
        advantages = group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)
    return GroupRollout(queries, responses, mask, old, ref, scores, rewards, advantages)


def sample_groups(policy: nn.Module, reward_model: nn.Module, prompts: list, *, pad_id: int, stop_id: int | None,
                  cfg: GRPOConfig) -> GroupRollout:
    """Sample G completions for each prompt (token-id lists or tensors) and score them (`score_groups`)."""
    if not prompts:
        raise ValueError("prompts is empty")
    if stop_id is not None and stop_id == pad_id:
        raise ValueError("stop_id equals pad_id: the end of a completion could not be told from padding")
    queries = left_pad([p for p in prompts for _ in range(cfg.num_generations)], pad_id)
    queries = queries.to(next(policy.parameters()).device)
    with eval_mode(policy):  # no dropout while sampling
        query_responses, _ = ppo.generate(policy, queries, pad_id, stop_id, cfg)
    return score_groups(policy, reward_model, queries, query_responses, pad_id=pad_id, stop_id=stop_id, cfg=cfg)


# --- the update and the loop -------------------------------------------------------------------------

def group_loss(policy: nn.Module, roll: GroupRollout, *, pad_id: int, cfg: GRPOConfig):
    """The current policy's loss on a batch of groups (GRPO's or RLOO's, by cfg.estimator). Returns (loss, stats)."""
    logprobs = completion_logprobs(policy, roll.query_responses, pad_id, roll.queries.shape[1], cfg.temperature)
    if cfg.estimator == "rloo":
        seq, old_seq = (logprobs * roll.mask).sum(1), (roll.old_logprobs * roll.mask).sum(1)
        return rloo_loss(seq, old_seq, roll.advantages, epsilon=cfg.epsilon)
    return grpo_loss(logprobs, roll.old_logprobs, roll.ref_logprobs, roll.advantages, roll.mask,
                     epsilon=cfg.epsilon, beta=cfg.beta, loss_type=cfg.loss_type)


def update(policy: nn.Module, optimizer: torch.optim.Optimizer, roll: GroupRollout, *, pad_id: int,
           cfg: GRPOConfig) -> dict:
    """`num_iterations` optimizer steps on the whole batch of groups; returns the mean loss and statistics."""
    params = [p for p in policy.parameters() if p.requires_grad]
    collected = []
    policy.train()
    try:
        for _ in range(cfg.num_iterations):
            loss, stats = group_loss(policy, roll, pad_id=pad_id, cfg=cfg)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            collected.append({"loss": loss.detach(), **stats})
    finally:
        policy.eval()
    return {k: torch.stack([s[k] for s in collected]).mean().item() for k in collected[0]}


def group_metrics(roll: GroupRollout, num_generations: int) -> dict:
    """The batch's numbers under TRL's names: reward (mean score), reward_std, frac_reward_zero_std (the share of
    groups whose completions all scored the same, which teach nothing), completions/mean_length."""
    grouped = _groups(roll.scores, num_generations)
    return {"reward": roll.scores.mean().item(), "reward_std": roll.scores.std().item(),
            "frac_reward_zero_std": (grouped.std(1) == 0).float().mean().item(),
            "completions/mean_length": roll.mask.sum(1).float().mean().item()}


def train_grpo(policy: nn.Module, reward_model: nn.Module, prompts: list, *, pad_id: int, stop_id: int | None,
               cfg: GRPOConfig, updates: int, prompts_per_update: int, lr: float, seed: int = 0,
               progress: bool = False, on_rollout: Callable[[GroupRollout], dict] | None = None) -> list[dict]:
    """The loop: sample groups, update, log; AdamW on the policy's trainable weights (no weight decay), the learning
    rate decaying linearly to 0 over `updates` (TRL's defaults). Each update samples prompts_per_update x G
    completions, prompts drawn in a shuffled order. Returns one dict per update, with `samples` (completions so
    far) and `seconds` (training time so far, `on_rollout` excluded); `on_rollout(roll)` may add numbers."""
    updates = positive_int("updates", updates)
    prompts_per_update = positive_int("prompts_per_update", prompts_per_update)
    if len(prompts) < prompts_per_update:
        raise ValueError(f"prompts has {len(prompts)} prompts, fewer than prompts_per_update={prompts_per_update}")
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("policy has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, warmup=0, total=updates))
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
    torch.manual_seed(seed)  # the sampler draws from the global generator
    steps = range(updates)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{cfg.estimator.upper()} updates")
    history, seconds = [], 0.0
    for step in steps:
        start = time.perf_counter()
        rows = [order[(step * prompts_per_update + i) % len(order)] for i in range(prompts_per_update)]
        roll = sample_groups(policy, reward_model, [prompts[i] for i in rows], pad_id=pad_id, stop_id=stop_id, cfg=cfg)
        stats = update(policy, optimizer, roll, pad_id=pad_id, cfg=cfg)
        seconds += time.perf_counter() - start
        extra = on_rollout(roll) if on_rollout is not None else {}
        history.append({"update": step + 1, **group_metrics(roll, cfg.num_generations), **stats,
                        "lr": schedule.get_last_lr()[0], "seconds": seconds, **extra,
                        "samples": (step + 1) * prompts_per_update * cfg.num_generations})
        schedule.step()
    return history
