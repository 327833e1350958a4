"""Course datasets (JSON Lines under data/, written for this course) and batch collation.

    rows = load("sentiment", "train")                 # list of dicts, validated line by line
    collate = CausalLMCollator(tok, max_length=128)   # pads, masks padding out of the loss (-100)
    batch = collate(rows[:8])

A malformed line fails with `path:line: reason`, never a silent skip. See data/README.md for how
each dataset was made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ftlab.losses import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[1]

# name -> required field -> type. Extra fields are allowed.
SCHEMAS: dict[str, dict[str, type]] = {
    "sentiment": {"id": str, "text": str, "label": int, "domain": str},
    "instructions": {"id": str, "task": str, "prompt": str, "response": str, "answer": str},
    "preferences": {"id": str, "prompt": str, "chosen": str, "rejected": str, "kind": str},
    "general": {"id": str, "text": str},
    "reviews": {"id": str, "prompt": str, "chosen": str, "rejected": str, "thing": str, "domain": str, "kind": str},
}


class DataError(ValueError):
    """A data file that cannot be used; the message starts with `path:line:`."""


def data_dir() -> Path:
    """$FTLAB_DATA if set, else the repository's data/ folder."""
    return Path(os.environ.get("FTLAB_DATA") or ROOT / "data")


def read_jsonl(path: str | Path, fields: dict[str, type] | None = None) -> list[dict]:
    """Every object of a JSON Lines file, checking that each has `fields` with the right types.

    Blank lines are allowed (editors add them); anything else that is not a JSON object is an error.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for field, typ in (fields or {}).items():
                if field not in row:
                    raise DataError(f"{where}: missing field {field!r}")
                value = row[field]
                if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                    raise DataError(f"{where}: field {field!r} should be {typ.__name__}, "
                                    f"got {type(value).__name__} {value!r:.40}")
            rows.append(row)
    return rows


def load(name: str, split: str = "train", n: int | None = None) -> list[dict]:
    """The rows of data/<name>/<split>.jsonl (the first `n` if given), validated against SCHEMAS."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown dataset {name!r}; the course datasets are {', '.join(SCHEMAS)}")
    rows = read_jsonl(data_dir() / name / f"{split}.jsonl", SCHEMAS[name])
    return rows[:n] if n is not None else rows


def as_hf_dataset(rows: list[dict]):
    """The same rows as a `datasets.Dataset` (for transformers' Trainer and TRL)."""
    import datasets

    return datasets.Dataset.from_list(rows)


def pad_batch(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad lists of `input_ids` (and `labels`, if present) into tensors.

    attention_mask is 1 on real tokens; padded label positions get IGNORE_INDEX so the loss
    never sees them. Without `labels`, labels = input_ids (causal LM: predict every token).
    """
    width = max(len(f["input_ids"]) for f in features)
    ids, mask, labels = [], [], []
    for f in features:
        n, pad = len(f["input_ids"]), width - len(f["input_ids"])
        ids.append(list(f["input_ids"]) + [pad_id] * pad)
        mask.append([1] * n + [0] * pad)
        labels.append(list(f.get("labels", f["input_ids"])) + [IGNORE_INDEX] * pad)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def left_pad(sequences: list[torch.Tensor | list[int]], pad_id: int) -> torch.Tensor:
    """Stack id sequences into a (B, max_len) tensor padded on the left, so every row's last token sits in the
    last column and generation continues all rows in step on the right."""
    if not sequences:
        raise ValueError("sequences is empty")
    width = max(len(s) for s in sequences)
    return torch.stack([torch.nn.functional.pad(torch.as_tensor(s), (width - len(s), 0), value=pad_id)
                        for s in sequences])


class CausalLMCollator:
    """Examples with `text` (or pre-tokenized `input_ids` / `labels`) -> a padded causal-LM batch."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        features = []
        for ex in examples:
            if "input_ids" in ex:
                f = {k: ex[k][: self.max_length] for k in ("input_ids", "labels") if k in ex}
            else:
                f = {"input_ids": self.tokenizer(ex["text"], truncation=True, max_length=self.max_length)["input_ids"]}
            features.append(f)
        return pad_batch(features, self.tokenizer.pad_token_id)


class ClassificationCollator:
    """Examples with `text` and integer `label` -> tokenized, padded batch with `labels`."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([ex["text"] for ex in examples], padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch["labels"] = torch.tensor([ex["label"] for ex in examples])
        return batch


def split_batch(batch: dict[str, torch.Tensor], micro_batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Cut a batch along its first dimension into micro-batches of at most `micro_batch_size` rows."""
    n = len(next(iter(batch.values())))
    return [{k: v[i: i + micro_batch_size] for k, v in batch.items()} for i in range(0, n, micro_batch_size)]


# --- chat formatting and the response-only loss mask (chapter 06; reused by 07 and 08) ----------


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                              tokenize=True, return_dict=True)["input_ids"])


