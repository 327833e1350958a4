"""PPO for language models from scratch: rollouts, the KL-shaped reward, GAE, the clipped losses.

    cfg = PPOConfig(kl_coef=0.05, response_length=24)
    roll = rollout(policy, value_model, reward_model, queries, pad_id=tok.pad_token_id,
                   stop_id=tok.eos_token_id, cfg=cfg)                     # sample, score, shape, GAE
    stats = ppo_update(policy, value_model, optimizer, roll, cfg)           # epochs x minibatches

Four models take part. The policy is the SFT model with a LoRA adapter (the only trained policy
weights); the reference is the same model with the adapter switched off (`set_lora_enabled`), so it
costs no memory; the reward model and the value model are sequence classifiers in transformers'
layout (a backbone under `base_model_prefix` and a `score` head), which is also what TRL needs.

Every convention follows TRL 1.12's PPOTrainer (trl/experimental/ppo/ppo_trainer.py) so that the
same rollout gives the same numbers: left-padded queries, position ids that skip padding, responses
truncated after the first stop token, log-probs of padding set to 1.0, values kept one position past
the last token, the score added at that position, GAE over the whole response width, advantages
whitened over real tokens, and a loss `pg_loss + vf_coef * vf_loss`. Chapter 08 asserts the parity.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ftlab.checks import number, positive_int
from ftlab.data import left_pad
from ftlab.runtime import eval_mode
from ftlab.train import lr_factor
from ftlab.tuners import lora

INVALID_LOGPROB = 1.0  # what padded log-prob positions hold (TRL's value); masks keep it out of every sum


@dataclass
class PPOConfig:
    """PPO settings; the names and defaults are TRL's PPOConfig's, so one dict configures both."""

    kl_coef: float = 0.05  # beta of the per-token KL penalty
    kl_estimator: str = "k1"  # k1: log pi - log pi_ref; k3: (r - 1) - log r with r = pi_ref / pi
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    cliprange: float = 0.2  # epsilon of the policy ratio clip
    cliprange_value: float = 0.2  # how far a new value may move from the rollout's value before clipping
    vf_coef: float = 0.1  # weight of the value loss
    ent_coef: float = 0.0  # entropy bonus (TRL has none: keep 0 for parity)
    temperature: float = 0.7  # sampling temperature; log-probs are computed from logits / temperature
    response_length: int = 24  # new tokens per rollout
    num_ppo_epochs: int = 4  # passes over each rollout
    num_mini_batches: int = 1  # minibatches per pass (one optimizer step each)
    missing_eos_penalty: float | None = None  # subtracted from the score of responses that never stop
    whiten_rewards: bool = False

    def __post_init__(self):
        for name in ("kl_coef", "gamma", "lam", "cliprange", "cliprange_value", "vf_coef", "ent_coef"):
            setattr(self, name, number(name, getattr(self, name), low=0))
        self.temperature = number("temperature", self.temperature, above=0)
        for name in ("response_length", "num_ppo_epochs", "num_mini_batches"):
            setattr(self, name, positive_int(name, getattr(self, name)))
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")


# --- masks and statistics over real tokens ------------------------------------------------------------

def first_true_index(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row; the row length when there is none."""
    width = bools.size(-1)
    positions = torch.arange(width, device=bools.device)
    return torch.where(bools, positions, width).min(dim=-1).values


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum()


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the positions where `mask` is True (unbiased variance, like TRL)."""
    n = mask.sum()
    if n < 2:
        raise ValueError("whitening needs at least two real tokens in the batch (use a larger rollout batch)")
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask) * n / (n - 1)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


# --- model calls on left-padded query + response rows ---------------------------------------------

def _inputs(query_responses: torch.Tensor, pad_id: int) -> dict:
    """Attention mask and position ids that skip padding (left padding in the query, right in the response)."""
    mask = query_responses != pad_id
    return {"input_ids": query_responses.masked_fill(~mask, 0), "attention_mask": mask,
            "position_ids": mask.cumsum(1) - mask.long()}


def policy_logits(policy: nn.Module, query_responses: torch.Tensor, pad_id: int, context_length: int,
                  temperature: float) -> torch.Tensor:
    """Logits that predict each response token, divided by the sampling temperature: (B, T, V)."""
    logits = policy(**_inputs(query_responses, pad_id), return_dict=True).logits
    return logits[:, context_length - 1: -1] / (temperature + 1e-7)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) = z_token - logsumexp(z) per position: (B, T), without materialising log_softmax."""
    return torch.gather(logits, 2, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


def head_outputs(model: nn.Module, query_responses: torch.Tensor, pad_id: int) -> torch.Tensor:
    """A sequence classifier's `score` head applied at every position: (B, L)."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(**_inputs(query_responses, pad_id), return_dict=True, use_cache=False).last_hidden_state
    return model.score(hidden).squeeze(-1)


def sequence_scores(reward_model: nn.Module, query_responses: torch.Tensor, pad_id: int,
                    context_length: int) -> torch.Tensor:
    """The reward model's score at each row's last response token: (B,)."""
    outputs = head_outputs(reward_model, query_responses, pad_id)
    last = first_true_index(query_responses[:, context_length:] == pad_id) - 1 + context_length
    return outputs[torch.arange(len(outputs), device=outputs.device), last]


def token_values(value_model: nn.Module, query_responses: torch.Tensor, pad_id: int,
                 context_length: int) -> torch.Tensor:
    """V(s_t) for each response position t (the state is everything before token t): (B, T)."""
    return head_outputs(value_model, query_responses, pad_id)[:, context_length - 1: -1]


@contextlib.contextmanager
def reference_of(policy: nn.Module):
    """The policy with its LoRA adapter switched off: the frozen SFT model, with no copy of its weights."""
    lora.set_lora_enabled(policy, False)
    try:
        yield policy
    finally:
        lora.set_lora_enabled(policy, True)


# --- sampling -------------------------------------------------------------------------------------

@torch.no_grad()
def generate(policy: nn.Module, queries: torch.Tensor, pad_id: int, stop_id: int | None,
             cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `response_length` tokens per left-padded query: (query_responses, logits / temperature).

    Pure sampling at `temperature` (no top-k, no top-p), like TRL; a row that emits `stop_id` is
    padded after it. The returned logits are those the sampler used, so the rollout's log-probs
    cost no extra forward pass.
    """
    from transformers import GenerationConfig

    gen = GenerationConfig(max_new_tokens=cfg.response_length, temperature=cfg.temperature + 1e-7, top_k=0,
                           top_p=1.0, do_sample=True, eos_token_id=stop_id, pad_token_id=pad_id)
    mask = queries != pad_id
    out = policy.generate(input_ids=queries.masked_fill(~mask, 0), attention_mask=mask, generation_config=gen,
                          return_dict_in_generate=True, output_scores=True)
    responses = out.sequences[:, queries.shape[1]:]
    logits = torch.stack(out.scores, 1)
    if responses.shape[1] < cfg.response_length:  # every row stopped early: pad to the fixed width
        extra = cfg.response_length - responses.shape[1]
        responses = F.pad(responses, (0, extra), value=pad_id)
        logits = F.pad(logits, (0, 0, 0, extra))
    return torch.cat([queries, responses], 1), logits


def truncate_after_stop(responses: torch.Tensor, stop_id: int, pad_id: int) -> torch.Tensor:
    """Replace everything after the first stop token with padding (the stop token itself stays)."""
    stop_at = first_true_index(responses == stop_id).unsqueeze(-1)
    positions = torch.arange(responses.shape[1], device=responses.device)
    return responses.masked_fill(positions > stop_at, pad_id)


# --- the KL-shaped reward and GAE ------------------------------------------------------------------

def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate from one sample. k1 = log pi - log pi_ref; k3 = (r - 1) - log r, r = pi_ref/pi."""
    log_r = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        return log_r.exp() - 1 - log_r
    raise ValueError(f"estimator must be 'k1' or 'k3', got {estimator!r}")


def kl_shaped_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                      last_index: torch.Tensor, kl_coef: float, estimator: str = "k1"):
    """r_t = -beta * KL_t, plus the reward model's score one position after the last token.

    Returns (rewards, kl, non_score_reward), each (B, T). TRL puts the score at `last_index + 1`
    (the first padding position, which the value model still covers), or at `last_index` when the
    response fills the whole width; the discounted sum is the same either way when gamma = 1.
    """
    kl = kl_penalty(logprobs, ref_logprobs, estimator)
    non_score_reward = -kl_coef * kl  # r_t^KL = -beta * (log pi(y_t) - log pi_ref(y_t))
    rewards = non_score_reward.clone()
    width = rewards.shape[1]
    at = torch.where(last_index + 1 < width, last_index + 1, last_index)
    rewards[torch.arange(len(rewards), device=rewards.device), at] += scores  # r_T += r_phi(x, y)
    return rewards, kl, non_score_reward


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation, right to left over the response. Returns (advantages, returns).

        delta_t = r_t + gamma * V_{t+1} - V_t                (V after the last position is 0)
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                                   (the value model's regression target)
    """
    width = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
    return advantages, advantages + values


# --- the losses ------------------------------------------------------------------------------------

def clipped_policy_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float):
    """PPO's clipped surrogate, as a loss to minimise. Returns (loss, clipfrac, approxkl, ratio_mean).

        rho_t = exp(log pi_new - log pi_old)
        L     = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))   (= -min of the objective)
    """
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approxkl = 0.5 * (log_ratio ** 2).mean()  # TRL's estimate of KL(old || new), over every position
    return loss, clipfrac, approxkl, ratio.mean().detach()


