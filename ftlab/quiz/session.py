"""One sitting of questions, shared by the widget and the terminal: pick, grade, store, schedule.

    s = Session("quiz", chapters=["02"], learner="ada", seed=1)
    item = s.next_item()
    fb = s.submit("a")          # graded, committed to the store, ability updated
    s.rate("good")              # free-text only: the self-rating that feeds FSRS
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from .. import checks
from . import scoring
from .adaptive import AdaptiveTest, FixedTest
from .bank import BANK_DIR, REPO, cell_anchors, load_banks, ordered_choices
from .schedule import daily, due, rating_for, reached
from .store import Store

MODES = ("quiz", "practice", "daily", "review")


@dataclass
class Feedback:
    correct: bool
    score: float  # 0..1
    headline: str
    explanation: str
    see: str  # chapters/NN_x.ipynb#Anchor
    section: str
    options: list = field(default_factory=list)  # (choice, picked, is_answer) for choice items, in the shown order
    hits: list = field(default_factory=list)  # free text: key points made
    misses: list = field(default_factory=list)
    model_answer: str = ""
    answer_uid: str = ""
    needs_rating: bool = False  # free text: ask Again/Hard/Good/Easy next
    self_rating: str = ""  # free text: the rating the learner gave, once given


def parse(item, response):
    """The learner's raw input as the value to grade; ValueError says what to enter instead."""
    if item.kind == "single":
        if response not in [c.id for c in item.choices]:
            raise ValueError("pick one of the options first")
        return response
    if item.kind == "multi":
        picked = sorted(set(response or []))
        if not picked:
            raise ValueError("tick at least one option")
        unknown = [p for p in picked if p not in [c.id for c in item.choices]]
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}")
        return picked
    if item.kind == "numeric":
        try:
            value = float(str(response).strip().replace(",", "").replace("_", ""))
        except ValueError:
            raise ValueError(f"enter a number (in {item.unit}), e.g. 12 or 0.5") from None
        if not math.isfinite(value):
            raise ValueError("enter a finite number")
        return value
    text = str(response or "").strip()
    if len(text.split()) < 3:
        raise ValueError("write at least a sentence: the answer is scored against the key points")
    return text


def number(value: float) -> str:
    """A number as a reader writes it: thousands separators, no float noise (241,664; 0.3; 1e-05)."""
    return f"{value:,.10g}"


def free_text_headline(result, answer: str) -> str:
    """Coverage, not correctness: the scorer counts key points, the learner's self-rating judges the rest."""
    n = len(result.hits) + len(result.misses)
    if result.too_long:
        return (f"Too long to score: keep it under {scoring.MAX_CHARS:,} characters and {scoring.MAX_SENTENCES}"
                f" sentences (yours has {len(answer):,} characters). Key points covered: 0 of {n}.")
    headline = f"Key points covered: {len(result.hits)} of {n}."
    if result.set_aside:
        headline += (f" {len(result.set_aside)} sentence(s) not scored: they repeat the question or do not read"
                     " as sentences (a list of terms, shuffled words).")
    return headline


def grade(item, value, learner: str | None = None) -> Feedback:
    """Grade on choice ids (never positions); feedback lists choices in the order `learner` was shown them."""
    common = dict(explanation=item.explanation, see=item.see, section=item.section)
    if item.kind in ("single", "multi"):
        picked = {value} if item.kind == "single" else set(value)
        answer = {item.answer} if item.kind == "single" else set(item.answer)
        correct = picked == answer
        score = 1.0 if correct else 0.0
        shown = item.choices if learner is None else ordered_choices(item, learner)
        options = [(c, c.id in picked, c.id in answer) for c in shown]
        return Feedback(correct, score, "Correct." if correct else "Not quite.", options=options, **common)
    if item.kind == "numeric":
        correct = abs(value - item.value) <= item.tolerance
        target = f"The answer is {number(item.value)} ({item.unit})"
        if item.tolerance:
            target += f"; anything within ± {number(item.tolerance)} counts"
        return Feedback(correct, float(correct), ("Correct. " if correct else "Not quite. ") + target + ".", **common)
    result = scoring.score(value, item.key_points, prompt=item.prompt)
    return Feedback(result.passed, result.score, free_text_headline(result, value),
                    hits=result.hits, misses=result.misses, model_answer=item.model_answer, needs_rating=True,
                    **common)


