"""Prompt tuning (Lester et al. 2021) and prefix tuning (Li and Liang 2021) from scratch.

Both leave every weight of the model frozen and learn a few "virtual tokens":

    prompt tuning   n vectors P in R^{n x d} placed before the input embeddings:  [P; E(x)]
    prefix tuning   n keys and values per layer and KV head, placed before the real ones in every
                    attention layer:  attention(q, [P_K; K], [P_V; V])

    model = PromptTuning(base, n_virtual_tokens=8, init="text", init_text="Classify:", tokenizer=tok)
    model = PrefixTuning(base, n_virtual_tokens=8, reparameterize=True)
    out = model(input_ids=..., attention_mask=..., labels=...)     # same call as the base model

The prefix reaches the model through transformers' cache API: a fresh `DynamicCache` is filled with
the prefix keys/values (one `update` per layer) and passed as `past_key_values`, exactly where a
generation loop would keep the keys/values of earlier tokens. The layout (and so the numbers) follow
peft 0.21's PromptTuningConfig / PrefixTuningConfig: `copy_prompt_from_peft` / `copy_prefix_from_peft`
move peft's weights into ours, and both then compute the same outputs and gradients.

Prompt tuning's logits, like peft's, cover the virtual positions too (n + T of them for T tokens);
`summed_loss` (for `ftlab.train.train(loss_fn=...)`) pads the labels to match. Prefix tuning's logits
cover the T real tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ftlab.data import IGNORE_INDEX
from ftlab.losses import causal_lm_loss
from ftlab.tuners.names import named_modules_to_train

PROMPT_INITS = ("random", "text", "vocab")


def _positive_int(arg: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    return value


def _freeze(model: nn.Module, trainable: list[str] | None) -> list[str]:
    """Freeze `model` except the modules named in `trainable` (matched like peft: equal or ending in '.name')."""
    keep = named_modules_to_train(model, trainable)
    model.requires_grad_(False)
    for k in keep:
        model.get_submodule(k).requires_grad_(True)
    return keep


def _batch_size(input_ids, inputs_embeds) -> int:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    return (input_ids if input_ids is not None else inputs_embeds).shape[0]


def _extend_mask(attention_mask: torch.Tensor | None, batch_size: int, n: int, seq_len: int,
                 device: torch.device) -> torch.Tensor:
    """[1 ... 1 (n virtual tokens); attention_mask]: the virtual tokens are always visible."""
    if attention_mask is None:
        attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)
    ones = torch.ones(batch_size, n, dtype=attention_mask.dtype, device=attention_mask.device)
    return torch.cat([ones, attention_mask], dim=1)


def prepend_prompt(prompts: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   labels: torch.Tensor | None = None):
    """Put (batch, n, d) soft-prompt vectors before (batch, T, d) token embeddings.

    Returns (embeddings (batch, n + T, d), attention mask with n ones in front, labels): 2-D (causal-LM)
    labels get n IGNORE_INDEX positions in front, 1-D (class) labels and None pass through.
    """
    n = prompts.shape[1]
    embeds = torch.cat([prompts.to(inputs_embeds.dtype), inputs_embeds], dim=1)
    mask = torch.cat([attention_mask.new_ones(attention_mask.shape[0], n), attention_mask], dim=1)
    if labels is not None and labels.dim() == 2:
        labels = F.pad(labels, (n, 0), value=IGNORE_INDEX)
    return embeds, mask, labels


class PromptTuning(nn.Module):
    """A frozen model reading n trainable embedding vectors before every input (a "soft prompt").

    init: "random" draws N(0, s^2) with s the standard deviation of the model's word embeddings (peft's
    RANDOM uses N(0, 1), far larger than real embeddings; copy weights for parity either way);
    "text" starts from the embeddings of `init_text`'s tokens (repeated or cut to n, like peft's TEXT;
    needs `tokenizer`); "vocab" from the embeddings of n random vocabulary tokens (peft's SAMPLE_VOCAB).
    `trainable`: modules of `model` trained in full beside the prompt (a new head, e.g. ["classifier"]).
    """

    def __init__(self, model: nn.Module, n_virtual_tokens: int, init: str = "random", init_text: str | None = None,
                 *, tokenizer=None, trainable: list[str] | None = None, seed: int = 0):
        super().__init__()
        n = _positive_int("n_virtual_tokens", n_virtual_tokens)
        if init not in PROMPT_INITS:
            raise ValueError(f"init={init!r}: choose one of {', '.join(PROMPT_INITS)}")
        if init == "text" and (not isinstance(init_text, str) or not init_text.strip()):
            raise ValueError("init='text' needs init_text, a non-empty string")
        if init == "text" and tokenizer is None:
            raise ValueError("init='text' needs tokenizer= to turn init_text into tokens")
        if init != "text" and init_text is not None:
            raise ValueError(f"init_text is only used with init='text' (init={init!r})")
        embeddings = model.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise TypeError(f"model's input embeddings must be an nn.Embedding, got {type(embeddings).__name__}")
        self.model, self.n_virtual_tokens, self.init = model, n, init
        self.trainable_modules = _freeze(model, trainable)
        table = embeddings.weight.detach()
        g = torch.Generator().manual_seed(seed)
        if init == "random":
            values = torch.randn(n, table.shape[1], generator=g) * table.float().std().item()
        else:
            if init == "text":
                ids = tokenizer(init_text)["input_ids"]
                ids = (ids * (n // len(ids) + 1))[:n]
            else:
                ids = torch.randint(0, table.shape[0], (n,), generator=g).tolist()
            values = table[torch.tensor(ids, device=table.device)].float().cpu()
            self.init_token_ids = ids
        # The prompt trains in float32 whatever the model's dtype (it is tiny; peft does the same).
        self.prompt = nn.Parameter(values.to(table.device))

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def prompt_embeddings(self, batch_size: int) -> torch.Tensor:
        """The soft prompt repeated for each row: (batch, n, d)."""
        return self.prompt.unsqueeze(0).expand(batch_size, -1, -1)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, token_type_ids=None,
                **kwargs):
        batch = _batch_size(input_ids, inputs_embeds)
        if inputs_embeds is None:
            inputs_embeds = self.model.get_input_embeddings()(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        embeds, mask, labels = prepend_prompt(self.prompt_embeddings(batch), inputs_embeds, attention_mask, labels)
        if token_type_ids is not None:  # encoders: the prompt is segment 0
            kwargs["token_type_ids"] = F.pad(token_type_ids, (self.n_virtual_tokens, 0), value=0)
        return self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Greedy/sampled generation with the soft prompt (returns the new tokens only)."""
        embeds = self.model.get_input_embeddings()(input_ids)
        embeds = torch.cat([self.prompt_embeddings(input_ids.shape[0]).to(embeds.dtype), embeds], dim=1)
        mask = _extend_mask(attention_mask, input_ids.shape[0], self.n_virtual_tokens, input_ids.shape[1],
                            embeds.device)
        return self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)