def clipped_value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, cliprange_value: float):
    """0.5 * mean max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2). Returns (loss, clipfrac)."""
    clipped_values = torch.clamp(new_values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped_loss = (new_values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - sum softmax(z) z, per position."""
    return torch.logsumexp(logits, -1) - (logits.softmax(-1) * logits).sum(-1)


# --- a rollout: everything one PPO update needs ------------------------------------------------------

@dataclass
class Rollout:
    queries: torch.Tensor  # (B, Q) left-padded prompt ids
    responses: torch.Tensor  # (B, T) sampled ids, as generated (padding after a stop token)
    logprobs: torch.Tensor  # (B, T) log pi_old(y_t), INVALID_LOGPROB after the last token
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref(y_t)
    values: torch.Tensor  # (B, T) V_old(s_t), 0 beyond last + 1
    scores: torch.Tensor  # (B,) reward model score (minus the missing-EOS penalty)
    padding_mask: torch.Tensor  # (B, T) True after the last token
    padding_mask_p1: torch.Tensor  # (B, T) True after last + 1 (the value's extra position)
    rewards: torch.Tensor  # (B, T) KL-shaped rewards
    kl: torch.Tensor  # (B, T) per-token KL estimate
    non_score_reward: torch.Tensor  # (B, T) -beta * kl
    advantages: torch.Tensor  # (B, T) whitened GAE advantages, 0 on padding
    returns: torch.Tensor  # (B, T) A + V, before whitening
    contain_eos: torch.Tensor  # (B,) did the response stop by itself

    @property
    def query_responses(self) -> torch.Tensor:
        return torch.cat([self.queries, self.responses], 1)

    @property
    def response_lengths(self) -> torch.Tensor:
        return (~self.padding_mask).sum(1)


@torch.no_grad()
def score_rollout(policy: nn.Module, value_model: nn.Module, reward_model: nn.Module, queries: torch.Tensor,
                  query_responses: torch.Tensor, gen_logits: torch.Tensor, *, pad_id: int, stop_id: int | None,
                  cfg: PPOConfig, ref_model: nn.Module | None = None) -> Rollout:
    """Log-probs, reference log-probs, values, scores, shaped rewards and advantages of sampled responses.

    `gen_logits` are the sampler's logits / temperature for the response tokens; `ref_model=None`
    means the policy with its adapter switched off.
    """
    context_length = queries.shape[1]
    responses = query_responses[:, context_length:]
    logprobs = token_logprobs(gen_logits, responses)
    with (contextlib.nullcontext(ref_model) if ref_model is not None else reference_of(policy)) as ref:
        ref_logprobs = token_logprobs(policy_logits(ref, query_responses, pad_id, context_length, cfg.temperature),
                                      responses)
    finished = truncate_after_stop(responses, stop_id, pad_id) if stop_id is not None else responses
    last_index = first_true_index(finished == pad_id) - 1  # index of the last real response token
    values = token_values(value_model, query_responses, pad_id, context_length)
    scores = sequence_scores(reward_model, torch.cat([queries, finished], 1), pad_id, context_length)
    contain_eos = (finished == stop_id).any(-1) if stop_id is not None else torch.zeros_like(scores, dtype=torch.bool)
    if cfg.missing_eos_penalty is not None:
        scores = scores - cfg.missing_eos_penalty * (~contain_eos).float()  # no reward for never finishing

    positions = torch.arange(responses.shape[1], device=responses.device)
    padding_mask = positions > last_index.unsqueeze(1)
    padding_mask_p1 = positions > (last_index + 1).unsqueeze(1)
    logprobs = logprobs.masked_fill(padding_mask, INVALID_LOGPROB)
    ref_logprobs = ref_logprobs.masked_fill(padding_mask, INVALID_LOGPROB)
    values = values.masked_fill(padding_mask_p1, 0)

    rewards, kl, non_score_reward = kl_shaped_rewards(logprobs, ref_logprobs, scores, last_index, cfg.kl_coef,
                                                      cfg.kl_estimator)
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, ~padding_mask_p1, shift_mean=False).masked_fill(padding_mask_p1, 0)
    advantages, returns = gae(rewards, values, cfg.gamma, cfg.lam)
    advantages = masked_whiten(advantages, ~padding_mask).masked_fill(padding_mask, 0)
    return Rollout(queries, responses, logprobs, ref_logprobs, values, scores, padding_mask, padding_mask_p1,
                   rewards, kl, non_score_reward, advantages, returns, contain_eos)


def rollout(policy: nn.Module, value_model: nn.Module, reward_model: nn.Module, queries: torch.Tensor, *,
            pad_id: int, stop_id: int | None, cfg: PPOConfig, ref_model: nn.Module | None = None) -> Rollout:
    """Sample responses to `queries` and score them (see `score_rollout`)."""
    if queries.dim() != 2 or queries.shape[0] < 1:
        raise ValueError(f"queries must be a (batch, length) tensor of left-padded ids, "
                         f"got shape {tuple(queries.shape)}")
    if stop_id is not None and stop_id == pad_id:
        raise ValueError("stop_id equals pad_id: the end of a response could not be told from padding "
                         "(use a tokenizer whose pad token differs from its end-of-turn token)")
    with eval_mode(policy):  # no dropout while sampling
        query_responses, gen_logits = generate(policy, queries, pad_id, stop_id, cfg)
    return score_rollout(policy, value_model, reward_model, queries, query_responses, gen_logits, pad_id=pad_id,
                         stop_id=stop_id, cfg=cfg, ref_model=ref_model)


# --- the update ----------------------------------------------------------------------------------

def ppo_losses(policy: nn.Module, value_model: nn.Module, roll: Rollout, rows, *, pad_id: int, cfg: PPOConfig):
    """Policy and value losses of the current models on rows `rows` of a rollout (one minibatch)."""
    context_length = roll.queries.shape[1]
    query_responses = roll.query_responses[rows]
    logits = policy_logits(policy, query_responses, pad_id, context_length, cfg.temperature)
    new_logprobs = token_logprobs(logits, roll.responses[rows]).masked_fill(roll.padding_mask[rows], INVALID_LOGPROB)
    new_values = token_values(value_model, query_responses, pad_id, context_length)
    new_values = new_values.masked_fill(roll.padding_mask_p1[rows], 0)
    pg_loss, pg_clipfrac, approxkl, ratio = clipped_policy_loss(new_logprobs, roll.logprobs[rows],
                                                                roll.advantages[rows], ~roll.padding_mask[rows],
                                                                cfg.cliprange)
    vf_loss, vf_clipfrac = clipped_value_loss(new_values, roll.values[rows], roll.returns[rows],
                                              ~roll.padding_mask_p1[rows], cfg.cliprange_value)
    ent = masked_mean(entropy(logits), ~roll.padding_mask[rows])
    loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * ent  # L = L_clip + c_v L_V - c_e H
    stats = {"pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach(), "pg_clipfrac": pg_clipfrac,
             "vf_clipfrac": vf_clipfrac, "approxkl": approxkl, "ratio": ratio, "entropy": ent.detach()}
    return loss, stats


def ppo_update(policy: nn.Module, value_model: nn.Module, optimizer: torch.optim.Optimizer, roll: Rollout, *,
               pad_id: int, cfg: PPOConfig, generator: torch.Generator | None = None) -> dict:
    """`num_ppo_epochs` passes over the rollout, each in `num_mini_batches` shuffled minibatches; one
    optimizer step per minibatch. Returns the per-step statistics averaged, under TRL's metric names."""
    n = len(roll.queries)
    if n % cfg.num_mini_batches:
        raise ValueError(f"the rollout batch ({n}) must be a multiple of num_mini_batches ({cfg.num_mini_batches})")
    size = n // cfg.num_mini_batches
    policy.train(), value_model.train()
    collected = []
    for _ in range(cfg.num_ppo_epochs):
        order = torch.randperm(n, generator=generator).to(roll.queries.device)
        for start in range(0, n, size):
            loss, stats = ppo_losses(policy, value_model, roll, order[start: start + size], pad_id=pad_id, cfg=cfg)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            collected.append(stats)
    policy.eval(), value_model.eval()
    mean = {k: torch.stack([s[k] for s in collected]).mean().item() for k in collected[0]}
    return {"policy/approxkl_avg": mean["approxkl"], "policy/clipfrac_avg": mean["pg_clipfrac"],
            "loss/policy_avg": mean["pg_loss"], "loss/value_avg": mean["vf_loss"],
            "val/clipfrac_avg": mean["vf_clipfrac"], "policy/entropy_avg": mean["entropy"], "val/ratio": mean["ratio"]}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the positions in `mask`: 1 for a critic that predicts every
    return, 0 for one no better than the mean, negative for one worse than that (nan when the returns are constant)."""
    target, error = returns[mask], (returns - values)[mask]
    spread = target.var(unbiased=False)
    return float("nan") if spread == 0 else (1 - error.var(unbiased=False) / spread).item()


def rollout_metrics(roll: Rollout) -> dict:
    """The rollout's numbers under TRL's names (objective/kl is the summed per-token KL, averaged over rows), and
    the critic's explained variance on the rollout it is about to train on (`val/explained_variance`, not TRL's)."""
    non_score = roll.non_score_reward.sum(1).mean()
    return {"objective/kl": roll.kl.sum(1).mean().item(), "objective/scores": roll.scores.mean().item(),
            "objective/non_score_reward": non_score.item(),
            "objective/rlhf_reward": (non_score + roll.scores.mean()).item(),
            "objective/entropy": ((-roll.logprobs) * (~roll.padding_mask)).sum(1).mean().item(),
            "val/num_eos_tokens": int(roll.contain_eos.sum()),
            "val/explained_variance": explained_variance(roll.values, roll.returns, ~roll.padding_mask_p1),
            "response_length": roll.response_lengths.float().mean().item()}


def train_ppo(policy: nn.Module, value_model: nn.Module, reward_model: nn.Module, prompts: list[torch.Tensor], *,
              pad_id: int, stop_id: int | None, cfg: PPOConfig, updates: int, batch_size: int, lr: float,
              seed: int = 0, ref_model: nn.Module | None = None, progress: bool = False,
              on_rollout: Callable[[Rollout], dict] | None = None) -> list[dict]:
    """The PPO loop: rollout, update, log; AdamW over the trainable weights of policy and value model with
    a learning rate decaying linearly to zero over `updates` (TRL's defaults). Returns one dict per update,
    with `samples` (responses sampled so far) and `seconds` (training time so far, `on_rollout` excluded).

    `prompts`: token-id tensors (one per prompt), drawn `batch_size` at a time in a shuffled order.
    `on_rollout(roll)` may return more numbers for the update's entry (chapter 08's gold judge of the samples).
    """
    if updates < 1 or batch_size < 1:
        raise ValueError(f"updates and batch_size must be positive, got updates={updates}, batch_size={batch_size}")
    if len(prompts) < batch_size:
        raise ValueError(f"prompts has {len(prompts)} prompts, fewer than batch_size={batch_size}")
    params = [p for m in (policy, value_model) for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("policy and value_model have no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, warmup=0, total=updates))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(prompts), generator=generator).tolist()
    history = []
    steps = range(updates)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="PPO updates")
    seconds = 0.0
    for update in steps:
        start = time.perf_counter()
        rows = [order[(update * batch_size + i) % len(order)] for i in range(batch_size)]
        queries = left_pad([prompts[i] for i in rows], pad_id).to(next(policy.parameters()).device)
        roll = rollout(policy, value_model, reward_model, queries, pad_id=pad_id, stop_id=stop_id, cfg=cfg,
                       ref_model=ref_model)
        stats = ppo_update(policy, value_model, optimizer, roll, pad_id=pad_id, cfg=cfg, generator=generator)
        seconds += time.perf_counter() - start
        extra = on_rollout(roll) if on_rollout is not None else {}
        history.append({"update": update + 1, **rollout_metrics(roll), **stats, "lr": schedule.get_last_lr()[0],
                        "samples": (update + 1) * batch_size, "seconds": seconds, **extra})
        schedule.step()
    return history
