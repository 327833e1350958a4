"""Instruction tuning (chapter 06): the response-only loss mask, packing, and evaluation that means something.

    labels = mask_prompt(prompt_ids, full_ids)           # -100 on the prompt: only the reply is learned
    rows = pack(features, seq_len=256)                   # several examples per row, positions restart at 0
    batch = pad_packed(rows, pad_id)                     # no attention_mask: position_ids carry the boundaries
    loss = packed_loss(model, batch)                     # use_cache=False, or transformers ignores the boundaries
    replies = generate(model, tok, prompts)              # greedy, batched, left-padded
    exact_match_by_task(rows, replies)                   # share of replies stating the canonical answer
    scores = reply_scores(model, tok, rows, max_length)   # per row: reply loss, and would greedy write it exactly?

Chat formatting itself (`encode_chat`, `ChatCollator`) lives in `ftlab.data`, because chapters 07 and 08 use it too.
"""

from __future__ import annotations

import torch

from ftlab import data, evaluation
from ftlab.losses import IGNORE_INDEX, causal_lm_loss
from ftlab.runtime import eval_mode

# --- the loss mask -------------------------------------------------------------------------------


def mask_prompt(prompt_ids: list[int], full_ids: list[int]) -> list[int]:
    """Labels for one prompt + reply: -100 on every prompt token, the token itself on every reply token.

        labels_t = -100          for t <  len(prompt)       (the model reads the prompt, is not graded on it)
        labels_t = full_ids_t    for t >= len(prompt)       (the reply and its end-of-turn token are targets)
    """
    n = len(prompt_ids)
    if list(full_ids[:n]) != list(prompt_ids):
        raise ValueError("prompt_ids is not a prefix of full_ids, so the reply's tokens cannot be located")
    return [IGNORE_INDEX] * n + list(full_ids[n:])


# --- packing -------------------------------------------------------------------------------------