def prefix_shape(config) -> dict[str, int]:
    """Sizes of a prefix for `config`: layers, KV heads, head dim and token_dim = KV heads x head dim.

    With grouped-query attention the prefix has one key and one value per KV head (not per query head),
    which is what the attention layers store in their cache.
    """
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {"layers": config.num_hidden_layers, "kv_heads": kv_heads, "head_dim": head_dim,
            "token_dim": kv_heads * head_dim}


def split_prefix(flat: torch.Tensor, layers: int, kv_heads: int,
                 head_dim: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(batch, n, 2 L H d_h) flat prefixes -> per layer (K, V), each (batch, H, n, d_h), laid out as peft does:
    the last axis holds, per virtual token, layer 1's keys, layer 1's values, layer 2's keys, and so on."""
    batch, n, width = flat.shape
    if width != 2 * layers * kv_heads * head_dim:
        raise ValueError(f"flat has {width} numbers per virtual token; 2 x layers x kv_heads x head_dim = "
                         f"{2 * layers * kv_heads * head_dim}")
    kv = flat.reshape(batch, n, 2 * layers, kv_heads, head_dim).permute(2, 0, 3, 1, 4)  # (2L, B, H, n, d_h)
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(layers)]


class PrefixTuning(nn.Module):
    """A frozen model whose every attention layer sees n trainable keys and values before the real ones.

    reparameterize=True (Li and Liang's recipe, peft's `prefix_projection=True`): the prefix is produced
    by a two-layer MLP from n small embeddings,

        [K_1; V_1; ...; K_L; V_L] = W_2 tanh(W_1 e_i + b_1) + b_2        e_i in R^{token_dim}, i = 1..n

    which trains more stably than optimising the keys/values directly; after training, `bake()` replaces
    the MLP by the prefix it computes (inference needs only the keys/values). reparameterize=False trains
    the (n, 2 L token_dim) prefix directly. `hidden`: the MLP's width (default token_dim, as in peft).
    """

    def __init__(self, model: nn.Module, n_virtual_tokens: int, reparameterize: bool = True, *,
                 hidden: int | None = None, trainable: list[str] | None = None, seed: int = 0):
        super().__init__()
        n = _positive_int("n_virtual_tokens", n_virtual_tokens)
        if not isinstance(reparameterize, bool):
            raise ValueError(f"reparameterize must be True or False, got {reparameterize!r}")
        if not hasattr(model, "config"):
            raise TypeError(f"model must be a transformers model (it needs .config), got {type(model).__name__}")
        self.model, self.n_virtual_tokens = model, n
        self.shape = prefix_shape(model.config)
        self.trainable_modules = _freeze(model, trainable)
        d, layers = self.shape["token_dim"], self.shape["layers"]
        hidden = d if hidden is None else _positive_int("hidden", hidden)
        dev = next(model.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if reparameterize:
                self.embedding = nn.Embedding(n, d, device=dev)
                self.mlp = nn.Sequential(nn.Linear(d, hidden, device=dev), nn.Tanh(),
                                         nn.Linear(hidden, layers * 2 * d, device=dev))
            else:
                self.embedding = nn.Embedding(n, layers * 2 * d, device=dev)
                self.mlp = None

    @property
    def reparameterize(self) -> bool:
        return self.mlp is not None

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def prefix(self, batch_size: int | None = None) -> torch.Tensor:
        """The flat prefix, (n, 2 L token_dim): per virtual token, K and V of layer 1, then of layer 2, ...

        With `batch_size`, one copy per row, (batch, n, 2 L token_dim). The MLP then runs on every row
        (as peft's does): the same numbers, and the same rounding as peft's, so parity can be exact.
        """
        e = self.embedding.weight
        if batch_size is not None:
            e = e.unsqueeze(0).expand(batch_size, -1, -1)
        return self.mlp(e) if self.mlp is not None else e

    def key_values(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (K, V), each (batch, kv_heads, n, head_dim), in the model's dtype."""
        s = self.shape
        flat = self.prefix(batch_size).to(next(self.model.parameters()).dtype)
        return split_prefix(flat, s["layers"], s["kv_heads"], s["head_dim"])

    def cache(self, batch_size: int):
        """A fresh DynamicCache holding the prefix in every layer (the model appends the real tokens to it)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(self.key_values(batch_size)):
            cache.update(k, v, layer)
        return cache

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        if "past_key_values" in kwargs:
            raise ValueError("PrefixTuning fills past_key_values itself; do not pass one")
        batch = _batch_size(input_ids, inputs_embeds)
        seq = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        device = (input_ids if input_ids is not None else inputs_embeds).device
        mask = _extend_mask(attention_mask, batch, self.n_virtual_tokens, seq, device)
        return self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels,
                          past_key_values=self.cache(batch), **kwargs)

    @torch.no_grad()
    def bake(self) -> "PrefixTuning":
        """Replace the MLP by the prefix it computes (for inference or storage); returns self."""
        if self.mlp is None:
            return self
        flat = self.prefix().detach().clone()
        self.embedding = nn.Embedding(*flat.shape, device=flat.device, dtype=flat.dtype)
        self.embedding.weight.copy_(flat)
        self.mlp = None
        return self


def prompt_param_count(n_virtual_tokens: int, hidden: int) -> int:
    """Prompt tuning trains n x d numbers."""
    return n_virtual_tokens * hidden


def prefix_param_count(n_virtual_tokens: int, layers: int, token_dim: int, reparameterize: bool = True,
                       hidden: int | None = None) -> int:
    """Trainable numbers of a prefix: n * 2 L d directly; with the MLP, n d + (d h + h) + (h * 2 L d + 2 L d)."""
    out = 2 * layers * token_dim
    if not reparameterize:
        return n_virtual_tokens * out
    h = token_dim if hidden is None else hidden
    return n_virtual_tokens * token_dim + (token_dim * h + h) + (h * out + out)


def summed_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Summed token (or row) loss for `ftlab.train.train(loss_fn=...)`, whatever extra positions the logits have.

    Prompt tuning's logits are n positions longer than the labels: the labels get n ignored positions in
    front (the last virtual token does predict the first real one, as in peft). Other models: unchanged.
    """
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"]
    if labels.dim() == 2:
        extra = logits.shape[1] - labels.shape[1]
        if extra < 0:
            raise ValueError(f"logits cover {logits.shape[1]} positions but labels {labels.shape[1]}")
        return causal_lm_loss(logits, F.pad(labels, (extra, 0), value=IGNORE_INDEX), reduction="sum")
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")


# --- moving weights from peft (parity) -------------------------------------------------------------------

def _peft_encoder(peft_model, adapter: str, kind: str):
    encoders = getattr(peft_model, "prompt_encoder", None)
    if encoders is None or adapter not in encoders:
        raise TypeError(f"peft_model must be a peft model built with {kind}Config (adapter {adapter!r})")
    return encoders[adapter], peft_model.peft_config[adapter]


@torch.no_grad()
def copy_prompt_from_peft(ours: PromptTuning, peft_model, adapter: str = "default") -> None:
    """peft's virtual-token embeddings (PromptTuningConfig) into our soft prompt."""
    if not isinstance(ours, PromptTuning):
        raise TypeError(f"ours must be a PromptTuning, got {type(ours).__name__}")
    encoder, config = _peft_encoder(peft_model, adapter, "PromptTuning")
    weight = encoder.embedding.weight
    if config.num_transformer_submodules != 1 or weight.shape != ours.prompt.shape:
        raise ValueError(f"peft's prompt has shape {tuple(weight.shape)}, ours {tuple(ours.prompt.shape)}")
    ours.prompt.copy_(weight)


@torch.no_grad()
def copy_prefix_from_peft(ours: PrefixTuning, peft_model, adapter: str = "default") -> None:
    """peft's prefix (PrefixTuningConfig): the embedding, and with prefix_projection the MLP, into ours."""
    if not isinstance(ours, PrefixTuning):
        raise TypeError(f"ours must be a PrefixTuning, got {type(ours).__name__}")
    encoder, config = _peft_encoder(peft_model, adapter, "PrefixTuning")
    if bool(config.prefix_projection) != ours.reparameterize:
        raise ValueError(f"peft has prefix_projection={config.prefix_projection}, ours reparameterize="
                         f"{ours.reparameterize}: build both the same way")
    pairs = [(ours.embedding.weight, encoder.embedding.weight)]
    if ours.mlp is not None:
        pairs += [(a, b) for a, b in zip(ours.mlp.parameters(), encoder.transform.parameters())]
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"shape {tuple(a.shape)} (ours) vs {tuple(b.shape)} (peft): different n, hidden or model")
    for a, b in pairs:
        a.copy_(b)


def peft_prefix_params(peft_model, adapter: str = "default") -> list[torch.Tensor]:
    """peft's prefix parameters in the order of our `PrefixTuning` parameters (embedding, then MLP)."""
    encoder, config = _peft_encoder(peft_model, adapter, "PrefixTuning")
    return [encoder.embedding.weight] + (list(encoder.transform.parameters()) if config.prefix_projection else [])


def own_prefix_params(ours: PrefixTuning) -> list[torch.Tensor]:
    return [ours.embedding.weight] + (list(ours.mlp.parameters()) if ours.mlp is not None else [])


def peft_pair(base: nn.Module, kind: str, n_virtual_tokens: int, reparameterize: bool = True,
              task_type: str = "CAUSAL_LM"):
    """(ours, peft_model) around the same frozen `base` (shared, not copied), with peft's weights in ours.

    kind "prompt": PromptTuningConfig with SAMPLE_VOCAB init (real token embeddings, so the scale is a
    trained model's); kind "prefix": PrefixTuningConfig(prefix_projection=reparameterize) with peft's own
    random init. Neither method changes `base`'s modules, so both wrappers can share it.
    """
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if kind == "prompt":
        config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=n_virtual_tokens,
                                    prompt_tuning_init="SAMPLE_VOCAB")
        ours = PromptTuning(base, n_virtual_tokens)
        theirs = get_peft_model(base, config)
        copy_prompt_from_peft(ours, theirs)
    elif kind == "prefix":
        config = PrefixTuningConfig(task_type=task_type, num_virtual_tokens=n_virtual_tokens,
                                    prefix_projection=reparameterize)
        ours = PrefixTuning(base, n_virtual_tokens, reparameterize=reparameterize)
        theirs = get_peft_model(base, config)
        copy_prefix_from_peft(ours, theirs)
    else:
        raise ValueError(f"kind={kind!r}: use 'prompt' or 'prefix'")
    return ours, theirs


