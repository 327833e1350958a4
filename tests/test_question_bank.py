"""The interview question banks (quizzes/bank) and drafts (quizzes/drafts), vetted.

- every file parses with `parse_bank`, and `validate` finds no problem (dead `see` links included) in the bank;
- no item id appears twice across banks and drafts;
- the size and mix rules of issue 5 hold for every chapter file that claims to be complete
  (a draft still being written says `complete: false` at its top level);
- cheap consistency checks that catch answer-key slips (a wrong option whose feedback says "Right");
- every numeric answer is recomputed here from the assumptions its prompt states, and by calling the
  `ftlab` function that computes it where one exists (memory estimator, NF4 bits per parameter,
  LoRA parameter count), so a key and the code cannot drift apart;
- (slow) every free-text model answer passes the course's own free-text scorer against its key points.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import costs, memory, train, transfer
from ftlab.quant import nf4
from ftlab.quiz import stats
from ftlab.quiz.bank import BANK_DIR, REPO, choice_order, parse_bank, validate
from ftlab.tuners import lora

DRAFTS_DIR = REPO / "quizzes" / "drafts"
BANKS = sorted(BANK_DIR.glob("*.yaml"))
DRAFTS = sorted(DRAFTS_DIR.glob("*.yaml"))
FILES = BANKS + DRAFTS
CHAPTERS = [f"{n:02d}" for n in range(11)]


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> tuple:
    return tuple(parse_bank(path))


def _items(path: Path) -> list:
    items, problems = _parsed(path)[:2]
    assert not problems, "\n".join(map(str, problems))
    return items


def _all_items() -> list:
    return [item for path in FILES for item in _items(path)]


@functools.lru_cache(maxsize=None)
def _claims_complete(path: Path) -> bool:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data.get("complete", True) is not False


# --- structure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", FILES, ids=_name)
def test_file_parses_without_problems(path):
    assert _items(path), f"{_name(path)} has no items"


def test_bank_links_resolve():
    problems = validate(BANK_DIR, REPO)
    assert not problems, "quizzes/bank must only hold banks whose links resolve; move the file to quizzes/drafts " \
                         "until its chapter has these headings:\n" + "\n".join(map(str, problems))


def test_bank_files_are_complete():
    unfinished = [_name(p) for p in BANKS if not _claims_complete(p)]
    assert not unfinished, f"only complete banks belong in quizzes/bank: {unfinished}"


def test_no_duplicate_ids_across_banks_and_drafts():
    seen, dups = {}, []
    for path in FILES:
        result = _parsed(path)
        for item_id in result[2] if len(result) > 2 else [i.id for i in result[0]]:  # raw ids where available
            if item_id in seen:
                dups.append(f"{item_id} in {_name(path)} and {seen[item_id]}")
            seen.setdefault(item_id, _name(path))
    assert not dups, "duplicate ids:\n" + "\n".join(dups)


def test_every_chapter_has_a_file():
    # Several files may serve one chapter (`NN_*.yaml`; parse_bank checks that `chapter:` matches the prefix).
    chapters = sorted({path.name[:2] for path in FILES})
    assert chapters == CHAPTERS, f"chapters with a bank or draft: {chapters}"


def _chapter_notebook(chapter: str) -> str:
    notebooks = sorted((REPO / "chapters").glob(f"{chapter}_*.ipynb"))
    assert len(notebooks) == 1, f"chapter {chapter}: expected one notebook, found {notebooks}"
    return f"chapters/{notebooks[0].name}"


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_links_point_into_the_files_own_chapter(path):
    # Chapter 00 is the tour: its questions preview the whole course, so they link to the chapter that teaches them.
    for item in _items(path):
        target, anchor = item.see.split("#", 1)
        if item.chapter != "00":
            notebook = _chapter_notebook(item.chapter)
            assert target == notebook, f"{item.id}: links to {target}, expected {notebook}"
        assert re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", anchor), \
            f"{item.id}: anchor {anchor!r} must be a plain heading (words joined by '-', no punctuation)"


# --- size and mix (issue 5) --------------------------------------------------------------------------

def _complete_files(chapter: str) -> list[Path]:
    """The complete files of one chapter (a chapter may have several)."""
    return [path for path in FILES if path.name[:2] == chapter and _claims_complete(path)]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_size_and_mix(chapter):
    files = _complete_files(chapter)
    items = [item for path in files for item in _items(path)]
    n = len(items)
    print(f"chapter {chapter}: {', '.join(map(_name, files))}")  # shown with a failure: which files to change
    minimum = 10 if chapter == "00" else 30
    assert n >= minimum, f"{n} items, need >= {minimum}"
    per_level = {d: sum(i.difficulty == d for i in items) for d in range(1, 6)}
    assert all(c >= 4 for c in per_level.values()), f"items per difficulty {per_level}, need >= 4 at each level"
    free = sum(i.kind == "free_text" for i in items)
    numeric = sum(i.kind == "numeric" for i in items)
    assert (free + numeric) / n >= 0.20, f"numeric + free-text = {free + numeric}/{n}, need >= 20 %"
    assert free / n >= 0.25, f"free-text = {free}/{n}, need >= 25 %"


def test_total_across_chapters():
    complete = [p for p in FILES if _claims_complete(p)]
    assert sum(len(_items(p)) for p in complete) >= 310


# --- answer-key consistency ----------------------------------------------------------------------------

_POSITIVE = re.compile(r"^(right|correct|yes|exactly|true)\b", re.I)
_NEGATIVE = re.compile(r"^(no|wrong|false|incorrect|not quite)\b", re.I)


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_choice_items_are_well_formed(path):
    for item in _items(path):
        if item.kind not in ("single", "multi"):
            continue
        assert len(item.choices) >= 3, f"{item.id}: give at least three options"
        feedback = [c.feedback for c in item.choices]
        assert len(set(feedback)) == len(feedback), f"{item.id}: two options share the same feedback"
        correct = {item.answer} if item.kind == "single" else set(item.answer)
        if item.kind == "multi":
            assert correct != {c.id for c in item.choices}, f"{item.id}: every option is correct; add a wrong one"
        for c in item.choices:
            if c.id in correct:
                assert not _NEGATIVE.match(c.feedback), f"{item.id}: keyed option {c.id!r} has negative feedback"
            else:
                assert not _POSITIVE.match(c.feedback), f"{item.id}: wrong option {c.id!r} has feedback that affirms it"


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_every_item_teaches(path):
    for item in _items(path):
        assert len(item.explanation) >= 60, f"{item.id}: the explanation should teach, not just restate the key"
        if item.kind == "free_text":
            assert len(item.model_answer) >= 200, f"{item.id}: model answer too short for an interview answer"
            assert len(set(item.key_points)) == len(item.key_points), f"{item.id}: repeated key point"
            for point in item.key_points:
                assert len(point.split()) >= 5, f"{item.id}: key point {point!r} is not a self-contained idea"
        if item.kind == "numeric":
            assert item.tolerance <= 0.15 * abs(item.value) or item.value == 0, \
                f"{item.id}: tolerance {item.tolerance} is loose for {item.value}"
            assert item.tolerance > 0 or float(item.value).is_integer(), f"{item.id}: non-integer key needs a tolerance"


# --- no giveaways (issue 19): where the key is shown, how long it is, and whether its link teaches ----------------
# The check functions take the items (and the order function) as arguments, so they can be run on any copy of
# the bank; the tests below run them on quizzes/bank. Items of a file that does not parse are left to
# test_file_parses_without_problems.

LEARNERS = tuple(f"learner-{n:03d}" for n in range(200))
KEY_LONGEST_MAX = 0.35  # share of single-choice items whose key is strictly the longest option
FIRST_PICKER_MAX = 0.35  # score of a learner who always picks the first option shown
LONGEST_PICKER_MAX = 0.40  # score of a learner who always picks the longest option shown
KEY_TERM_MAX_SHARE = 0.10  # a word used by more of the bank's items than this says nothing about one item's section


def _bank_items(kind: str | None = None) -> list:
    return [item for path in BANKS for item in _parsed(path)[0] if kind is None or item.kind == kind]


def key_position_problems(items, order=choice_order, learners=LEARNERS) -> list[str]:
    """Items whose key is shown at some position much more or less often than a fair shuffle would show it."""
    problems = []
    for item in items:
        n = len(item.choices)
        counts = collections.Counter(order(item, learner).index(item.answer) for learner in learners)
        expected = len(learners) / n
        spread = math.sqrt(len(learners) * (1 / n) * (1 - 1 / n))
        # A fair shuffle strays five standard deviations from 1/n at one position with p < 1e-6.
        if any(abs(counts[p] - expected) > 5 * spread for p in range(n)):
            problems.append(f"{item.id}: key shown at positions 1..{n} {[counts[p] for p in range(n)]} times "
                            f"for {len(learners)} learners")
    return problems


def first_shown_score(items, order=choice_order, learners=LEARNERS) -> float:
    """Mean score over learners of one who always answers the first option shown."""
    hits = sum(order(item, learner)[0] == item.answer for learner in learners for item in items)
    return hits / (len(items) * len(learners))


def longest_pick(item, shown: list[str]) -> str:
    """The option a length-guesser picks: the longest text, the first shown among equally long ones."""
    length = {c.id: len(c.text) for c in item.choices}
    return max(shown, key=lambda cid: length[cid])  # max keeps the first of equal maxima


def longest_picker_score(items, order=choice_order, learners=LEARNERS) -> float:
    """Mean score over learners of one who always answers the longest option shown."""
    hits = sum(longest_pick(item, order(item, learner)) == item.answer for learner in learners for item in items)
    return hits / (len(items) * len(learners))


def key_strictly_longest(items) -> list[str]:
    """Ids of single-choice items whose key is longer than every other option."""
    longest = []
    for item in items:
        key = next(len(c.text) for c in item.choices if c.id == item.answer)
        if all(len(c.text) < key for c in item.choices if c.id != item.answer):
            longest.append(item.id)
    return longest


def multi_keys_longest(items) -> list[str]:
    """Ids of multi-select items whose keyed options are exactly the longest ones."""
    out = []
    for item in items:
        by_length = sorted(item.choices, key=lambda c: len(c.text), reverse=True)
        keys, rest = by_length[:len(item.answer)], by_length[len(item.answer):]
        if {c.id for c in keys} == set(item.answer) and min(len(c.text) for c in keys) > max(len(c.text) for c in rest):
            out.append(item.id)
    return out


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def section_text(notebook: Path, anchor: str) -> str | None:
    """The Markdown under the heading whose anchor is `anchor`, up to the next heading of the same or a higher
    level (deeper subsections included); None when the notebook has no such heading."""
    lines, fenced = [], False
    for cell in json.loads(notebook.read_text(encoding="utf-8")).get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        for line in "".join(cell["source"]).splitlines():
            fenced ^= line.lstrip().startswith("```")  # a '#' line inside a code fence is no heading
            heading = None if fenced else _HEADING.match(line)
            lines.append((len(heading.group(1)), heading.group(2).replace(" ", "-")) if heading else line)
    level, out = None, []
    for entry in lines:
        if isinstance(entry, tuple):
            if level is None and entry[1] == anchor:
                level = entry[0]
                continue
            if level is not None and entry[0] <= level:
                break
        if level is not None:
            out.append(entry if isinstance(entry, str) else entry[1].replace("-", " "))
    return None if level is None else "\n".join(out)


_STOPWORDS = frozenset("""
a about above after again against all also an and any are as at be because been before being below between both
but by can could did do does doing done down during each either else few for from further had has have having
here how however i if in into is it its itself just least less let like may might more most much must no nor not
now of off often on once one only or other our out over own per rather same should since so some such than that
the their them then there these they this those though through thus to too two under until up upon us very via
was we well were what when where whether which while who whom whose why will with within without would yes yet
you your first second three four five many every way make makes made need needs use used uses using get gets
""".split())


def content_words(text: str) -> set[str]:
    """Lower-cased words of `text` minus stopwords, plural 's' stripped; hyphenated words also count by part."""
    words = set()
    for token in re.findall(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*|\d+(?:\.\d+)?", text.lower()):
        for word in {token, *token.split("-")}:
            if word in _STOPWORDS or (len(word) < 3 and not any(ch.isdigit() for ch in word)):
                continue
            words.add(word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word)
    return words


def _item_words(item) -> set[str]:
    parts = [item.prompt, item.explanation, *(getattr(item, "key_points", None) or [])]
    return content_words(" ".join(parts))


def link_problems(items, root: Path = REPO) -> list[str]:
    """Items whose `see` section shares none of the item's key terms.

    Key terms are the item's content words that at most KEY_TERM_MAX_SHARE of the items use: words such as
    'model' or 'training' occur everywhere and would let any section pass."""
    words = {item.id: _item_words(item) for item in items}
    frequency = collections.Counter(w for ws in words.values() for w in ws)
    common = {w for w, n in frequency.items() if n > max(1, KEY_TERM_MAX_SHARE * len(items))}
    problems, sections = [], {}
    for item in items:
        if item.see not in sections:
            notebook, anchor = item.see.split("#", 1)
            path = Path(root) / notebook
            sections[item.see] = section_text(path, anchor) if path.exists() else None
        text = sections[item.see]
        key_terms = words[item.id] - common
        if text is None:
            problems.append(f"{item.id}: {item.see} is no heading")
        elif not key_terms & content_words(text):
            problems.append(f"{item.id}: {item.see} mentions none of {sorted(key_terms)[:12]}")
    return problems


def test_key_is_shown_at_every_position_alike():
    problems = key_position_problems(_bank_items("single"), choice_order)
    assert not problems, "choice_order does not spread these keys over the positions (a `fixed` key?):\n" + \
        "\n".join(problems)


def test_choice_order_is_stable_per_learner_and_differs_between_learners():
    again = {item.id: item for path in BANKS for item in parse_bank(path)[0]}  # fresh objects, same ids
    unstable, same_for_all = [], []
    for item in _bank_items("single") + _bank_items("multi"):
        orders = [tuple(choice_order(item, learner)) for learner in LEARNERS]
        if orders != [tuple(choice_order(again[item.id], learner)) for learner in LEARNERS]:
            unstable.append(item.id)
        movable = sum(not c.fixed for c in item.choices)
        if movable > 1 and len(set(orders)) < min(math.factorial(movable), len(LEARNERS)) / 2:
            same_for_all.append(item.id)
    assert not unstable, f"one learner sees two orders of: {unstable}"
    assert not same_for_all, f"too few distinct orders across {len(LEARNERS)} learners: {same_for_all}"


def test_first_shown_option_scores_near_chance():
    items = _bank_items("single")
    score = first_shown_score(items, choice_order)
    assert score <= FIRST_PICKER_MAX, f"always picking the first shown option scores {score:.1%}; " \
        f"keys shown first most often: {key_position_problems(items, choice_order)}"


def test_longest_option_is_no_giveaway():
    items = _bank_items("single")
    score = longest_picker_score(items, choice_order)
    longest = key_strictly_longest(items)
    assert score <= LONGEST_PICKER_MAX, \
        f"always picking the longest option scores {score:.1%}; keys that are strictly longest: {longest}"


def test_key_is_rarely_the_longest_option():
    items = _bank_items("single")
    longest = key_strictly_longest(items)
    assert len(longest) <= KEY_LONGEST_MAX * len(items), \
        f"the key is strictly the longest option in {len(longest)}/{len(items)} single-choice items " \
        f"(at most {KEY_LONGEST_MAX:.0%}); lengthen a distractor in some of: {longest}"


def test_multi_select_keys_are_not_the_longest_options():
    items = _bank_items("multi")
    longest = multi_keys_longest(items)
    assert len(longest) <= KEY_LONGEST_MAX * len(items), \
        f"the keyed options are exactly the longest ones in {len(longest)}/{len(items)} multi-select items: {longest}"


def test_see_links_land_on_a_section_that_teaches_the_item():
    problems = link_problems(_bank_items())
    assert not problems, "these items link to a section that mentions none of their key terms; " \
        "teach the point there or link to the section that does:\n" + "\n".join(problems)


_BIASED_BANK = """
chapter: "99"
title: A bank with every giveaway
items:
  - id: biased-adam
    kind: single
    topics: [t]
    difficulty: 1
    prompt: Which optimizer keeps two moment estimates per weight?
    explanation: Adam keeps running averages of the gradients and of their squares for every weight.
    see: chapters/99_x.ipynb#Unrelated
    choices:
      - {id: key, text: Adam keeps two moment estimates per trained weight, feedback: Right.}
      - {id: b, text: SGD, feedback: It keeps no moments.}
      - {id: c, text: Lion, feedback: It keeps one moment.}
    answer: key
  - id: biased-clipping
    kind: single
    topics: [t]
    difficulty: 1
    prompt: What does norm clipping bound?
    explanation: Clipping rescales the whole update when its norm exceeds the threshold.
    see: chapters/99_x.ipynb#Unrelated
    choices:
      - {id: key, text: The norm of the whole update once past the threshold, feedback: Right.}
      - {id: b, text: Loss, feedback: The loss is not clipped.}
      - {id: c, text: Rate, feedback: The rate is not clipped.}
    answer: key
  - id: biased-warmup
    kind: single
    topics: [t]
    difficulty: 1
    prompt: What does warmup ramp up?
    explanation: Warmup raises the step size from near zero over the first few percent of steps.
    see: chapters/99_x.ipynb#Unrelated
    choices:
      - {id: key, text: The step size from near zero over the first steps, feedback: Right.}
      - {id: b, text: Batch, feedback: The batch stays fixed.}
      - {id: c, text: Depth, feedback: The depth stays fixed.}
    answer: key
  - id: biased-lora
    kind: multi
    topics: [t]
    difficulty: 1
    prompt: Which matrices does a LoRA layer train?
    explanation: LoRA trains the low-rank factors A and B beside the frozen matrix W.
    see: chapters/99_x.ipynb#Next
    choices:
      - {id: a, text: The low-rank factor A of the update, feedback: Yes.}
      - {id: b, text: The low-rank factor B of the update, feedback: Yes and it starts at zero.}
      - {id: w, text: W, feedback: No as it is frozen.}
    answer: [a, b]
