"""TRL's trainers set up to compute what ours compute, and the checks that they do.

    trainer = sft_trainer(peft_model, tok, rows, cfg, max_length=256, output_dir=tmp)      # chapter 06
    trainer = dpo_trainer(base, tok, rows, target_modules=["q_proj"], r=8, alpha=16, beta=0.1, output_dir=tmp)
    dpo_parity(policy, trainer, rows[:4], beta=0.1)    # the same tokens, then the same loss
    ppo_parity(cfg, policy, peft_policy, value_model, reward_model, tok, prompts, responses, logits, ...)
    trainer = group_trainer(grpo_cfg, base, tok, prompts, rule, ..., updates=1, sgd=True)   # GRPO or RLOO
    group_parity(grpo_cfg, policy, trainer, rule, tok, query_responses, lr=0.5)

SFT: the trainer reads the same rows in the same order with the same settings, so step for step the
losses agree. DPO: the same batch gives the same loss (`dpo_parity`, also for loss_type "ipo"; `simpo_parity`
for SimPO); each side shuffles its own way.
PPO: TRL's `PPOTrainer.train()` computes everything inline, so `fixed_rollout` feeds it our sampled
responses and records what its helpers return; `ppo_parity` compares every intermediate tensor and the
weights after one SGD step. GRPO / RLOO: `fixed_groups` hands GRPOTrainer or RLOOTrainer our completions and
records the batch it scores; `group_parity` compares advantages, log-probs, the loss and the weights after one
SGD step. TRL is imported inside the functions (it takes seconds).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from ftlab import data
from ftlab.compare.peft import lora_weight_pairs
from ftlab.data import left_pad
from ftlab.losses import count_targets
from ftlab.rlhf import dpo, grpo, ppo
from ftlab.train import TrainConfig, batch_indices

# --- SFTTrainer (chapter 06) ------------------------------------------------------------------------------

def prompt_completion(rows: list[dict]) -> list[dict]:
    """Course instruction rows -> TRL's conversational prompt-completion format."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows]


def training_order(n_rows: int, config: TrainConfig) -> list[int]:
    """The row indices ftlab.train visits, step by step, so TRL can read the same rows in the same order."""
    return [i for step in range(config.steps)
            for i in batch_indices(step, config.batch_size, n_rows, config.seed, config.shuffle)]