def param_pairs(ours: nn.Module, peft_model, adapter: str = "default") -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, our parameter, peft's parameter) for every trained tensor of a prompt or prefix pair."""
    if isinstance(ours, PromptTuning):
        encoder, _ = _peft_encoder(peft_model, adapter, "PromptTuning")
        return [("prompt", ours.prompt, encoder.embedding.weight)]
    if isinstance(ours, PrefixTuning):
        names = ["embedding.weight"] + ([f"mlp.{n}" for n, _ in ours.mlp.named_parameters()] if ours.mlp else [])
        return list(zip(names, own_prefix_params(ours), peft_prefix_params(peft_model, adapter)))
    raise TypeError(f"ours must be a PromptTuning or a PrefixTuning, got {type(ours).__name__}")


def peft_parity(ours: nn.Module, peft_model, batch: dict, adapter: str = "default") -> dict:
    """One forward and backward of both on `batch` (with `labels`): the largest |difference| of logits,
    loss and every trained tensor's gradient, the largest gradient (for scale), and `exact`."""
    if "labels" not in batch:
        raise ValueError("batch must contain 'labels' so that both models compute a loss to differentiate")
    pairs = param_pairs(ours, peft_model, adapter)
    outs = []
    for model in (ours, peft_model):
        for _, a, b in pairs:
            a.grad = b.grad = None
        out = model(**batch)
        out.loss.backward()
        outs.append((out, [(a if model is ours else b).grad.clone() for _, a, b in pairs]))
    (o1, g1), (o2, g2) = outs
    result = {"logits_max_abs": (o1.logits - o2.logits).abs().max().item(),
              "loss_abs": (o1.loss - o2.loss).abs().item(), "loss": o1.loss.item(),
              "grad_max_abs": max((a - b).abs().max().item() for a, b in zip(g1, g2)),
              "grad_max_abs_value": max(a.abs().max().item() for a in g1), "n_grads": len(pairs)}
    result["exact"] = result["logits_max_abs"] == 0 and result["loss_abs"] == 0 and result["grad_max_abs"] == 0
    for _, a, b in pairs:
        a.grad = b.grad = None
    return result