"""


def test_the_checks_catch_a_bank_with_every_giveaway(tmp_path):
    # Guards the checks themselves: on a small bank built with each bias, every one of them must complain.
    bank_file = tmp_path / "99_x.yaml"
    bank_file.write_text(_BIASED_BANK)
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "99_x.ipynb").write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["## Unrelated\n", "Tokenizers split text into pieces.\n"]},
        {"cell_type": "markdown", "metadata": {},
         "source": ["## Next\n", "A LoRA layer trains two low-rank factors.\n"]}]}))
    items, problems, _ = parse_bank(bank_file)
    assert not problems, problems
    single = [i for i in items if i.kind == "single"]
    file_order = lambda item, learner: [c.id for c in item.choices]  # noqa: E731 (how choices were shown before)
    assert len(key_position_problems(single, order=file_order)) == 3
    assert not key_position_problems(single)
    assert first_shown_score(single, order=file_order) == 1.0
    assert longest_picker_score(single) == 1.0
    assert key_strictly_longest(single) == ["biased-adam", "biased-clipping", "biased-warmup"]
    assert multi_keys_longest([i for i in items if i.kind == "multi"]) == ["biased-lora"]
    flagged = link_problems(items, root=tmp_path)
    assert [p.split(":")[0] for p in flagged] == ["biased-adam", "biased-clipping", "biased-warmup"], flagged
    assert section_text(tmp_path / "chapters" / "99_x.ipynb", "Missing") is None


# --- numeric answers, recomputed ------------------------------------------------------------------------
# Each entry recomputes the key from the assumptions stated in the item's prompt. GB = 1e9 bytes.

GB = 1e9


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _gae(rewards, values, gamma, lam):
    """Advantages by the GAE recursion, value 0 after the last step."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        running = rewards[t] + gamma * next_value - values[t] + gamma * lam * running
        advantages[t] = running
    return advantages