_HF_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def sft_trainer(model, tokenizer, rows: list[dict], config: TrainConfig, max_length: int, output_dir: str):
    """An `SFTTrainer` that trains on exactly what `ftlab.train.train(model, rows, config, collate=ChatCollator)`
    trains on: the same rows in the same order, the same micro-batches, token-weighted accumulation,
    AdamW (eps 1e-8, betas 0.9/0.999, no decay unless asked), warmup + schedule, clipping, no dropout
    added, no padding-free or packing, completion-only loss, no gradient checkpointing."""
    import datasets
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    if config.schedule not in _HF_SCHEDULES:
        raise ValueError(f"config.schedule={config.schedule!r} has no TRL equivalent here; "
                         f"use {', '.join(_HF_SCHEDULES)}")
    micro = config.micro_batch_size or config.batch_size
    if config.batch_size % micro:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of micro_batch_size {micro} for TRL")
    ordered = [rows[i] for i in training_order(len(rows), config)]
    datasets.disable_progress_bars()  # per-row tokenizing bars are noise in a lesson
    args = SFTConfig(
        output_dir=output_dir, use_cpu=next(model.parameters()).device.type == "cpu", bf16=False,
        report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=1, seed=config.seed,
        max_steps=config.steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=config.batch_size // micro,
        learning_rate=config.lr, weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        lr_scheduler_type=_HF_SCHEDULES[config.schedule], max_grad_norm=config.max_grad_norm or 0.0,
        train_sampling_strategy="sequential",  # `ordered` is already in ftlab.train's order
        gradient_checkpointing=False, packing=False, padding_free=False, completion_only_loss=True,
        max_length=max_length, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.as_hf_dataset(prompt_completion(ordered)),
                         processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # the loss log stays in trainer.state.log_history (logged_losses)
    return trainer


def logged_losses(trainer) -> list[float]:
    """The per-step training losses in an SFTTrainer's log (logging_steps=1)."""
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


# --- DPOTrainer (chapter 08) ------------------------------------------------------------------------------


def preference_conversations(rows: list[dict]) -> list[dict]:
    """Course preference rows -> TRL's conversational preference format (prompt, chosen, rejected messages)."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]


def dpo_trainer(base: nn.Module, tokenizer, rows: list[dict], *, target_modules, r: int, alpha: float, beta: float,
                output_dir: str, batch_size: int = 8, steps: int = -1, lr: float = 1e-6, seed: int = 0,
                loss_type: str = "sigmoid"):
    """A DPOTrainer on `rows` whose policy is `base` plus a fresh peft LoRA adapter (dropout 0) and whose
    reference is that adapter switched off, as ours; `loss_type` is DPOConfig's ("sigmoid" DPO, "ipo", ...).
    Logs every step to trainer.state.log_history (not to the screen); no checkpoints, no reporting."""
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=output_dir, use_cpu=next(base.parameters()).device.type == "cpu", bf16=False,
                     report_to="none", beta=beta, per_device_train_batch_size=batch_size, max_steps=steps,
                     learning_rate=lr, logging_steps=1, save_strategy="no", max_length=None, seed=seed,
                     disable_tqdm=True, loss_type=[loss_type])
    peft_config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=base, args=args, train_dataset=data.as_hf_dataset(preference_conversations(rows)),
                         processing_class=tokenizer, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    return trainer


def dpo_parity(policy: nn.Module, trainer, rows: list[dict], beta: float, loss_type: str = "sigmoid") -> dict:
    """Our DPO loss and DPOTrainer's on the first len(rows) rows of its dataset (which must be `rows`), with the
    trainer's loss type ("sigmoid" or "ipo": ours is dpo.summed_dpo_loss with the same `loss_type`).

    Both sides must see the same token ids (checked, ValueError otherwise). Returns ours (the mean over the
    pairs of each number summed_dpo_loss sums: loss, rewards/*, logps/*), trl (its loss) and
    loss_abs = |ours - trl|.
    """
    device = next(policy.parameters()).device
    theirs_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    ours_batch = dpo.StackedPairCollator(trainer.processing_class)(rows)
    if not torch.equal(theirs_batch["input_ids"], ours_batch["input_ids"]):
        raise ValueError("DPOTrainer tokenized these rows differently from StackedPairCollator: not the same pairs?")
    if trainer.loss_types != [loss_type]:
        raise ValueError(f"the trainer computes {trainer.loss_types}, not [{loss_type!r}]: "
                         "build it with that loss_type")
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, {k: v.to(device) for k, v in theirs_batch.items()}).item()
        sums = dpo.summed_dpo_loss(policy, {k: v.to(device) for k, v in ours_batch.items()}, beta, loss_type=loss_type)
    pairs = count_targets(ours_batch["labels"])  # what ftlab.train divides by
    ours = {name: float(value) / pairs for name, value in sums.items()}
    return {"ours": ours, "trl": trl_loss, "loss_abs": abs(ours["loss"] - trl_loss)}


def simpo_parity(policy: nn.Module, tokenizer, rows: list[dict], beta: float, gamma: float) -> dict:
    """Our SimPO loss and TRL's on the same batch of `rows`. TRL's SimPO lives in the experimental CPOTrainer
    (loss_type="simpo", cpo_alpha=0), whose data pipeline is a separate legacy one; this runs its own per-token
    averaging (`CPOTrainer.get_batch_logps`) and its loss (`CPOTrainer.cpo_loss`) on our batch's logits.
    Returns ours (the mean loss), trl and loss_abs = |ours - trl|."""
    from types import SimpleNamespace

    from trl.experimental.cpo import CPOTrainer

    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in dpo.StackedPairCollator(tokenizer)(rows).items()}
    with torch.no_grad():
        ours = float(dpo.summed_dpo_loss(policy, batch, beta, loss_type="simpo", simpo_gamma=gamma)["loss"]) / len(rows)
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        avg = CPOTrainer.get_batch_logps(logits, batch["reply_labels"].clone(), average_log_prob=True)
        settings = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta, label_smoothing=0.0,
                                   accelerator=SimpleNamespace(device=device))  # what cpo_loss reads from self
        losses, _, _ = CPOTrainer.cpo_loss(settings, *avg.chunk(2))
    trl = losses.mean().item()
    return {"ours": ours, "trl": trl, "loss_abs": abs(ours - trl)}


# --- PPOTrainer (chapter 08) ------------------------------------------------------------------------------

def ppo_config(cfg: ppo.PPOConfig, *, batch_size: int, updates: int, lr: float, output_dir: str, seed: int = 0,
               **extra):
    """TRL's PPOConfig with the same settings as `cfg` (CPU-safe: use_cpu unless CUDA, no bf16, no reporting)."""
    from trl.experimental.ppo import PPOConfig as TRLPPOConfig

    if cfg.ent_coef:
        raise ValueError("TRL's PPOTrainer has no entropy bonus: set ent_coef=0 to compare with it")
    return TRLPPOConfig(
        output_dir=output_dir, use_cpu=not torch.cuda.is_available(), bf16=False, report_to="none", seed=seed,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        local_rollout_forward_batch_size=batch_size,
        num_mini_batches=cfg.num_mini_batches, num_ppo_epochs=cfg.num_ppo_epochs, total_episodes=batch_size * updates,
        response_length=cfg.response_length, temperature=cfg.temperature, kl_coef=cfg.kl_coef,
        kl_estimator=cfg.kl_estimator, gamma=cfg.gamma, lam=cfg.lam, cliprange=cfg.cliprange,
        cliprange_value=cfg.cliprange_value, vf_coef=cfg.vf_coef, whiten_rewards=cfg.whiten_rewards,
        missing_eos_penalty=cfg.missing_eos_penalty, stop_token="eos", learning_rate=lr, num_sample_generations=0,
        save_strategy="no", logging_steps=1, disable_tqdm=True, **extra)


def ppo_trainer(cfg: ppo.PPOConfig, peft_policy, value_model, reward_model, tokenizer, prompts: list, *,
                batch_size: int, updates: int, lr: float, output_dir: str, seed: int = 0, optimizers=(None, None)):
    """A TRL PPOTrainer over `prompts` (id lists), with the adapter-disabled policy as its reference."""
    from transformers import DataCollatorWithPadding
    from trl.experimental.ppo import PPOTrainer

    if tokenizer.padding_side != "left":
        raise ValueError("tokenizer.padding_side must be 'left' for PPO (queries are continued on the right)")
    dataset = data.as_hf_dataset([{"input_ids": list(map(int, p))} for p in prompts])
    args = ppo_config(cfg, batch_size=batch_size, updates=updates, lr=lr, output_dir=output_dir, seed=seed)
    return PPOTrainer(args=args, processing_class=tokenizer, model=peft_policy, ref_model=None,
                      reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                      data_collator=DataCollatorWithPadding(tokenizer), eval_dataset=dataset, optimizers=optimizers)


@contextlib.contextmanager
def fixed_rollout(queries: torch.Tensor, query_responses: torch.Tensor, gen_logits: torch.Tensor):
    """Run TRL's PPOTrainer on responses sampled beforehand, and record what its own code computes.

    Inside the block, TRL's `batch_generation` returns the given responses (looked up by query) instead
    of sampling, and its helpers `selective_log_softmax`, `get_reward` and `masked_whiten` are wrapped
    so that their results are recorded: rollout and reference log-probs, values and scores, and the
    GAE advantages before and after whitening. Everything else runs as TRL wrote it.
    """
    import trl.experimental.ppo.ppo_trainer as trl_ppo

    by_query = {tuple(q.tolist()): (qr, lg) for q, qr, lg in zip(queries, query_responses, gen_logits)}
    record = {"logprobs": [], "rewards": [], "whiten": []}
    real = {n: getattr(trl_ppo, n)
            for n in ("batch_generation", "selective_log_softmax", "get_reward", "masked_whiten")}

    def batch_generation(model, q, batch_size, pad_id, generation_config):
        record["queries"] = q.clone()
        picked = [by_query[tuple(row.tolist())] for row in q]
        return torch.stack([p[0] for p in picked]), torch.stack([p[1] for p in picked])

    def selective_log_softmax(logits, index):
        out = real["selective_log_softmax"](logits, index)
        record["logprobs"].append(out.detach().clone())
        return out

    def get_reward(model, qr, pad_id, context_length):
        out = real["get_reward"](model, qr, pad_id, context_length)
        record["rewards"].append(tuple(o.detach().clone() for o in out))
        return out

    def masked_whiten(values, mask, shift_mean=True):
        out = real["masked_whiten"](values, mask, shift_mean)
        record["whiten"].append((values.detach().clone(), out.detach().clone()))
        return out

    patched = {"batch_generation": batch_generation, "selective_log_softmax": selective_log_softmax,
               "get_reward": get_reward, "masked_whiten": masked_whiten}
    for name, fn in patched.items():
        setattr(trl_ppo, name, fn)
    try:
        yield record
    finally:
        for name, fn in real.items():
            setattr(trl_ppo, name, fn)


def recorded_tensors(record: dict, context_length: int, whiten_rewards: bool = False) -> dict:
    """TRL's recorded tensors by name (first update only): logprobs, ref_logprobs, values, scores, advantages."""
    values_full, _, _ = record["rewards"][0]
    _, scores, _ = record["rewards"][1]
    raw, whitened = record["whiten"][1 if whiten_rewards else 0]
    return {"queries": record["queries"], "logprobs": record["logprobs"][0], "ref_logprobs": record["logprobs"][1],
            "values": values_full[:, context_length - 1: -1].squeeze(-1), "scores": scores.squeeze(-1),
            "advantages_raw": raw, "advantages": whitened}


def ppo_parity(cfg: ppo.PPOConfig, policy: nn.Module, peft_policy, value_model: nn.Module, reward_model: nn.Module,
               tokenizer, prompts: list, query_responses: torch.Tensor, gen_logits: torch.Tensor, *, lr: float,
               output_dir: str) -> dict:
    """One PPO update by TRL's PPOTrainer and by ours, from the same sampled rollout and the same weights.

    `policy` (ours) and `peft_policy` must hold the same adapter; `value_model` is copied for each side;
    `query_responses` / `gen_logits` were sampled from left_pad(prompts). Both sides take one plain SGD step
    of size `lr` on one minibatch: with SGD the weight change is lr x gradient, so equal weights afterwards
    mean equal gradients. Returns
      tensors   {name: max |ours - TRL|} for log-probs, reference log-probs, values, scores and advantages
      scalars   {name: (ours, TRL)} for objective/kl, objective/rlhf_reward, loss/policy_avg, loss/value_avg
      weights_max_abs   max |ours - TRL| over every trained weight after the step
      moved             how far the step moved our weights (equal weights prove nothing if nothing moved)
    """
    if cfg.num_ppo_epochs != 1 or cfg.num_mini_batches != 1:
        raise ValueError("ppo_parity compares one SGD step: use num_ppo_epochs=1 and num_mini_batches=1")
    queries = left_pad(prompts, tokenizer.pad_token_id).to(query_responses.device)
    if not torch.equal(query_responses[:, :queries.shape[1]], queries):
        raise ValueError("query_responses do not start with left_pad(prompts): sample them from those queries")
    value_trl, value_ours = copy.deepcopy(value_model), copy.deepcopy(value_model)

    def sgd(*modules):
        opt = torch.optim.SGD([p for m in modules for p in m.parameters() if p.requires_grad], lr=lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    trainer = ppo_trainer(cfg, peft_policy, value_trl, reward_model, tokenizer, prompts, batch_size=len(prompts),
                          updates=1, lr=lr, output_dir=output_dir, optimizers=sgd(peft_policy, value_trl))
    with fixed_rollout(queries, query_responses, gen_logits) as record:
        trainer.train()
    theirs = recorded_tensors(record, queries.shape[1], cfg.whiten_rewards)
    trl_log = trainer.state.log_history[0]

    order = [queries.tolist().index(q) for q in theirs["queries"].tolist()]  # TRL's dataloader shuffled them
    mine = ppo.score_rollout(policy, value_ours, reward_model, queries[order], query_responses[order],
                             gen_logits[order], pad_id=tokenizer.pad_token_id, stop_id=tokenizer.eos_token_id, cfg=cfg)
    pad, pad1 = mine.padding_mask, mine.padding_mask_p1
    raw_advantages, _ = ppo.gae(mine.rewards, mine.values, cfg.gamma, cfg.lam)
    # TRL leaves padded positions as they come and adds the missing-eos penalty to its scores; we mask and
    # keep the penalty apart, so its tensors are brought to our convention before comparing.
    pairs = {"rollout log-probs": (mine.logprobs, theirs["logprobs"].masked_fill(pad, ppo.INVALID_LOGPROB)),
             "reference log-probs": (mine.ref_logprobs, theirs["ref_logprobs"].masked_fill(pad, ppo.INVALID_LOGPROB)),
             "values": (mine.values, theirs["values"].masked_fill(pad1, 0)),
             "scores": (mine.scores, theirs["scores"] - cfg.missing_eos_penalty * (~mine.contain_eos).float()),
             "GAE advantages (raw)": (raw_advantages, theirs["advantages_raw"]),
             "advantages (whitened)": (mine.advantages, theirs["advantages"].masked_fill(pad, 0))}
    tensors = {name: (a - b).abs().max().item() for name, (a, b) in pairs.items()}

    ours_params = [p for m in (policy, value_ours) for p in m.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in ours_params]
    stats = ppo.ppo_update(policy, value_ours, sgd(policy, value_ours)[0], mine, pad_id=tokenizer.pad_token_id,
                           cfg=cfg)
    moved = max((p - b).abs().max().item() for p, b in zip(ours_params, before))
    policy_diff = max((a - b).abs().max().item() for _, a, b in lora_weight_pairs(policy, peft_policy))
    trl_value = dict(value_trl.named_parameters())
    value_diff = max((p - trl_value[k]).abs().max().item() for k, p in value_ours.named_parameters() if p.requires_grad)
    ours_scalars = {"objective/kl": mine.kl.sum(1).mean().item(),
                    "objective/rlhf_reward": ppo.rollout_metrics(mine)["objective/rlhf_reward"],
                    "objective/non_score_reward": ppo.rollout_metrics(mine)["objective/non_score_reward"],
                    "objective/scores": ppo.rollout_metrics(mine)["objective/scores"],
                    "loss/policy_avg": stats["loss/policy_avg"], "loss/value_avg": stats["loss/value_avg"]}
    return {"tensors": tensors, "scalars": {k: (v, trl_log[k]) for k, v in ours_scalars.items()},
            "weights_max_abs": max(policy_diff, value_diff), "moved": moved}


# --- GRPOTrainer and RLOOTrainer (chapter 08) ---------------------------------------------------------

def sequence_reward(reward_model: nn.Module, pad_id: int):
    """A TRL reward function that scores prompt + completion ids with `reward_model` exactly as `grpo` does
    (ppo.sequence_scores at the last completion token). The prompt ids come from the dataset's `query_ids` column,
    which TRL hands to reward functions with every completion."""

    def score(prompts, completions, completion_ids, query_ids, **unused):
        device = next(reward_model.buffers(), next(reward_model.parameters(), torch.empty(0))).device
        queries = left_pad(query_ids, pad_id)
        responses = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(c) for c in completion_ids], batch_first=True,
                                                    padding_value=pad_id)
        with torch.no_grad():
            return ppo.sequence_scores(reward_model, torch.cat([queries, responses], 1).to(device), pad_id,
                                       queries.shape[1]).tolist()

    return score


def group_trainer(cfg: grpo.GRPOConfig, base: nn.Module, tokenizer, prompts: list[str], reward_model: nn.Module, *,
                  target_modules, r: int, alpha: float, prompts_per_update: int, updates: int, lr: float,
                  output_dir: str, seed: int = 0, sgd: bool = False):
    """TRL's GRPOTrainer (cfg.estimator "grpo") or RLOOTrainer ("rloo") with the settings of `cfg`, on user-turn
    `prompts`, rewarded by `reward_model` (`sequence_reward`). The policy is `base` plus a fresh peft LoRA adapter
    (dropout 0), whose reference is the adapter switched off, as ours; `base` is wrapped in place. One generation
    batch per optimizer step: prompts_per_update x G completions. `sgd=True` takes plain SGD at a constant
    learning rate (for parity: the weight change is then lr x gradient). The dataset is read in order."""
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    common = dict(
        output_dir=output_dir, use_cpu=next(base.parameters()).device.type == "cpu", bf16=False, report_to="none",
        seed=seed, per_device_train_batch_size=prompts_per_update * cfg.num_generations, gradient_accumulation_steps=1,
        num_generations=cfg.num_generations, max_completion_length=cfg.response_length, temperature=cfg.temperature,
        beta=cfg.beta, epsilon=cfg.epsilon, num_iterations=cfg.num_iterations, learning_rate=lr, max_steps=updates,
        max_grad_norm=cfg.max_grad_norm or 0.0, shuffle_dataset=False, logging_steps=1, save_strategy="no",
        disable_tqdm=True, **(dict(optim="sgd", lr_scheduler_type="constant") if sgd else {}))
    if cfg.estimator == "grpo":
        config = GRPOConfig(**common, scale_rewards=cfg.scale_rewards, loss_type=cfg.loss_type)
        trainer_class = GRPOTrainer
    else:
        config, trainer_class = RLOOConfig(**common, normalize_advantages=False), RLOOTrainer
    rows = [{"prompt": [{"role": "user", "content": p}], "query_ids": data.encode_chat(tokenizer, p)["input_ids"]}
            for p in prompts]
    peft_config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    trainer = trainer_class(model=base, reward_funcs=sequence_reward(reward_model, tokenizer.pad_token_id), args=config,
                            train_dataset=data.as_hf_dataset(rows), processing_class=tokenizer, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    return trainer


@contextlib.contextmanager
def fixed_groups(trainer, queries: torch.Tensor, responses: torch.Tensor, pad_id: int):
    """Run a GRPOTrainer or RLOOTrainer on completions sampled beforehand, and record what its own code computes.

    `queries` / `responses`: left-padded prompts and completions (padding after the stop token), each prompt's
    completions in consecutive rows. Inside the block the trainer's generation step hands out these completions
    (for each prompt, the next of its own), and the record keeps the batch its `_generate_and_score_completions`
    returns (advantages, reference and old log-probs, masks) and every loss its `compute_loss` returns.
    """
    queue: dict[tuple, list] = {}
    for q, resp in zip(queries.tolist(), responses.tolist()):
        prompt = tuple(t for t in q if t != pad_id)
        queue.setdefault(prompt, []).append([t for t in resp if t != pad_id])
    record = {"batches": [], "losses": []}
    real_score, real_loss = trainer._generate_and_score_completions, trainer.compute_loss
    returns_logprobs = type(trainer).__name__ == "GRPOTrainer"  # RLOOTrainer's returns the completions alone

    def generate(prompt_ids, images, multimodal_fields):
        completions = [queue[tuple(p)].pop(0) for p in prompt_ids]
        return (completions, None) if returns_logprobs else completions

    def score(inputs):
        out = real_score(inputs)
        record["batches"].append({k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)})
        return out

    def compute_loss(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        record["losses"].append(loss.detach().item())
        return loss

    trainer._generate_single_turn, trainer._generate_and_score_completions = generate, score
    trainer.compute_loss = compute_loss
    try:
        yield record
    finally:
        for name in ("_generate_single_turn", "_generate_and_score_completions", "compute_loss"):
            del trainer.__dict__[name]  # the class's methods again


def group_parity(cfg: grpo.GRPOConfig, policy: nn.Module, trainer, reward_model: nn.Module, tokenizer,
                 query_responses: torch.Tensor, *, lr: float) -> dict:
    """One GRPO (or RLOO) step by TRL's trainer and by ours, from the same completions and the same weights.

    `trainer` comes from group_trainer(..., updates=1, sgd=True) on the prompts of `query_responses` (each prompt G
    times in a row, in the dataset's order) and must hold the same adapter as `policy` (copy_lora_to_peft). The
    prompts must have one token length: TRL's loss passes no position ids, ours skip left padding, and the two
    agree only without it. Returns
      tensors   {name: max |ours - TRL|}: reference log-probs, old log-probs (RLOO), advantages
      loss      (ours, TRL) before the step
      weights_max_abs   max |ours - TRL| over the LoRA weights after one SGD step of size `lr`
      moved             how far the step moved our weights
    """
    pad_id = tokenizer.pad_token_id
    rows = [trainer.train_dataset[i]["query_ids"] for i in range(len(trainer.train_dataset))]
    if len({len(q) for q in rows}) != 1:
        raise ValueError("group_parity needs prompts of one token length (no left padding): TRL's loss passes no "
                         "position ids, so padded prompts would be scored at shifted positions")
    queries = left_pad([q for q in rows for _ in range(cfg.num_generations)], pad_id).to(query_responses.device)
    if query_responses.shape[0] != queries.shape[0] or not torch.equal(query_responses[:, :queries.shape[1]], queries):
        raise ValueError("query_responses must continue the trainer's prompts, each num_generations times in a row")
    with fixed_groups(trainer, queries, query_responses[:, queries.shape[1]:], pad_id) as record:
        trainer.train()
    theirs, trl_loss = record["batches"][0], record["losses"][0]

    roll = grpo.score_groups(policy, reward_model, queries, query_responses, pad_id=pad_id,
                             stop_id=tokenizer.eos_token_id, cfg=cfg)
    if not torch.equal(theirs["completion_ids"], roll.responses[:, :theirs["completion_ids"].shape[1]]) or \
            not torch.equal(theirs["completion_mask"].bool(), roll.mask[:, :theirs["completion_mask"].shape[1]]):
        raise ValueError("TRL scored other completions than ours: the fixed rollout did not take")
    width = theirs["completion_mask"].shape[1]
    mask = roll.mask[:, :width]
    tensors = {"advantages": (roll.advantages - theirs["advantages"]).abs().max().item()}
    if "ref_per_token_logps" in theirs:
        tensors["reference log-probs"] = ((roll.ref_logprobs[:, :width] - theirs["ref_per_token_logps"]) * mask
                                          ).abs().max().item()
    if "old_logps" in theirs:
        tensors["old log-probs (summed)"] = ((roll.old_logprobs * roll.mask).sum(1) - theirs["old_logps"]
                                             ).abs().max().item()

    params = [p for p in policy.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    one_step = grpo.GRPOConfig(**{**cfg.__dict__, "num_iterations": 1, "max_grad_norm": None})
    stats = grpo.update(policy, torch.optim.SGD(params, lr=lr), roll, pad_id=pad_id, cfg=one_step)
    moved = max((p - b).abs().max().item() for p, b in zip(params, before))
    weights = max((a - b).abs().max().item() for _, a, b in lora_weight_pairs(policy, trainer.model))
    return {"tensors": tensors, "loss": (stats["loss"], trl_loss), "weights_max_abs": weights, "moved": moved}