def chapter_ids(chapter) -> list[str] | None:
    """A chapter argument (None, 3, "03", or a list of them) as two-digit ids; ValueError names the bad one."""
    if chapter is None:
        return None
    given = [chapter] if isinstance(chapter, (str, int)) else chapter
    if not isinstance(given, (list, tuple)) or not given:
        raise ValueError(f"chapter={chapter!r}: give a chapter number such as 3 or \"03\", or a list of them")
    ids = []
    for c in given:
        whole = isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 99
        if not (whole or isinstance(c, str) and re.fullmatch(r"\s*\d{1,2}\s*", c)):
            raise ValueError(f"chapter={c!r}: a chapter is a whole number such as 3 or \"03\"")
        ids.append(f"{int(c):02d}")
    return ids


def chapter_titles(bank_dir: Path | str = BANK_DIR) -> dict[str, str]:
    """Chapter id -> its bank's `title`, read from the top-level `title:` line (load_banks has checked the file)."""
    titles = {}
    for path in sorted(Path(bank_dir).glob("*.yaml")):
        line = re.search(r"^title:.*$", path.read_text(encoding="utf-8"), re.M)
        try:
            title = yaml.safe_load(line.group(0))["title"] if line else None
        except yaml.YAMLError:  # e.g. `title: *alias`, which means nothing out of its file: go without a title
            continue
        if isinstance(title, str):
            titles[path.name[:2]] = title
    return titles