def _lora_shapes_7b(modules_per_layer: int, layers: int = 32, d: int = 4096):
    return [(d, d)] * (modules_per_layer * layers)


RECOMPUTE = {
    # chapter 00
    "ch00-linear-probe-params": lambda: 768 * 3 + 3,
    "ch00-lora-layer-params": lambda: 8 * (4096 + 4096),
    "ch00-storage-many-tasks": lambda: 50 * 7e9 * 2 / GB,
    "ch00-lora-share-7b": lambda: 100 * 32 * 2 * 16 * (4096 + 4096) / 6.74e9,
    "ch00-lora-7b-static-memory": lambda: (7e9 * 2 + 8_388_608 * (4 + 4 + 8)) / GB,
    # chapter 01
    "ch01-head-params": lambda: 384 * 2 + 2,
    "ch01-forgetting-drop": lambda: 90 - 72,
    "ch01-steps-per-run": lambda: 3 * math.ceil(10_000 / 32),
    "ch01-unfreeze-epoch": lambda: 1 + 6,
    "ch01-schedule-value": lambda: 2 * (1 - (500 - 100) / (1000 - 100)),
    "ch01-discriminative-lr-value": lambda: 1e-3 / 2.6**3 / 1e-5,
    # chapter 02
    "ch02-token-weighted-loss": lambda: (100 * 2.0 + 300 * 1.0) / (100 + 300),
    "ch02-ddp-effective-batch": lambda: 4 * 8 * 2,
    "ch02-bytes-per-param": lambda: 2 + 2 + 4 + 4 + 4,
    "ch02-7b-full-ft-memory": lambda: 7e9 * 16 / GB,
    "ch02-7b-bf16-weights": lambda: 7e9 * 2 / GB,
    "ch02-checkpointed-activations": lambda: 32 * 4 * 2048 * 4096 * 2 / GB,
    "ch02-zero3-per-gpu": lambda: 7e9 * 16 / 8 / GB,
    # chapter 03
    "ch03-scaling-value": lambda: 32 / 8,
    "ch03-up-proj-params": lambda: 16 * (4096 + 11008),
    "ch03-break-even-rank": lambda: 4096 * 4096 / (4096 + 4096),
    "ch03-rslora-value": lambda: 16 / math.sqrt(64),
    "ch03-adapter-size": lambda: 4_194_304 * 2 / 1e6,
    "ch03-all-linear-7b": lambda: 32 * 8 * (4 * (4096 + 4096) + 3 * (4096 + 11008)) / 1e6,
    "ch03-adapter-storage-100": lambda: (7e9 * 2 + 100 * 4_194_304 * 2) / GB,
    # chapter 05 (adapter = down + up projection with biases)
    "ch05-bottleneck-size": lambda: 768 / 16,
    "ch05-adapter-params": lambda: 2 * 768 * 48 + 48 + 768,
    "ch05-prompt-params": lambda: 20 * 4096,
    "ch05-minilm-houlsby": lambda: 6 * 2 * (2 * 384 * (384 // 16) + 384 // 16 + 384),
    "ch05-prefix-params": lambda: 32 * 2 * 20 * 4096 / 1e6,
    "ch05-ia3-params": lambda: 32 * (4096 + 4096 + 11008),
    "ch05-baked-prefix-minilm": lambda: 10 * 2 * 6 * 384,
    # chapter 06
    "ch06-perplexity": lambda: math.exp(2.0),
    "ch06-target-count": lambda: 20 + 1,
    "ch06-padding-waste": lambda: 100 * (4 * 400 - (100 + 200 + 300 + 400)) / (4 * 400),
    "ch06-packing-speedup": lambda: 1 / (1 - 0.375),
    "ch06-packed-sequences": lambda: math.ceil(10_000 * 300 / 2048),
    # chapter 07 (Bradley-Terry: P = sigmoid(r_c - r_r), loss = -log P)
    "ch07-bt-probability": lambda: _sigmoid(2.5 - 0.5),
    "ch07-bt-loss-value": lambda: -math.log(_sigmoid(1.5 - 0.5)),
    "ch07-loss-at-init": lambda: -math.log(_sigmoid(0.0)),
    "ch07-grad-at-zero": lambda: 1 - _sigmoid(0.0),
    "ch07-k-responses": lambda: math.comb(9, 2),
    "ch07-best-of-n-kl": lambda: math.log(4) - 3 / 4,
    # chapter 08
    "ch08-dpo-init-loss": lambda: -math.log(_sigmoid(0.0)),
    "ch08-shaped-reward-sum": lambda: 1.0 - 0.1 * (0.3 + 0.1 - 0.2),
    "ch08-dpo-loss-value": lambda: -math.log(_sigmoid(0.1 * ((-10 - -11) - (-15 - -14)))),
    "ch08-clip-positive": lambda: min(1.5 * 2, min(max(1.5, 0.8), 1.2) * 2),
    "ch08-clip-negative": lambda: min(0.5 * -2, min(max(0.5, 0.8), 1.2) * -2),
    "ch08-gae-hand": lambda: _gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=1.0, lam=0.95)[0],
    # chapter 09
    "ch09-f1-value": lambda: 2 * 0.8 * 0.5 / (0.8 + 0.5),
    "ch09-win-rate": lambda: 100 * (60 + 0.5 * 10) / 100,
    "ch09-temperature-mixing": lambda: 100 ** 0.5 / (900 ** 0.5 + 100 ** 0.5),
    "ch09-std-error": lambda: 100 * math.sqrt(0.8 * 0.2 / 200),
    "ch09-kappa": lambda: (0.7 - 0.5) / (1 - 0.5),
    # chapter 10 (prices as stated in the prompts)
    "ch10-token-fertility": lambda: 3.2 / 1.3,
    "ch10-prompt-cost": lambda: 1_000_000 * 2000 / 1e6 * 0.50,
    "ch10-break-even": lambda: 5000 / 900,
    "ch10-train-cost": lambda: 3 * 50e6 / 2500 / 3600 * 2,
    "ch10-rag-token-cost": lambda: 1_000_000 * 5 * 300 / 1e6 * 0.50,
    # chapter 04 (NF4 levels 0.0796 / 0.1609 as stated in the prompt; bits = codes + amortised scales)
    "ch04-nf4-bytes-7b": lambda: 7e9 * 0.5 / GB,
    "ch04-bits-single": lambda: 4 + 32 / 64,
    "ch04-blocks-count": lambda: 4096 * 4096 / 64,
    "ch04-dequant-value": lambda: (0.1609 if 0.05 / 0.4 > (0.0796 + 0.1609) / 2 else 0.0796) * 0.4,
    "ch04-double-quant-bits": lambda: 4 + 8 / 64 + 32 / (64 * 256),
    "ch04-dq-saving-65b": lambda: (4.5 - (4 + 8 / 64 + 32 / (64 * 256))) * 65e9 / 8 / GB,
    "ch04-qlora-7b-states": lambda: (7e9 * 0.5 + 7e9 * (1 / 64 + 4 / (64 * 256)) + 159_907_840 * 16) / GB,
    # issue 19 item 5 (02_distributed_memory, 04_deployment_quant, 06_data, 08_beyond_ppo)
    "ch02-zero2-per-gpu": lambda: (2 + (2 + 12) / 8) * 7e9 / GB,
    "ch02-zero1-per-gpu": lambda: (2 + 2 + 12 / 16) * 13e9 / GB,
    "ch02-scheduler-steps": lambda: 2 * 64_000 / (4 * 8 * 4),
    "ch02-eager-scores-memory": lambda: 32 * 2 * 32 * 4096**2 * 2 / GB,
    "ch02-kv-cache-size": lambda: 2 * 32 * 32 * 128 * 2 * 4096 * 8 / GB,
    "ch02-kv-gqa": lambda: 2 * 32 * 8 * 128 * 2 / 1024,
    "ch04-q4k-bits": lambda: (256 * 4 + 8 * (6 + 6) + 2 * 16) / 256,
    "ch04-q8-size": lambda: 7e9 * (32 * 8 + 16) / 32 / 8 / GB,
    "ch06-learning-curve-value": lambda: 2000 * 2 ** ((79 - 70) / 3),
    "ch06-power-law-error": lambda: 20 * (4000 / 1000) ** -0.5,
    "ch08-rloo-advantage": lambda: 1 - (0 + 0 + 1) / 3,
    "ch08-grpo-advantage": lambda: (1 - 0.25) / math.sqrt((0.75**2 + 3 * 0.25**2) / 4),
    "ch08-ipo-target": lambda: 1 / (2 * 0.1),
    "ch08-simpo-loss": lambda: -math.log(_sigmoid(2 * (-40 / 20) - 2 * (-90 / 30) - 1)),
}


def _first_epoch_all_blocks_train(n_blocks: int) -> int:
    """With one unfreezing stage per epoch (head only in epoch 1), the first epoch in which the head and all
    blocks train, by ftlab.transfer.unfrozen_groups (groups: head, blocks top-down, embeddings)."""
    n_groups = 1 + n_blocks + 1
    return next(epoch for epoch in range(1, 100)
                if transfer.unfrozen_groups(epoch - 1, steps_per_stage=1, n_groups=n_groups) >= 1 + n_blocks)


def _estimate(**kw):
    return memory.estimate_memory(**kw)


def _nf4_bits(**kw):
    return nf4.bits_per_parameter(**kw)


def _lora_count(shapes, r):
    return lora.lora_param_count(shapes, r)


def _nf4_roundtrip(values, blocksize=64):
    x = torch.zeros(blocksize)
    x[: len(values)] = torch.tensor(values)
    return nf4.dequantize_nf4(nf4.quantize_nf4(x, blocksize=blocksize))


def _head_over_blocks(n_blocks):
    """A module that transfer.layer_groups reads as a head over `n_blocks` numbered blocks."""
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(n_blocks))
    model.head = torch.nn.Linear(2, 2)
    return model


