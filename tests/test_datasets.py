"""The committed datasets under data/: sizes, fields, balance, leakage, checkable answers, reproducibility.

Reads the files with plain Python (no ftlab import), so a broken loader cannot hide a broken file.
"""

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
GENERATOR = ROOT / "tools" / "make_data.py"

MINIMUM = {  # dataset -> split -> rows
    "sentiment": {"train": 2000, "test": 500},
    "instructions": {"train": 1000, "test": 200},
    "preferences": {"train": 1000, "test": 200},
    "general": {"train": 300, "test": 100},
    "reviews": {"train": 192, "test": 64},
}
FIELDS = {
    "sentiment": {"id": str, "text": str, "label": int, "domain": str},
    "instructions": {"id": str, "task": str, "prompt": str, "response": str, "answer": str},
    "preferences": {"id": str, "prompt": str, "chosen": str, "rejected": str, "kind": str},
    "general": {"id": str, "text": str},
    "reviews": {"id": str, "prompt": str, "chosen": str, "rejected": str, "thing": str, "domain": str, "kind": str},
}
TEXT_FIELD = {"sentiment": "text", "instructions": "prompt", "preferences": "prompt", "general": "text",
              "reviews": "prompt"}
TASKS = {"arithmetic", "unit_conversion", "formatting", "sorting", "counting", "extraction", "comparison"}
KINDS = {"wrong_answer", "unhelpful", "rude", "verbose", "off_topic", "unsafe_compliance"}


def read(rel):
    path = DATA / rel
    raw = path.read_bytes()
    assert b"\r" not in raw, f"{rel}: line endings must be \\n"
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


