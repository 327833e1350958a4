import json

import pytest
import torch

from ftlab import data, models


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_valid_file_skips_blank_lines(tmp_path):
    f = write(tmp_path / "ok.jsonl", ['{"id": "a", "text": "x"}', "", '{"id": "b", "text": "y"}'])
    assert [r["id"] for r in data.read_jsonl(f, {"id": str, "text": str})] == ["a", "b"]


@pytest.mark.parametrize("line, reason", [
    ('{"id": "a", "text": ', "not valid JSON"),
    ('["id", "text"]', "expected a JSON object, got list"),
    ('{"id": "a"}', "missing field 'text'"),
    ('{"id": "a", "text": 3}', "field 'text' should be str, got int"),
    ('{"id": true, "text": "x"}', "field 'id' should be str, got bool"),
])
def test_bad_line_names_file_line_and_reason(tmp_path, line, reason):
    f = write(tmp_path / "bad.jsonl", ['{"id": "ok", "text": "fine"}', line])
    with pytest.raises(data.DataError) as e:
        data.read_jsonl(f, {"id": str, "text": str})
    assert str(e.value).startswith(f"{f}:2: ") and reason in str(e.value)


def test_bool_is_not_an_int_label(tmp_path):
    f = write(tmp_path / "s.jsonl", [json.dumps({"id": "a", "text": "t", "label": True, "domain": "m"})])
    with pytest.raises(data.DataError, match="'label' should be int"):
        data.read_jsonl(f, data.SCHEMAS["sentiment"])


def test_missing_file_and_unknown_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_DATA", str(tmp_path))
    with pytest.raises(data.DataError, match="no such file"):
        data.load("sentiment", "train")
    with pytest.raises(ValueError, match="unknown dataset 'imdb'"):
        data.load("imdb")


def test_load_uses_schema_and_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_DATA", str(tmp_path))
    (tmp_path / "general").mkdir()
    write(tmp_path / "general" / "test.jsonl", [json.dumps({"id": str(i), "text": f"t{i}"}) for i in range(5)])
    assert len(data.load("general", "test", n=3)) == 3


def test_pad_batch_masks_padding_from_loss():
    batch = data.pad_batch([{"input_ids": [5, 6, 7]}, {"input_ids": [8], "labels": [-100]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [-100, -100, -100]]


class CharTokenizer:
    pad_token_id = 0

    def __call__(self, text, truncation=True, max_length=None):
        ids = [ord(c) for c in text][:max_length]
        return {"input_ids": ids}


def test_causal_collator_truncates_and_pads():
    batch = data.CausalLMCollator(CharTokenizer(), max_length=4)([{"text": "abcdef"}, {"text": "ab"}])
    assert batch["input_ids"].shape == (2, 4)
    assert batch["labels"][1].tolist() == [97, 98, -100, -100]


def test_split_batch_covers_every_row():
    batch = {"input_ids": torch.arange(10).reshape(5, 2), "labels": torch.arange(5)}
    parts = data.split_batch(batch, 2)
    assert [len(p["labels"]) for p in parts] == [2, 2, 1]
    assert torch.equal(torch.cat([p["input_ids"] for p in parts]), batch["input_ids"])


def test_encode_pairs_stacks_chosen_then_rejected_with_reply_labels():
    _, tok = models.load("tiny-llama")
    rows = data.load("preferences", "train", n=3)
    batch = data.encode_pairs(tok, rows)
    assert batch["input_ids"].shape[0] == 6
    for i, (r, side) in enumerate([(r, s) for s in ("chosen", "rejected") for r in rows]):
        want = data.encode_chat(tok, r["prompt"], r[side])
        n = int(batch["attention_mask"][i].sum())
        assert batch["input_ids"][i, :n].tolist() == want["input_ids"]
        assert batch["labels"][i, :n].tolist() == want["labels"]
    with pytest.raises(ValueError, match=r"row 1 lacks \['chosen'\]"):
        data.encode_pairs(tok, [rows[0], {"prompt": "a", "rejected": "b"}])
    with pytest.raises(ValueError, match="empty"):
        data.encode_pairs(tok, [])


def test_left_pad_puts_every_last_token_in_the_last_column():
    assert data.left_pad([[5, 6], [7]], 0).tolist() == [[5, 6], [0, 7]]
    with pytest.raises(ValueError, match="empty"):
        data.left_pad([], 0)