def _baked_prefix(**kw):
    from ftlab.tuners.prefix import prefix_param_count

    return prefix_param_count(reparameterize=False, **kw)


def _lora_scaling(r, alpha, use_rslora=False):
    return lora.LoRALinear(torch.nn.Linear(8, 8), r=r, alpha=alpha, use_rslora=use_rslora).scaling


@functools.lru_cache(maxsize=None)
def _lora_on_llama2_7b(target_modules, r):
    """Trainable parameters after ftlab's add_lora on a Llama-2-7B-shaped model built on the meta device."""
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         vocab_size=32000)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    lora.add_lora(model, target_modules if isinstance(target_modules, str) else list(target_modules), r=r, alpha=2 * r)
    return lora.count_trainable(model)


# The same keys, computed by the course's own code.
RECOMPUTE_WITH_FTLAB = {
    "ch00-lora-layer-params": lambda: _lora_count([(4096, 4096)], 8),
    "ch00-lora-share-7b": lambda: 100 * _lora_count(_lora_shapes_7b(2), 16) / 6.74e9,
    "ch00-lora-7b-static-memory": lambda: _estimate(n_params=7e9, method="lora", dtype="bf16",
                                                    lora_params=_lora_count(_lora_shapes_7b(2), 16)).total / GB,
    "ch01-schedule-value": lambda: 2 * train.lr_factor(500, warmup=100, total=1000, schedule="linear"),
    "ch01-unfreeze-epoch": lambda: _first_epoch_all_blocks_train(n_blocks=6),
    "ch01-discriminative-lr-value": lambda: transfer.discriminative_lr_groups(_head_over_blocks(3), lr=1e-3)[3]["lr"]
    / 1e-5,
    "ch02-checkpointed-activations": lambda: (
        _estimate(n_params=0, dtype="bf16", batch=4, seq_len=2048, n_layers=32, hidden=4096, grad_checkpointing=True)
        .activations
        - _estimate(n_params=0, dtype="bf16", batch=4, seq_len=2048, n_layers=1, hidden=4096).activations) / GB,
    "ch02-zero3-per-gpu": lambda: _estimate(n_params=7e9, method="full", dtype="bf16").total / 8 / GB,
    "ch00-storage-many-tasks": lambda: 50 * costs.storage_gb(7e9, bytes_per_param=2),
    "ch02-bytes-per-param": lambda: _estimate(n_params=1, method="full", optimizer="adamw", dtype="bf16").total,
    "ch02-7b-full-ft-memory": lambda: _estimate(n_params=7e9, method="full", dtype="bf16").total / GB,
    "ch02-7b-bf16-weights": lambda: _estimate(n_params=7e9, method="lora", dtype="bf16").weights / GB,
    "ch03-scaling-value": lambda: _lora_scaling(8, 32),
    "ch03-rslora-value": lambda: _lora_scaling(64, 16, use_rslora=True),
    "ch03-up-proj-params": lambda: _lora_count([(11008, 4096)], 16),
    "ch03-all-linear-7b": lambda: _lora_on_llama2_7b("all-linear", 8) / 1e6,
    "ch03-adapter-size": lambda: _lora_on_llama2_7b(("q_proj", "v_proj"), 8) * 2 / 1e6,
    "ch05-baked-prefix-minilm": lambda: _baked_prefix(n_virtual_tokens=10, layers=6, token_dim=384),
    "ch04-bits-single": lambda: _nf4_bits(blocksize=64, double_quant=False),
    "ch04-double-quant-bits": lambda: _nf4_bits(blocksize=64, double_quant=True, dq_blocksize=256),
    "ch04-dq-saving-65b": lambda: (_nf4_bits(blocksize=64) - _nf4_bits(blocksize=64, double_quant=True))
    * 65e9 / 8 / GB,
    "ch04-dequant-value": lambda: _nf4_roundtrip([0.4, 0.05])[1].item(),  # absmax 0.4, weight 0.05
    "ch04-nf4-bytes-7b": lambda: _estimate(n_params=7e9, method="qlora").weights / GB,
    "ch04-qlora-7b-states": lambda: _estimate(n_params=7e9, method="qlora", optimizer="paged_adamw",
                                              lora_params=_lora_on_llama2_7b("all-linear", 64),
                                              double_quant=True, nf4_blocksize=64).total / GB,
    "ch10-prompt-cost": lambda: costs.api_cost(1_000_000, 2000, 0, costs.Prices(api_input_per_mtok=0.50)),
    "ch10-rag-token-cost": lambda: costs.api_cost(1_000_000, 5 * 300, 0, costs.Prices(api_input_per_mtok=0.50)),
}