class Session:
    def __init__(self, mode: str = "quiz", learner: str | None = None, chapters: list[str] | None = None,
                 topics: list[str] | None = None, seed: int | None = None, n: int = 5, day: date | None = None,
                 bank_dir: Path | str = BANK_DIR, store: Store | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        n = checks.positive_int("n", n, hint="(the number of questions)")
        if seed is not None:
            seed = checks.whole("seed", seed, hint="(or leave it out for a fresh test each time)")
        chapters = chapter_ids(chapters)  # checked before the store opens: a typo creates no store file
        topics = [topics] if isinstance(topics, str) else topics
        self.mode = mode
        self.store = store or Store(learner)
        self.learner = self.store.learner
        items = load_banks(bank_dir, chapters)
        if topics:
            items = [i for i in items if set(topics) & set(i.topics)]
            if not items:
                raise ValueError(f"no bank items are tagged with any of {topics}")
        history = self.store.answers()
        if mode == "practice" and chapters is None:
            items = reached(items, history)  # a chapter-08 question on day one teaches nothing
        self.items = items
        self.chapters = sorted({i.chapter for i in items})
        self.titles = chapter_titles(bank_dir)
        self.saved_answers = len(history)  # before this sitting: what a reopened notebook shows as kept progress
        if mode in ("quiz", "practice"):
            self.test = AdaptiveTest(items, history, length=n, seed=seed)
        elif mode == "daily":
            self.test = FixedTest(daily(items, history, self.learner, day or date.today(), n), history)
        else:
            by_id = {i.id: i for i in items}
            self.test = FixedTest([by_id[i] for i in due(history) if i in by_id][:n], history)
        self.start_ability = self.test.ability
        self.item = None
        self.last: Feedback | None = None
        self.results: list[Feedback] = []

    @property
    def done(self) -> bool:
        return self.test.done

    @property
    def total(self) -> int:
        return self.test.length

    @property
    def answered(self) -> int:
        return len(self.test.scores)

    @property
    def ability(self):
        return self.test.ability

    def next_item(self):
        self.item = None if self.done else self.test.next_item()
        self.last = None
        return self.item

    def submit(self, response) -> Feedback:
        """Grade, commit the answer to the store, then update the ability; ValueError on unusable input."""
        if self.item is None or self.last is not None:
            raise ValueError("no question is waiting for an answer")
        value = parse(self.item, response)
        fb = grade(self.item, value, self.learner)
        answer = self.store.record(self.item, value, fb.score, fb.correct, rating_for(fb.score), self.mode)
        fb.answer_uid = answer.uid
        self.test.record(self.item, fb.score)
        self.last = fb
        self.results.append(fb)
        return fb

    def rate(self, self_rating: str) -> None:
        if self.last is None:
            raise ValueError("answer the question before rating it")
        rating = rating_for(self.last.score, self_rating)
        self.store.rate(self.last.answer_uid, rating)
        self.last.needs_rating = False
        self.last.self_rating = rating.name

    def stored_answers(self) -> int:
        """Answers in the learner's store now (this sitting's, and any another widget or terminal saved)."""
        return len(self.store.answers())

    def summary(self) -> dict:
        """What the end card shows: score, ability before and after, weak topics with where to read."""
        asked = list(zip(self.test.asked, self.results))
        topics = sorted({t for item, _ in asked for t in item.topics})
        theta = {t: self.ability.topics.get(t, self.ability.overall) for t in topics}
        missed = {t for item, fb in asked if not fb.correct for t in item.topics}
        weak = sorted((t for t in topics if theta[t] < 0 or t in missed), key=theta.get)
        read = {}
        for item, fb in asked:
            if not fb.correct:
                read.setdefault(item.see, item.section)
        return {"correct": sum(fb.correct for _, fb in asked), "asked": len(asked), "result": result_line(asked),
                "before": self.start_ability.overall, "after": self.ability.overall,
                "topics": theta, "weak": weak, "read": read}


def result_line(asked) -> str:
    """The score of a sitting in words. Free text is not called correct or wrong: its score is key-point
    coverage, which is not truth (a fluent wrong answer can cover points), so it gets its own clause
    with the learner's self-ratings: '3 of 4 choice/numeric questions correct; free text: key points
    covered 2 of 4 (self-rated Good)'."""
    graded = [fb for item, fb in asked if item.kind != "free_text"]
    free = [fb for item, fb in asked if item.kind == "free_text"]
    parts = []
    if graded or not free:
        kinds = " choice/numeric questions" if free else ""
        parts.append(f"{sum(fb.correct for fb in graded)} of {len(graded)}{kinds} correct")
    if free:
        covered = sum(len(fb.hits) for fb in free)
        points = sum(len(fb.hits) + len(fb.misses) for fb in free)
        ratings = [fb.self_rating for fb in free if fb.self_rating]
        rated = f"self-rated {', '.join(ratings)}" if ratings else "not self-rated"
        answers = f" over {len(free)} answers" if len(free) > 1 else ""
        parts.append(f"free text: key points covered {covered} of {points}{answers} ({rated})")
    return "; ".join(parts)


def link(see: str, text: str) -> str:
    """An <a> (HTML) showing `text` (already escaped) that opens the chapter section `see` ("chapters/x.ipynb#Id").

    The chapter is the one beside the running notebook's folder when it exists there (so from the learner's
    working copy, my/chapters/..., the link goes to the working copy), else the repository's. In JupyterLab a
    click runs the command linker's rendermime:handle-local-link, which opens the notebook in the same tab and
    scrolls to the section; its `path` is relative to the repository, the root that `make lab` serves. Other
    frontends follow the href, relative to the kernel's folder, in a new tab, so a live quiz is never lost.
    """
    notebook, anchor = see.split("#", 1)
    here = Path.cwd()
    target = here.parent / notebook
    if not target.exists():
        target = REPO / notebook
    href = os.path.relpath(target, here).replace(os.sep, "/") + "#" + anchor
    args = {"path": os.path.relpath(target, REPO).replace(os.sep, "/"), "id": _fragment(target, anchor)}
    return (f'<a href="{html.escape(href)}" target="_blank" rel="noopener" '
            f'data-commandlinker-command="rendermime:handle-local-link" '
            f'data-commandlinker-args="{html.escape(json.dumps(args))}">{text}</a>')


def _fragment(notebook: Path, anchor: str) -> str:
    """JupyterLab's fragment for the section: `#cell-id=` of the heading's cell when the file stores cell ids,
    else `#heading=`. JupyterLab 4.6 finds a heading only among cells it has already rendered, so in a notebook
    the click has just opened it stays at the top; a cell id is found at once (JupyterLab writes ids on save)."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        cells = []
    for cell in cells:
        if cell.get("id") and anchor in cell_anchors(cell):
            return f"#cell-id={cell['id']}"
    return f"#heading={anchor}"
