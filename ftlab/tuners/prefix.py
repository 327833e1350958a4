"""Prefix tuning (Li and Liang 2021) from scratch: n trainable keys and values in every attention layer.

    prefix tuning   n keys and values per layer and KV head, placed before the real ones in every
                    attention layer:  attention(q, [P_K; K], [P_V; V])

    model = PrefixTuning(base, n_virtual_tokens=8, reparameterize=True)
    out = model(input_ids=..., attention_mask=..., labels=...)     # same call as the base model

The prefix reaches the model through transformers' cache API: a fresh `DynamicCache` is filled with
the prefix keys/values (one `update` per layer) and passed as `past_key_values`, exactly where a
generation loop would keep the keys/values of earlier tokens. The layout (and so the numbers) follows
peft 0.21's PrefixTuningConfig (`ftlab.compare.peft.copy_prefix_from_peft`). The logits cover the T
real tokens only.
"""

from __future__ import annotations

import torch
from torch import nn

from ftlab.checks import positive_int
from ftlab.tuners.virtual_tokens import VirtualTokens, batch_shape, extend_mask


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


class PrefixTuning(VirtualTokens):
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
        if not isinstance(reparameterize, bool):
            raise ValueError(f"reparameterize must be True or False, got {reparameterize!r}")
        if not hasattr(model, "config"):
            raise TypeError(f"model must be a transformers model (it needs .config), got {type(model).__name__}")
        shape = prefix_shape(model.config)
        hidden = shape["token_dim"] if hidden is None else positive_int("hidden", hidden)
        super().__init__(model, n_virtual_tokens, trainable)  # checks n, then freezes the model
        n, self.shape = self.n_virtual_tokens, shape
        d, layers = self.shape["token_dim"], self.shape["layers"]
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
        batch, seq, device = batch_shape(input_ids, inputs_embeds)
        mask = extend_mask(attention_mask, self.n_virtual_tokens, batch, seq, device)
        return self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels,
                          past_key_values=self.cache(batch), **kwargs)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Generation with the prefix in the cache; returns the prompt's ids followed by the new tokens, as the
        base model's generate does (so `ftlab.sft.generate` serves both).

        transformers' generate reads the ids of not-yet-cached positions by cache position, so the n cached
        virtual positions get placeholder ids in front; they are never embedded, only cut off again. Position
        ids come from the widened mask: the first real token sits at position n, as in `forward`.
        """
        if "past_key_values" in kwargs:
            raise ValueError("PrefixTuning fills past_key_values itself; do not pass one")
        batch, seq, device = batch_shape(input_ids, None)
        n = self.n_virtual_tokens
        out = self.model.generate(input_ids=torch.cat([input_ids.new_zeros(batch, n), input_ids], dim=1),
                                  attention_mask=extend_mask(attention_mask, n, batch, seq, device),
                                  past_key_values=self.cache(batch), **kwargs)
        return out[:, n:]

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


def prefix_param_count(n_virtual_tokens: int, layers: int, token_dim: int, reparameterize: bool = True,
                       hidden: int | None = None) -> int:
    """Trainable numbers of a prefix: n * 2 L d directly; with the MLP, n d + (d h + h) + (h * 2 L d + 2 L d)."""
    out = 2 * layers * token_dim
    if not reparameterize:
        return n_virtual_tokens * out
    h = token_dim if hidden is None else hidden
    return n_virtual_tokens * token_dim + (token_dim * h + h) + (h * out + out)
