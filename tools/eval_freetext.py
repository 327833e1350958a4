"""Precision and recall of the free-text scorer's "pass" on a labelled set of answers.

    .venv/bin/python tools/eval_freetext.py            # summary: overall, tune and held-out items, per category
    .venv/bin/python tools/eval_freetext.py --errors   # also list every answer scored against its label

The hand-written answers live in data/freetext/labelled.jsonl (see data/freetext/README.md). The
attacks are built here from each item's own text with a fixed seed, so they follow the bank when
its wording changes:

- salad: 6 sentences of 10 words drawn from the key points' longer words (the reviewer's recipe);
- salad-all-words: every word of the key points, function words included, shuffled into sentences;
- keywords: a comma-separated list of the key terms;
- echo: the prompt pasted back; echo-twice: the prompt, then the prompt again reworded as a statement;
- off-topic: a correct answer written for an item of another chapter;
- too-long: a correct answer padded past the length cap (must be refused, not scored).

Items are split into "tune" and "held-out" (one item per chapter, drawn once with a fixed seed and
stored in the data file): the scorer's constants were chosen looking at the tune rows only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "data" / "freetext" / "labelled.jsonl"
SEED = 20261206
PASS_CATEGORIES = {"correct", "short"}


def load_labelled(path: Path = LABELLED) -> list[dict]:
    """The hand-written rows; a row missing a field or naming an unknown label is refused by line."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        missing = {"id", "item", "category", "text", "label", "split"} - set(row)
        if missing or row["label"] not in ("pass", "no-pass") or row["split"] not in ("tune", "held-out"):
            raise ValueError(f"{path}:{n}: bad row (missing {sorted(missing)} or unknown label/split)")
        rows.append(row)
    return rows


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9][\w'-]*", text)


def _sentence(words: list[str]) -> str:
    return " ".join(words).capitalize() + "."


def _question(prompt: str) -> str:
    """The prompt without its 'Interview question:' lead-in."""
    return re.sub(r"^[^:?]{0,40}[:—-]\s*", "", " ".join(prompt.split()))


def attacks(item, correct_elsewhere: str, correct_here: str, rng: random.Random) -> list[tuple[str, str]]:
    """(category, text) answers that must not pass, built from the item's own words."""
    kp_words = [w for k in item.key_points for w in _words(k)]
    long_words = sorted({w.lower() for w in kp_words if len(w) > 3})
    salad = " ".join(_sentence([rng.choice(long_words) for _ in range(10)]) for _ in range(6))
    shuffled = [w.lower() for w in kp_words]
    rng.shuffle(shuffled)
    all_words = " ".join(_sentence(shuffled[i:i + 12]) for i in range(0, len(shuffled), 12))
    keywords = ", ".join(rng.sample(long_words, min(14, len(long_words))))
    question = _question(item.prompt)
    echo_twice = f"{question} So you want to know {question[0].lower() + question[1:].rstrip('?.')}."
    padding = [correct_here] * 8
    too_long = " ".join(padding)
    return [("salad", salad), ("salad-all-words", all_words), ("keywords", keywords),
            ("echo", " ".join(item.prompt.split())), ("echo-twice", echo_twice),
            ("off-topic", correct_elsewhere), ("too-long", too_long)]


def build_set(rows: list[dict], items: dict) -> list[dict]:
    """The labelled rows plus the generated attacks, each with item, category, text, label, split."""
    by_item = defaultdict(list)
    for row in rows:
        by_item[row["item"]].append(row)
    order = sorted(by_item)
    out = list(rows)
    for n, iid in enumerate(order):
        # Off-topic: a correct answer to the item half the list away, which is another chapter's.
        other = order[(n + len(order) // 2) % len(order)]
        elsewhere = next(r["text"] for r in by_item[other] if r["category"] == "correct")
        here = next(r["text"] for r in by_item[iid] if r["category"] == "correct")
        split = by_item[iid][0]["split"]
        # One generator per item, so editing one item's key points leaves every other item's attacks as they were.
        rng = random.Random(f"{SEED}:{iid}")
        for category, text in attacks(items[iid], elsewhere, here, rng):
            out.append({"id": f"{iid}/{category}", "item": iid, "category": category, "text": text,
                        "label": "no-pass", "split": split})
    return out


def measure(rows: list[dict], items: dict, score) -> list[dict]:
    """Each row with `passed`, `covered` and the seconds its scoring took."""
    results = []
    for row in rows:
        item = items[row["item"]]
        start = time.perf_counter()
        result = score(row["text"], list(item.key_points), prompt=item.prompt)
        results.append({**row, "passed": result.passed, "covered": len(result.hits), "of": len(item.key_points),
                        "seconds": time.perf_counter() - start})
    return results


def precision_recall(results: list[dict]) -> tuple[float, float, int, int]:
    """Precision and recall of "pass", with the number of labelled passes and of predicted passes."""
    tp = sum(r["passed"] and r["label"] == "pass" for r in results)
    predicted = sum(r["passed"] for r in results)
    actual = sum(r["label"] == "pass" for r in results)
    return tp / max(1, predicted), tp / max(1, actual), actual, predicted


def report(results: list[dict]) -> str:
    lines = []
    for name, subset in (("all items", results), ("tune items", [r for r in results if r["split"] == "tune"]),
                         ("held-out items", [r for r in results if r["split"] == "held-out"])):
        p, r, actual, predicted = precision_recall(subset)
        n_items = len({x["item"] for x in subset})
        lines.append(f"{name:15s} {n_items:3d} items {len(subset):4d} answers: precision {p:.3f}  recall {r:.3f}"
                     f"  ({actual} should pass, {predicted} passed)")
    lines.append("pass rate by category (all items | held-out items):")
    categories = sorted({r["category"] for r in results}, key=lambda c: (c not in PASS_CATEGORIES, c))
    for category in categories:
        rows = [r for r in results if r["category"] == category]
        held = [r for r in rows if r["split"] == "held-out"]
        want = "pass" if category in PASS_CATEGORIES else "no pass"
        lines.append(f"  {category:16s} {sum(r['passed'] for r in rows):3d}/{len(rows):<3d}"
                     f" | {sum(r['passed'] for r in held):2d}/{len(held):<2d}  (should: {want})")
    slowest = max(results, key=lambda r: r["seconds"])
    lines.append(f"slowest answer: {slowest['seconds']:.2f} s ({slowest['id']}, {len(slowest['text'])} chars)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--errors", action="store_true", help="list every answer whose pass/no-pass is wrong")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from ftlab.quiz import load_banks, scoring

    items = {i.id: i for i in load_banks()}
    scoring.embed(["load the embedder before timing"])
    results = measure(build_set(load_labelled(), items), items, scoring.score)
    print(report(results))
    if args.errors:
        for r in results:
            if r["passed"] != (r["label"] == "pass"):
                print(f"\n[{r['id']}] {r['category']} labelled {r['label']}, covered {r['covered']}/{r['of']}:"
                      f" {r['text'][:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
