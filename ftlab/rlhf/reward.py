"""Reward models from pairwise preferences (chapter 07 trains them; chapter 08 loads the proxy it saves).

    rm = RewardModel.from_pretrained("smollm2-135m")             # decoder body + a fresh scalar head
    history = train(rm, rows, cfg, collate=RewardPairCollator(rm.tokenizer, 128), loss_fn=pairwise_loss)
    rm.score(["Add 2 and 3."], ["It is 5."])                      # tensor([r])
    rm.save("build/rm"); rm = RewardModel.load("build/rm")
    hf = rm.to_hf()                                               # LlamaForSequenceClassification(num_labels=1)

The laptop-sized reward model keeps the body frozen and fits only the head, on features computed once:

    f_c, f_r = pair_features(rm, rows)                            # [N, hidden] each, no grad, one pass
    head = fit_head(f_c, f_r)                                     # Linear(hidden, 1): Bradley-Terry on them
    proxy = proxy_reward_model("smollm2-135m")                    # the head chapter 07 saved, or refitted

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
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from tqdm.auto import tqdm

from ftlab import runtime
from ftlab.checks import number, positive_int
from ftlab.data import encode_chat, encode_pairs, load as load_rows, pad_batch
from ftlab.runtime import eval_mode

FORMAT = "ftlab-reward-model-1"
HEAD_FORMAT = "ftlab-reward-head-1"
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


def _chat_batches(model: nn.Module, prompts: list[str], responses: list[str], batch_size: int,
                  max_length: int | None):
    """(row indices, ids, mask) per batch of chat-formatted pairs, batched by length so little is padded; a
    function of any model with a `tokenizer`, so stand-ins in tests can use it too."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts has {len(prompts)} items but responses has {len(responses)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    features = [{"input_ids": encode_chat(model.tokenizer, p, r, max_length)["input_ids"]}
                for p, r in zip(prompts, responses)]
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = pad_batch([features[j] for j in idx], model.tokenizer.pad_token_id)
        yield idx, batch["input_ids"].to(device), batch["attention_mask"].to(device)


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
        the model's device, in the input order."""
        rewards = torch.empty(len(prompts), device=next(self.parameters()).device)
        with eval_mode(self):
            for idx, ids, mask in _chat_batches(self, prompts, responses, batch_size, max_length):
                rewards[idx] = self(ids, mask).float()
        return rewards

    @torch.no_grad()
    def features(self, prompts: list[str], responses: list[str], batch_size: int = 16,
                 max_length: int | None = None, progress: bool = False) -> torch.Tensor:
        """The body's hidden state at each pair's last real token, [B, hidden] float32 on the CPU, in input order:
        everything the head reads, so a head fitted on these scores exactly like `forward` (up to rounding)."""
        out = torch.empty(len(prompts), self.config.hidden_size)
        batches = _chat_batches(self, prompts, responses, batch_size, max_length)
        total = -(-len(prompts) // max(batch_size, 1))
        with eval_mode(self):
            for idx, ids, mask in tqdm(batches, total=total, desc="features", disable=not progress):
                hidden = self.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                out[idx] = hidden[torch.arange(len(ids), device=ids.device), last_token_index(mask)].float().cpu()
        return out

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


# --- the laptop recipe: a frozen body, a head fitted on cached features ----------------------------


def pair_features(model: RewardModel, rows: list[dict], batch_size: int = 16,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) last-real-token features of preference rows, [N, hidden] each, from one pass of the body
    with no gradient. Both sides go through one length-sorted queue, so short replies share batches."""
    prompts = [r["prompt"] for r in rows]
    both = model.features(prompts * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows], batch_size,
                          progress=progress)
    return both[:len(rows)], both[len(rows):]


@torch.no_grad()
def unit_scale(model: RewardModel, rows: list[dict]) -> tuple[float, float]:
    """Divide the head by the spread (std) of its scores on the replies of `rows`, pairs it never trained on, and
    return (pairwise accuracy on those pairs, the spread divided out). A Bradley-Terry head's scale is set by how
    separable its training pairs were; PPO's clip ranges and the KL coefficient assume rewards of order one."""
    chosen, rejected = (f.to(model.head.weight.device) for f in pair_features(model, rows))
    spread = torch.cat([model.head(chosen), model.head(rejected)]).std().item()
    model.head.weight /= spread
    return pairwise_accuracy(model.head(chosen).squeeze(-1), model.head(rejected).squeeze(-1)), spread


def fit_head(chosen: torch.Tensor, rejected: torch.Tensor, l2: float = 1e-3, max_iter: int = 200) -> nn.Linear:
    """The head Linear(hidden, 1, bias=False) that maximises the Bradley-Terry likelihood of cached pair features:

        min_v  mean_i -log sigma(v . (f_c,i - f_r,i) / s)  +  l2 / 2 * |v|^2,      head weight w = v / s

    with s the per-feature standard deviation, so that the penalty treats every feature alike whatever its
    scale. It is logistic regression on the feature difference: convex, with a unique minimum for l2 > 0, so
    L-BFGS reaches the same head from any start and the fit has no seed (only the choice of pairs varies).
    """
    if chosen.dim() != 2 or chosen.shape != rejected.shape or len(chosen) == 0:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must be non-empty "
                         "[pairs, hidden] feature tensors of the same shape")
    l2 = number("l2", l2, above=0)
    max_iter = positive_int("max_iter", max_iter)
    f_c, f_r = chosen.detach().double().cpu(), rejected.detach().double().cpu()
    if not (torch.isfinite(f_c).all() and torch.isfinite(f_r).all()):
        raise ValueError("chosen / rejected features hold NaN or inf: the body produced no usable hidden states")
    scale = torch.cat([f_c, f_r]).std(0, unbiased=False).clamp_min(1e-6)
    diff = (f_c - f_r) / scale
    v = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([v], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        loss = -F.logsigmoid(diff @ v).mean() + 0.5 * l2 * v.dot(v)
        loss.backward()
        return loss

    opt.step(objective)
    head = nn.Linear(diff.shape[1], 1, bias=False)
    with torch.no_grad():
        head.weight.copy_((v.detach() / scale).float().unsqueeze(0))
    return head


def proxy_rows(dataset: str = "preferences", n_pairs: int | None = None, seed: int = 0) -> list[dict]:
    """The training pairs a proxy is fitted on: `dataset`'s train split shuffled by `seed`, the first `n_pairs`
    (all of them for None). Chapter 07 and `proxy_reward_model` draw them the same way, so a rebuild fits the
    same pairs."""
    rows = load_rows(dataset, "train")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    n = len(rows) if n_pairs is None else min(positive_int("n_pairs", n_pairs), len(rows))
    return [rows[i] for i in order[:n]]


def default_pairs(profile=None) -> int:
    """How many pairs the proxy is fitted on under a profile: a quarter of its n_train (ci 24, cpu 100, gpu 1000).
    One pass of the body over both replies of a pair costs about 0.5 s on two CPU cores with SmolLM2-135M, so
    this is what fits in the cpu profile's few minutes, not what the data holds (1,442 training pairs)."""
    profile = profile or runtime.profile()
    return profile.n_train // 4


def proxy_dir(model_name: str, dataset: str = "preferences") -> Path:
    """Where the proxy's head lives: FTLAB_HOME/models/reward-head-<model>-<dataset>/."""
    return runtime.home() / "models" / f"reward-head-{model_name}-{dataset}"


def save_head(head: nn.Linear, path: str | Path, **meta) -> Path:
    """head.safetensors (the weight) and head.json (format, hidden size, and `meta`: which model and pairs)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({"weight": head.weight.detach().float().cpu().contiguous()}, str(path / "head.safetensors"))
    info = {"format": HEAD_FORMAT, "hidden_size": head.weight.shape[1], **meta}
    (path / "head.json").write_text(json.dumps(info, indent=1))  # written last: marks a finished save
    return path


def load_head(path: str | Path) -> tuple[nn.Linear, dict]:
    """The head written by `save_head` and its head.json; a clear error naming the file when it is not one."""
    path = Path(path)
    try:
        info = json.loads((path / "head.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} has no head.json: not a saved reward head") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / 'head.json'} is not valid JSON: {e}") from None
    if info.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path / 'head.json'}: format {info.get('format')!r}, expected {HEAD_FORMAT!r}")
    try:
        weight = load_file(str(path / "head.safetensors"))["weight"]
    except (FileNotFoundError, SafetensorError, KeyError) as e:
        raise ValueError(f"{path / 'head.safetensors'} holds no head weight: {e}") from None
    if weight.shape != (1, info.get("hidden_size")):
        raise ValueError(f"{path / 'head.safetensors'}: weight shape {tuple(weight.shape)} does not match "
                         f"hidden_size {info.get('hidden_size')} in head.json")
    head = nn.Linear(weight.shape[1], 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head, info


def fit_proxy(model_name: str, rows: list[dict], l2: float = 1e-3, progress: bool = False,
              device: torch.device | str | None = None) -> RewardModel:
    """`model_name`'s frozen body with a head fitted (`fit_head`) on the cached features of `rows`."""
    model = RewardModel.from_pretrained(model_name, seed=0, device=device)
    head = fit_head(*pair_features(model, rows, progress=progress), l2=l2)
    with torch.no_grad():
        model.head.weight.copy_(head.weight)
    return model.requires_grad_(False).eval()


def proxy_reward_model(model_name: str, dataset: str = "preferences", n_pairs: int | None = None,
                       l2: float = 1e-3, progress: bool = False,
                       device: torch.device | str | None = None) -> RewardModel:
    """The proxy reward model chapter 07 saved for `model_name` and `dataset`: the frozen body and the fitted head.

    When none is saved (chapter 07 not run yet, a fresh FTLAB_HOME) it is fitted now on `proxy_rows(dataset,
    n_pairs)` (default: `default_pairs()` of the active profile) and saved, as chapter 07 does. A saved head that
    belongs to another model is an error, not a silent refit: delete its folder to rebuild it.
    """
    path = proxy_dir(model_name, dataset)
    if not (path / "head.json").exists():
        n_pairs = default_pairs() if n_pairs is None else n_pairs
        model = fit_proxy(model_name, proxy_rows(dataset, n_pairs), l2, progress, device)
        save_head(model.head, path, model=model_name, dataset=dataset, n_pairs=min(n_pairs, len(load_rows(dataset))),
                  l2=l2)
        return model
    head, info = load_head(path)
    if info.get("model") != model_name or info.get("dataset") != dataset:
        raise ValueError(f"{path / 'head.json'}: model {info.get('model')!r}, dataset {info.get('dataset')!r}; "
                         f"expected {model_name!r}, {dataset!r}")
    model = RewardModel.from_pretrained(model_name, seed=0, device=device)
    if head.weight.shape[1] != model.config.hidden_size:
        raise ValueError(f"{path / 'head.json'}: hidden_size {head.weight.shape[1]}, but {model_name} has "
                         f"{model.config.hidden_size}")
    with torch.no_grad():
        model.head.weight.copy_(head.weight)
    return model.requires_grad_(False).eval()
