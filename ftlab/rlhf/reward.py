"""Reward models from pairwise preferences (chapter 07; chapter 08's PPO scores rollouts with them).

    rm = RewardModel.from_pretrained("smollm2-135m")             # decoder body + a fresh scalar head
    history = train(rm, rows, cfg, collate=RewardPairCollator(rm.tokenizer, 128), loss_fn=pairwise_loss)
    rm.score(["Add 2 and 3."], ["It is 5."])                      # tensor([r])
    rm.save("build/rm"); rm = RewardModel.load("build/rm")
    hf = rm.to_hf()                                               # LlamaForSequenceClassification(num_labels=1)

The Bradley-Terry model says a person prefers reply c over reply r with probability
    P(c > r) = sigma(r_theta(x, c) - r_theta(x, r))
and training maximises the likelihood of the preferences people expressed:
    L = -E log sigma(r_c - r_r - m)          (m: an optional margin, 0 by default)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from ftlab.data import encode_chat, encode_pairs, pad_batch
from ftlab.runtime import eval_mode

FORMAT = "ftlab-reward-model-1"
REDUCTIONS = ("mean", "sum", "none")


# --- the loss and the metric ---------------------------------------------------------------------


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """-log sigma(r_c - r_r - m) per pair, averaged ("mean"), added up ("sum") or not ("none")."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen has shape {tuple(r_chosen.shape)} but r_rejected has "
                         f"{tuple(r_rejected.shape)}: they must score the same pairs")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: use one of {', '.join(REDUCTIONS)}")
    delta = r_chosen.float() - r_rejected.float()  # only the difference matters: rewards are shift-invariant
    if margin is not None:
        delta = delta - margin  # the chosen reply must win by at least m before the loss relaxes
    losses = -F.logsigmoid(delta)  # = log(1 + e^-delta), computed without overflow for large |delta|
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs where the chosen reply scores strictly higher (a tie counts as wrong, as in TRL)."""
    if r_chosen.shape != r_rejected.shape or r_chosen.numel() == 0:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} must be "
                         "non-empty and of the same shape")
    return (r_chosen > r_rejected).float().mean().item()


# --- the model -----------------------------------------------------------------------------------


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the position of the rightmost real token (attention_mask == 1), whatever side was padded.

    The mask, not the pad id, decides: a tokenizer whose pad token is also its EOS would otherwise make a real
    EOS look like padding. position * mask peaks at the last real token; argmax finds it.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, seq], got shape {tuple(attention_mask.shape)}")
    if not attention_mask.any(-1).all():
        raise ValueError("attention_mask has a row with no real tokens: nothing to score")
    positions = torch.arange(attention_mask.size(-1), device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


class RewardModel(nn.Module):
    """A decoder body and a linear head that reads the hidden state of each row's last real token.

        h = body(x)[b, t_last]        t_last = the last non-pad position: the only one that has seen it all
        r = w . h                     w: [hidden], no bias (a constant offset is invisible to pairwise data)
    """

    def __init__(self, body: nn.Module, tokenizer, head: nn.Linear | None = None):
        super().__init__()
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token before building a RewardModel")
        self.body, self.tokenizer = body, tokenizer
        hidden = body.config.hidden_size
        self.head = head if head is not None else nn.Linear(hidden, 1, bias=False)
        if self.head.weight.shape != (1, hidden) or self.head.bias is not None:
            raise ValueError(f"head must be Linear({hidden}, 1, bias=False), got {self.head}")
        self.head.to(next(body.parameters()))

    @property
    def config(self):
        return self.body.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One reward per row: [B, T] ids -> [B]."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        # The head runs on every position and the last real one is picked afterwards: the same order of
        # operations as transformers' sequence classifiers, so both give bit-identical rewards.
        rewards = self.head(hidden).squeeze(-1)  # [B, T]
        return rewards[torch.arange(len(rewards), device=rewards.device), last_token_index(attention_mask)]

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], batch_size: int = 16,
              max_length: int | None = None) -> torch.Tensor:
        """Rewards of (prompt, response) pairs, each formatted with the chat template (encode_chat); [B] float32 on
        the model's device, in the input order (batches are formed by length so little is spent on padding)."""
        if len(prompts) != len(responses):
            raise ValueError(f"prompts has {len(prompts)} items but responses has {len(responses)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        device = next(self.parameters()).device
        features = [{"input_ids": encode_chat(self.tokenizer, p, r, max_length)["input_ids"]}
                    for p, r in zip(prompts, responses)]
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))  # batch similar lengths
        rewards = torch.empty(len(features), device=device)
        with eval_mode(self):
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                batch = pad_batch([features[j] for j in idx], self.tokenizer.pad_token_id)
                rewards[idx] = self(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float()
        return rewards

    def train_top(self, n_blocks: int) -> int:
        """Freeze the body except its last `n_blocks` blocks and final norm (the head always trains); returns
        the trainable parameter count. Backward then stops n_blocks below the head: the CPU-sized recipe."""
        layers = getattr(self.body, "layers", None)
        if layers is None or not hasattr(self.body, "norm"):
            raise TypeError(f"train_top needs a decoder body with .layers and .norm, got {type(self.body).__name__}")
        if not 0 <= n_blocks <= len(layers):
            raise ValueError(f"n_blocks must be between 0 and {len(layers)}, got {n_blocks}")
        self.body.requires_grad_(False)
        for module in [*layers[len(layers) - n_blocks:], self.body.norm, self.head]:
            module.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # --- building, saving, loading ---------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> "RewardModel":
        """A course model's decoder body (ftlab.models.load(name, task="base")) and a new head drawn from `seed`.

        The head starts like transformers' score layer, N(0, initializer_range^2): small, so every reward starts
        near 0 and the first loss near log 2.
        """
        from ftlab import models

        body, tok = models.load(name, task="base", seed=seed, dtype=dtype, device=device)
        head = nn.Linear(body.config.hidden_size, 1, bias=False)
        with torch.no_grad():
            head.weight.normal_(0.0, body.config.initializer_range,
                                generator=torch.Generator().manual_seed(seed))
        return cls(body, tok, head.to(dtype))

    def save(self, path: str | Path) -> Path:
        """Weights (model.safetensors), the body's config.json, the tokenizer files and reward_model.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self, str(path / "model.safetensors"))
        self.body.config.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        meta = {"format": FORMAT, "hidden_size": self.body.config.hidden_size, "dtype": str(self.head.weight.dtype)}
        (path / "reward_model.json").write_text(json.dumps(meta, indent=1))  # written last: marks a finished save
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> "RewardModel":
        """A RewardModel written by `save`; a clear error when `path` is not one or does not match."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"path={str(path)!r} is not a directory written by RewardModel.save")
        try:
            meta = json.loads((path / "reward_model.json").read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} has no reward_model.json: not a saved RewardModel") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / 'reward_model.json'}: format {meta.get('format')!r}, expected {FORMAT!r}")
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's stream
            body = AutoModel.from_config(AutoConfig.from_pretrained(path))
        model = cls(body, AutoTokenizer.from_pretrained(path)).to(getattr(torch, meta["dtype"].removeprefix("torch.")))
        try:
            missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        except (FileNotFoundError, SafetensorError, RuntimeError) as e:
            raise ValueError(f"{path / 'model.safetensors'} cannot be loaded into this model: {e}") from None
        if missing or unexpected:
            raise ValueError(f"{path / 'model.safetensors'} does not match the saved config: missing "
                             f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        return model.to(device or next(model.parameters()).device).eval()

    # --- exchange with transformers / TRL --------------------------------------------------------

    def to_hf(self):
        """The same weights in transformers' sequence classifier (num_labels=1): what TRL's RewardTrainer and
        PPOTrainer take. A copy: training one does not change the other."""
        from transformers import AutoModelForSequenceClassification

        config = copy.deepcopy(self.body.config)
        config.num_labels, config.pad_token_id = 1, self.tokenizer.pad_token_id
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten; keep the caller's stream
            hf = AutoModelForSequenceClassification.from_config(config)
        weight = next(self.parameters())
        hf.to(device=weight.device, dtype=weight.dtype)
        getattr(hf, hf.base_model_prefix).load_state_dict(self.body.state_dict())
        hf.score.load_state_dict(self.head.state_dict())
        return hf.eval()

    @classmethod
    def from_hf(cls, seq_cls_model, tokenizer) -> "RewardModel":
        """A RewardModel holding a copy of a transformers sequence classifier's weights (num_labels=1)."""
        if getattr(seq_cls_model.config, "num_labels", None) != 1 or not hasattr(seq_cls_model, "score"):
            raise ValueError("seq_cls_model must be a sequence classifier with num_labels=1 and a `score` head, got "
                             f"{type(seq_cls_model).__name__} with num_labels={seq_cls_model.config.num_labels}")
        body = copy.deepcopy(getattr(seq_cls_model, seq_cls_model.base_model_prefix))
        return cls(body, tokenizer, copy.deepcopy(seq_cls_model.score)).eval()


# --- batches of pairs and the loss our training loop sums ----------------------------------------


class RewardPairCollator:
    """Rows with prompt / chosen / rejected -> both replies chat-formatted, right-padded to one common width.

    One width for both halves lets `pairwise_loss` score chosen and rejected in a single forward pass (as TRL
    does). `labels` has one entry per pair, so ftlab.train counts pairs and averages the loss over them. A row's
    optional `margin` is passed on. `max_length` cuts from the right (TRL drops such rows instead).
    """

    def __init__(self, tokenizer, max_length: int | None = None):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        both = encode_pairs(self.tokenizer, rows, self.max_length)  # [2B, T]: chosen rows, then rejected rows
        n = len(rows)
        batch = {"chosen_input_ids": both["input_ids"][:n], "chosen_attention_mask": both["attention_mask"][:n],
                 "rejected_input_ids": both["input_ids"][n:], "rejected_attention_mask": both["attention_mask"][n:],
                 "labels": torch.zeros(n, dtype=torch.long)}  # 0 = the first reply (chosen) wins; one per pair
        if any("margin" in r for r in rows):
            batch["margin"] = torch.tensor([float(r.get("margin", 0.0)) for r in rows])
        return batch


def pairwise_rewards(model: RewardModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) of a RewardPairCollator batch, from one forward pass over all 2B sequences."""
    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    return model(ids, mask).chunk(2)


def pairwise_loss(model: RewardModel, batch: dict) -> torch.Tensor:
    """SUM over the batch's pairs of -log sigma(r_c - r_r - m): ftlab.train divides by the number of pairs."""
    r_chosen, r_rejected = pairwise_rewards(model, batch)
    return bradley_terry_loss(r_chosen, r_rejected, batch.get("margin"), reduction="sum")


@torch.no_grad()
def score_pairs(model: RewardModel, rows: list[dict], batch_size: int = 16,
                max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) for preference rows, in their order, on the CPU: what accuracy and calibration are
    computed from. Rows are batched by length, so short pairs are not padded to the width of long ones."""
    device = next(model.parameters()).device
    collate = RewardPairCollator(model.tokenizer, max_length)
    width = [len(r["prompt"]) + max(len(r["chosen"]), len(r["rejected"])) for r in rows]  # characters: a cheap proxy
    order = sorted(range(len(rows)), key=width.__getitem__)
    r_chosen, r_rejected = torch.empty(len(rows)), torch.empty(len(rows))
    with eval_mode(model):
        for i in range(0, len(rows), batch_size):
            idx = order[i:i + batch_size]
            batch = {k: v.to(device) for k, v in collate([rows[j] for j in idx]).items()}
            r_c, r_r = pairwise_rewards(model, batch)
            r_chosen[idx], r_rejected[idx] = r_c.float().cpu(), r_r.float().cpu()
    return r_chosen, r_rejected