def encode_chat(tokenizer, prompt: str, response: str | None = None, max_length: int | None = None) -> dict:
    """One user turn (and the assistant's reply) in the tokenizer's chat template, with labels.

        prompt_ids = template([user])                 + assistant header   (add_generation_prompt)
        full_ids   = template([user, assistant])      ... reply <end of turn>
        labels     = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]      only the reply is learned

    Without `response`: the prompt ids ready for `generate`, every label -100. The same split as TRL's
    SFTTrainer for prompt-completion data. `max_length` cuts from the right.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no chat_template to format turns with")
    user = [{"role": "user", "content": prompt}]
    prompt_ids = _chat_ids(tokenizer, user, add_generation_prompt=True)
    if response is None:
        ids, labels = prompt_ids, [IGNORE_INDEX] * len(prompt_ids)
    else:
        ids = _chat_ids(tokenizer, user + [{"role": "assistant", "content": response}], add_generation_prompt=False)
        if ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template renders the prompt differently once a reply follows it, "
                             "so the reply's tokens cannot be located (prompt is not a prefix)")
        labels = [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids):]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def encode_pairs(tokenizer, rows: list[dict], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Preference rows (prompt, chosen, rejected) -> one right-padded batch of 2B chat sequences: the B
    chosen replies, then the B rejected, labels on reply tokens only (`encode_chat`).

    One width for both halves lets a single forward pass score both: reward models (chapter 07) and DPO
    (chapter 08) read the same batch.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; set tokenizer.pad_token first")
    if not rows:
        raise ValueError("rows is empty: a preference batch needs at least one (prompt, chosen, rejected) row")
    for i, row in enumerate(rows):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise ValueError(f"preference row {i} lacks {missing}: every row needs 'prompt', 'chosen' and 'rejected'")
    features = [encode_chat(tokenizer, r["prompt"], r[side], max_length)
                for side in ("chosen", "rejected") for r in rows]
    return pad_batch(features, tokenizer.pad_token_id)


def encode_conversation(tokenizer, messages: list[dict], max_length: int | None = None) -> dict:
    """A whole conversation in the chat template, with every assistant turn (and its end-of-turn) a target.

    Turn by turn: the conversation up to an assistant turn, rendered with the generation prompt, must be a
    prefix of the conversation through that turn; the tokens in between are that turn's reply, labelled
    with themselves. Everything else (system and user turns, role headers) is -100. With one user turn and
    one reply this is `encode_chat`. `max_length` cuts from the right.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no chat_template to format turns with")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not {"role", "content"} <= set(m):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r:.60}")
    ids = _chat_ids(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _chat_ids(tokenizer, messages[:k], add_generation_prompt=True)
        through = _chat_ids(tokenizer, messages[:k + 1], add_generation_prompt=False)
        if ids[: len(start)] != start or ids[: len(through)] != through:
            raise ValueError(f"messages[{k}]: the template renders the conversation around this assistant turn "
                             "differently once later turns follow, so its tokens cannot be located")
        labels[len(start):len(through)] = ids[len(start):len(through)]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


class ChatCollator:
    """Rows with `prompt` and `response` -> a padded causal-LM batch whose loss counts only the replies.

    `reply_only=False` makes every real token a target, the prompt and template tokens included: the
    ablation that shows what the reply-only mask buys (chapter 06).
    """

    def __init__(self, tokenizer, max_length: int, reply_only: bool = True):
        if not isinstance(reply_only, bool):
            raise TypeError(f"ChatCollator reply_only must be True or False, got {reply_only!r}")
        self.tokenizer, self.max_length, self.reply_only = tokenizer, max_length, reply_only

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        features = [encode_chat(self.tokenizer, r["prompt"], r["response"], self.max_length) for r in rows]
        if not self.reply_only:
            features = [{"input_ids": f["input_ids"]} for f in features]  # pad_batch: labels = input_ids
        return pad_batch(features, self.tokenizer.pad_token_id)