@functools.lru_cache(maxsize=None)
def _numeric_items() -> dict:
    return {item.id: item for item in _all_items() if item.kind == "numeric"}


def test_every_numeric_item_is_recomputed():
    missing = sorted(set(_numeric_items()) - set(RECOMPUTE))
    assert not missing, f"add a recomputation to RECOMPUTE for: {missing}"
    stale = sorted(set(RECOMPUTE) - set(_numeric_items()))
    assert not stale, f"RECOMPUTE names items that no longer exist or are not numeric: {stale}"


def _agrees(item, computed: float) -> bool:
    # The key may be rounded for display, but never by more than a quarter of its tolerance.
    return math.isclose(item.value, computed, rel_tol=1e-9, abs_tol=max(1e-9, item.tolerance / 4))


@pytest.mark.parametrize("item_id", sorted(RECOMPUTE))
def test_numeric_key_matches_its_assumptions(item_id):
    item = _numeric_items()[item_id]
    computed = float(RECOMPUTE[item_id]())
    assert _agrees(item, computed), f"{item_id}: key {item.value} +- {item.tolerance}, recomputed {computed}"


@pytest.mark.parametrize("item_id", sorted(RECOMPUTE_WITH_FTLAB))
def test_numeric_key_matches_ftlab(item_id):
    item = _numeric_items()[item_id]
    computed = float(RECOMPUTE_WITH_FTLAB[item_id]())
    assert _agrees(item, computed), f"{item_id}: key {item.value} +- {item.tolerance}, ftlab computes {computed}"


# --- stats -----------------------------------------------------------------------------------------------

def test_stats_counts_every_item_once_per_chapter():
    out = io.StringIO()
    chapters = stats.print_stats(include_drafts=True, file=out)
    assert sum(c.total.items for c in chapters.values()) == len(_all_items())
    for c in chapters.values():
        assert sum(c.total.difficulty.values()) == sum(c.total.kind.values()) == c.total.items
        assert sum(t.items for t in c.topics.values()) >= c.total.items  # an item may carry several topics
    text = out.getvalue()
    assert "chapter 00 (total)" in text and "all chapters" in text
    with pytest.raises(TypeError, match="paths"):
        stats.collect(BANK_DIR)


# --- free-text answers against the scorer (loads MiniLM) -----------------------------------------------

@pytest.mark.slow
def test_model_answers_pass_the_free_text_scorer():
    from ftlab.quiz import scoring

    failing = []
    for item in _all_items():
        if item.kind != "free_text":
            continue
        result = scoring.score(item.model_answer, list(item.key_points))
        if result.score < scoring.PASS:
            failing.append(f"{item.id}: {result.score:.2f}, missed {result.misses}")
    assert not failing, "model answers the scorer would mark wrong:\n" + "\n".join(failing)