def pack(features: list[dict], seq_len: int) -> list[dict]:
    """Concatenate tokenized examples, in order, into rows of at most `seq_len` tokens.

    Each row holds whole examples back to back; an example that does not fit starts the next row, and
    one longer than `seq_len` is cut to `seq_len`. Per row:
        input_ids     the examples' tokens, concatenated
        labels        their labels, with the first label of every example set to -100: the token before it
                      belongs to another example, so predicting it would teach a cross-example transition
        position_ids  0, 1, 2, ... restarting at 0 where each example starts (the boundaries, for attention)
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    rows, row = [], {"input_ids": [], "labels": [], "position_ids": []}
    for f in features:
        ids = list(f["input_ids"])[:seq_len]
        labels = list(f.get("labels", f["input_ids"]))[:seq_len]
        if not ids:
            raise ValueError("pack got an example with no input_ids")
        if row["input_ids"] and len(row["input_ids"]) + len(ids) > seq_len:
            rows.append(row)
            row = {"input_ids": [], "labels": [], "position_ids": []}
        row["input_ids"] += ids
        row["labels"] += [IGNORE_INDEX] + labels[1:]
        row["position_ids"] += list(range(len(ids)))
    if row["input_ids"]:
        rows.append(row)
    return rows


def best_fit_order(lengths: list[int], seq_len: int) -> list[int]:
    """An order of the examples that makes `pack` fill its rows tightly: best-fit decreasing.

    Longest first, each example goes into the open row with the least room that still fits it (a new
    row if none does); reading the rows out one after the other gives the order. TRL's `packing_strategy
    ="bfd"` uses the same heuristic. Lengths are capped at `seq_len`, as `pack` cuts them.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -min(lengths[i], seq_len)):
        n = min(lengths[i], seq_len)
        fits = [r for r in range(len(rows)) if room[r] >= n]
        if fits:
            best = min(fits, key=lambda r: room[r])
            rows[best].append(i)
            room[best] -= n
        else:
            rows.append([i])
            room.append(seq_len - n)
    return [i for row in rows for i in row]


def pad_packed(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows -> tensors. Padding gets label -100 and its own positions 0, 1, ... (a segment of its own).

    There is deliberately no attention_mask: transformers reads the example boundaries from position_ids
    only when the mask is absent (and no KV cache is in use; see `packed_loss`).
    """
    width = max(len(r["input_ids"]) for r in rows)
    ids, labels, positions = [], [], []
    for r in rows:
        pad = width - len(r["input_ids"])
        ids.append(r["input_ids"] + [pad_id] * pad)
        labels.append(r["labels"] + [IGNORE_INDEX] * pad)
        positions.append(r["position_ids"] + list(range(pad)))
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(positions)}


class PackedChatCollator:
    """Rows with `prompt` and `response` -> chat-formatted, response-masked, packed into rows of `seq_len`."""

    def __init__(self, tokenizer, seq_len: int):
        self.tokenizer, self.seq_len = tokenizer, seq_len

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        features = [data.encode_chat(self.tokenizer, r["prompt"], r["response"], self.seq_len) for r in rows]
        return pad_packed(pack(features, self.seq_len), self.tokenizer.pad_token_id)


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Which example each token belongs to: a new segment wherever the position does not go up by one."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[..., 1:] = position_ids[..., 1:] != position_ids[..., :-1] + 1
    return starts.long().cumsum(-1) - 1


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """M[b, i, j] = True where token i may attend to token j: same example and j <= i (block-diagonal causal)."""
    seg = segment_ids(position_ids)
    n = position_ids.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return (seg[..., :, None] == seg[..., None, :]) & causal


def packed_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Summed next-token loss of a packed batch (a `loss_fn` for ftlab.train).

    use_cache=False matters: with a KV cache object present, transformers skips its packed-sequence
    detection and lets every token attend to all earlier tokens of the row, other examples included.
    """
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    return causal_lm_loss(logits, batch["labels"], reduction="sum")


# --- evaluation ----------------------------------------------------------------------------------


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 40, batch_size: int = 64) -> list[str]:
    """Greedy replies to user prompts, in the tokenizer's chat template, decoded without special tokens.

    Prompts are left-padded so that every row's last prompt token sits at the same column and
    generation continues all rows in step; generation stops at the end-of-turn token (eos).
    """
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    replies = []
    with eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            encoded = [data.encode_chat(tokenizer, p)["input_ids"] for p in prompts[start:start + batch_size]]
            ids = data.left_pad(encoded, tokenizer.pad_token_id).to(device)
            mask = data.left_pad([[1] * len(x) for x in encoded], 0).to(device)
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            replies += tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return [r.strip() for r in replies]


@torch.no_grad()
def reply_scores(model, tokenizer, rows: list[dict], max_length: int, batch_size: int = 16) -> dict[str, list]:
    """Score each row's reference `response` under the model, from one teacher-forced forward pass.

        nll[i]    mean -log p(reply token | everything before it) over the reply's targets (`encode_chat`)
        match[i]  True when greedy decoding would write the reply exactly: at every reply position up to and
                  including the first end-of-turn token, the most probable next token is the reference one

    `match` is greedy exact match without generating: each generated token is the argmax given the tokens
    before it, so greedy decoding reproduces the reference exactly when every argmax along the reference
    is the reference token (a reply the model would reach through another tokenization counts as a miss).
    The logits must be output_embeddings(decoder's last hidden state), as in Llama-style models: only the
    reply positions go through the vocabulary projection.
    """
    if not rows:
        raise ValueError("rows is empty: there are no replies to score")
    eos = tokenizer.eos_token_id
    collate = data.ChatCollator(tokenizer, max_length)
    scores: dict[str, list] = {"nll": [], "match": []}
    device = next(model.parameters()).device
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start:start + batch_size]).items()}
            targets = batch["labels"][:, 1:]
            empty = (targets != IGNORE_INDEX).sum(1).eq(0).nonzero().flatten()
            if len(empty):
                raise ValueError(f"row {start + int(empty[0])} has no reply tokens left within max_length={max_length}")
            hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                                         ).last_hidden_state[:, :-1]
            # the vocabulary projection only where a reply token is predicted: most positions are prompt
            rows_i, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
            logits = model.get_output_embeddings()(hidden[rows_i, cols]).float()
            nll = torch.nn.functional.cross_entropy(logits, targets[rows_i, cols], reduction="none")
            hit = logits.argmax(-1) == targets[rows_i, cols]
            for i in range(len(targets)):
                mine = rows_i == i
                ends = (targets[i, cols[mine]] == eos).nonzero().flatten()
                upto = int(ends[0]) + 1 if len(ends) else int(mine.sum())
                scores["nll"].append(nll[mine].mean().item())
                scores["match"].append(bool(hit[mine][:upto].all()))
    return scores


def exact_match_by_task(rows: list[dict], replies: list[str]) -> dict[str, float]:
    """Share of replies that state the row's canonical answer, per task, plus "all" over every row.

    A hit is `evaluation.contains_answer(reply, answer, case_sensitive=True)`: the replies wrap the answer in
    a sentence ("The time is 10:30 pm."), and capitals count because some tasks are about them.
    """
    if len(rows) != len(replies):
        raise ValueError(f"{len(rows)} rows but {len(replies)} replies")
    hits: dict[str, list[bool]] = {}
    for row, reply in zip(rows, replies):
        hits.setdefault(row["task"], []).append(evaluation.contains_answer(reply, row["answer"], case_sensitive=True))
    scores = {task: sum(h) / len(h) for task, h in sorted(hits.items())}
    scores["all"] = sum(sum(h) for h in hits.values()) / len(rows)
    return scores


def text_perplexity(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 16) -> float:
    """exp(mean next-token loss) over every token of `texts`: the general-ability probe for forgetting."""
    rows = [{"text": t} for t in texts]
    return evaluation.perplexity(model, rows, data.CausalLMCollator(tokenizer, max_length), batch_size)
