"""One sitting of questions, shared by the widget and the terminal: pick, grade, store, schedule.

    s = Session("quiz", chapters=["02"], learner="ada", seed=1)
    item = s.next_item()
    fb = s.submit("a")          # graded, committed to the store, ability updated
    s.rate("good")              # free-text only: the self-rating that feeds FSRS
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from . import scoring
from .adaptive import AdaptiveTest, FixedTest
from .bank import BANK_DIR, REPO, load_banks
from .schedule import daily, due, rating_for
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
    options: list = field(default_factory=list)  # (choice, picked, is_answer) for choice items
    hits: list = field(default_factory=list)  # free text: key points made
    misses: list = field(default_factory=list)
    model_answer: str = ""
    answer_uid: str = ""
    needs_rating: bool = False  # free text: ask Again/Hard/Good/Easy next


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


def grade(item, value) -> Feedback:
    common = dict(explanation=item.explanation, see=item.see, section=item.section)
    if item.kind in ("single", "multi"):
        picked = {value} if item.kind == "single" else set(value)
        answer = {item.answer} if item.kind == "single" else set(item.answer)
        correct = picked == answer
        score = 1.0 if correct else 0.0
        options = [(c, c.id in picked, c.id in answer) for c in item.choices]
        return Feedback(correct, score, "Correct." if correct else "Not quite.", options=options, **common)
    if item.kind == "numeric":
        correct = abs(value - item.value) <= item.tolerance
        target = f"{item.value:g} {item.unit}" + (f" (± {item.tolerance:g})" if item.tolerance else "")
        return Feedback(correct, float(correct), ("Correct: " if correct else "Not quite. The answer is ") + target,
                        **common)
    result = scoring.score(value, item.key_points)
    correct = result.score >= scoring.PASS
    return Feedback(correct, result.score, f"You made {len(result.hits)} of {len(item.key_points)} key points.",
                    hits=result.hits, misses=result.misses, model_answer=item.model_answer, needs_rating=True,
                    **common)


class Session:
    def __init__(self, mode: str = "quiz", learner: str | None = None, chapters: list[str] | None = None,
                 topics: list[str] | None = None, seed: int | None = None, n: int = 5, day: date | None = None,
                 bank_dir: Path | str = BANK_DIR, store: Store | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.store = store or Store(learner)
        self.learner = self.store.learner
        items = load_banks(bank_dir, chapters)
        if topics:
            items = [i for i in items if set(topics) & set(i.topics)]
            if not items:
                raise ValueError(f"no bank items are tagged with any of {topics}")
        self.items = items
        history = self.store.answers()
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
        fb = grade(self.item, value)
        answer = self.store.record(self.item, value, fb.score, fb.correct, rating_for(fb.score), self.mode)
        fb.answer_uid = answer.uid
        self.test.record(self.item, fb.score)
        self.last = fb
        self.results.append(fb)
        return fb

    def rate(self, self_rating: str) -> None:
        if self.last is None:
            raise ValueError("answer the question before rating it")
        self.store.rate(self.last.answer_uid, rating_for(self.last.score, self_rating))
        self.last.needs_rating = False

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
        return {"correct": sum(fb.correct for _, fb in asked), "asked": len(asked),
                "before": self.start_ability.overall, "after": self.ability.overall,
                "topics": theta, "weak": weak, "read": read}


def link(see: str) -> str:
    """An href to a chapter section that works from the notebook's folder (the kernel's cwd)."""
    notebook, anchor = see.split("#", 1)
    return os.path.relpath(REPO / notebook, Path.cwd()).replace(os.sep, "/") + "#" + anchor