@pytest.fixture(scope="module")
def gen():
    """tools/make_data.py imported from its path (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(MINIMUM))
def test_sizes_fields_ids(name):
    ids = Counter()
    for split, minimum in MINIMUM[name].items():
        rows = read(f"{name}/{split}.jsonl")
        assert len(rows) >= minimum, f"{name}/{split}: {len(rows)} rows < {minimum}"
        for i, row in enumerate(rows, 1):
            for field, typ in FIELDS[name].items():
                assert field in row, f"{name}/{split}:{i}: missing {field!r}"
                assert type(row[field]) is typ, f"{name}/{split}:{i}: {field!r} is {type(row[field]).__name__}"
                if typ is str:
                    assert row[field].strip(), f"{name}/{split}:{i}: empty {field!r}"
            ids[row["id"]] += 1
    dupes = [i for i, n in ids.items() if n > 1]
    assert not dupes, f"{name}: duplicate ids {dupes[:5]}"


@pytest.mark.parametrize("name", sorted(MINIMUM))
def test_no_duplicates_and_no_train_test_overlap(name):
    field = TEXT_FIELD[name]
    train = [r[field] for r in read(f"{name}/train.jsonl")]
    test = [r[field] for r in read(f"{name}/test.jsonl")]
    if name != "preferences":  # a preference prompt may carry several pairs; texts must be unique
        for split, texts in (("train", train), ("test", test)):
            dupes = [t for t, n in Counter(texts).items() if n > 1]
            assert not dupes, f"{name}/{split}: duplicate {field} {dupes[:3]}"
    shared = set(train) & set(test)
    assert not shared, f"{name}: {len(shared)} {field}s in both train and test, e.g. {sorted(shared)[:2]}"


def test_instruction_prompts_never_reused_in_preferences():
    instr = {r["prompt"] for s in ("train", "test") for r in read(f"instructions/{s}.jsonl")}
    prefs = {r["prompt"] for s in ("train", "test") for r in read(f"preferences/{s}.jsonl")}
    assert not instr & prefs


def test_sentiment_domains_and_balance():
    for split in ("train", "test"):
        rows = read(f"sentiment/{split}.jsonl")
        assert {r["domain"] for r in rows} == {"movies", "electronics"}
        assert {r["label"] for r in rows} == {0, 1}
        for domain in ("movies", "electronics"):
            labels = [r["label"] for r in rows if r["domain"] == domain]
            share = sum(labels) / len(labels)
            assert 0.45 <= share <= 0.55, f"sentiment/{split}/{domain}: {share:.1%} positive"
            assert all(r["id"].startswith(f"sent-{domain}-") for r in rows if r["domain"] == domain)
        n_sentences = [len(re.findall(r"[.!?](?:\s|$)", r["text"])) for r in rows]  # sentence ends
        assert min(n_sentences) >= 1 and max(n_sentences) <= 3


def test_sentiment_domains_use_different_vocabulary():
    rows = read("sentiment/train.jsonl")
    words = {d: Counter(w.strip(".,!?;:'").lower() for r in rows if r["domain"] == d for w in r["text"].split())
             for d in ("movies", "electronics")}
    for word in ("screenplay", "cast", "pacing"):
        assert words["movies"][word] > 0 and words["electronics"][word] == 0, word
    for word in ("battery", "firmware", "hinge"):
        assert words["electronics"][word] > 0 and words["movies"][word] == 0, word


def test_instruction_answers_recomputed_from_prompts(gen):
    tasks = Counter()
    for split in ("train", "test"):
        for row in read(f"instructions/{split}.jsonl"):
            tasks[row["task"]] += 1
            assert row["task"] in TASKS
            assert gen.solve(row["task"], row["prompt"]) == row["answer"], row["id"]
            assert row["answer"] in row["response"], row["id"]
            assert len(row["response"].split()) <= 40, row["id"]
    assert len(tasks) >= 5


def test_unit_conversions_have_short_exact_numbers():
    # A quantity made by dividing by an inexact ratio (1/60 is 0.01666...) came out as
    # "494.9999999999999999999999999 seconds"; every generated quantity has at most 4 decimals.
    long_decimal = re.compile(r"\d\.\d{5,}")
    for name in ("instructions", "preferences"):
        for split in ("train", "test"):
            for row in read(f"{name}/{split}.jsonl"):
                texts = [v for v in row.values() if isinstance(v, str)]
                assert not any(long_decimal.search(t) for t in texts), (name, split, row["id"])


def test_solvers_on_hand_written_prompts(gen):
    cases = [
        ("arithmetic", "Subtract 8 from 30.", "22"),
        ("arithmetic", "How many times does 7 go into 84?", "12"),
        ("unit_conversion", "Convert 3.5 kilometers to meters.", "3500 m"),
        ("unit_conversion", "How many hours are in 90 minutes?", "1.5 hours"),
        ("unit_conversion", "Convert 25 degrees Celsius to Fahrenheit.", "77 °F"),
        ("formatting", "Write 'banana' in capital letters.", "BANANA"),
        ("formatting", "Turn 'Green Tea cup' into snake_case.", "green_tea_cup"),
        ("sorting", "Sort these words alphabetically: pear, apple, kiwi.", "apple, kiwi, pear"),
        ("sorting", "List these numbers in descending order: 5, 50, 15.", "50, 15, 5"),
        ("counting", "How many vowels are in the word 'banana'?", "3"),
        ("extraction", "Extract the price from: 'The lamp costs $24.99 at the market on Sunday.'", "$24.99"),
        ("comparison", "Which is larger, 3.7 or 3.65?", "3.7"),
        ("comparison", "Which is heavier, 2 kg or 1500 g?", "2 kg"),
    ]
    for task, prompt, answer in cases:
        assert gen.solve(task, prompt) == answer, prompt
    with pytest.raises(ValueError):
        gen.solve("arithmetic", "What is the meaning of life?")


def test_preferences():
    kinds = Counter()
    for split in ("train", "test"):
        for row in read(f"preferences/{split}.jsonl"):
            assert row["chosen"] != row["rejected"], row["id"]
            assert row["kind"] in KINDS, row["kind"]
            kinds[row["kind"]] += 1
    assert set(kinds) == KINDS, kinds


def test_reviews_hold_out_whole_things():
    train, test = read("reviews/train.jsonl"), read("reviews/test.jsonl")
    assert not {r["thing"] for r in train} & {r["thing"] for r in test}, "a thing is in both reviews splits"
    for row in train + test:
        assert row["thing"] in row["prompt"], f"reviews {row['id']}: prompt does not name {row['thing']!r}"
        assert row["chosen"] != row["rejected"], f"reviews {row['id']}: chosen equals rejected"


def test_bias_probe():
    templates = read("bias_probe/templates.jsonl")
    groups = json.loads((DATA / "bias_probe" / "groups.json").read_text(encoding="utf-8"))
    assert len(templates) >= 40
    assert len({t["id"] for t in templates}) == len(templates)
    for t in templates:
        assert t["template"].count("{group}") == 1 and t["label"] in (0, 1), t
    labels = Counter(t["label"] for t in templates)
    assert labels[0] == labels[1]
    assert len(groups) >= 2
    for name, words in groups.items():
        assert isinstance(words, list) and len(words) >= 4 and all(isinstance(w, str) and w for w in words), name
        assert len(set(words)) == len(words), name


def test_total_size_under_5_mb():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 5 * 1024 * 1024, f"data/ is {total / 1e6:.1f} MB"


def test_generator_reproduces_committed_files():
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
