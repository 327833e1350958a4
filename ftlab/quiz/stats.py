"""How the question banks are spread: items per chapter x topic x difficulty x kind.

    python -m ftlab.quiz.stats            # quizzes/bank only
    python -m ftlab.quiz.stats --drafts   # bank and quizzes/drafts

`print_stats()` is what `ftlab quiz stats` prints. An item tagged with several topics is
counted once in its chapter's totals and once under each of its topics.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .bank import BANK_DIR, KINDS, REPO, BankError, parse_bank

DRAFTS_DIR = REPO / "quizzes" / "drafts"
DIFFICULTIES = (1, 2, 3, 4, 5)


@dataclass
class Tally:
    """Counts for one row of the table (a chapter, or one topic of a chapter)."""

    items: int = 0
    difficulty: Counter = field(default_factory=Counter)
    kind: Counter = field(default_factory=Counter)

    def add(self, item) -> None:
        self.items += 1
        self.difficulty[item.difficulty] += 1
        self.kind[item.kind] += 1

    @property
    def free_text_share(self) -> float:
        return self.kind["free_text"] / self.items if self.items else 0.0

    @property
    def numeric_or_free_text_share(self) -> float:
        return (self.kind["numeric"] + self.kind["free_text"]) / self.items if self.items else 0.0


@dataclass
class ChapterStats:
    chapter: str
    files: list[str]
    total: Tally
    topics: dict[str, Tally]


def bank_files(include_drafts: bool = False, bank_dir: Path | str = BANK_DIR,
               drafts_dir: Path | str = DRAFTS_DIR) -> list[Path]:
    """The bank files, then (optionally) the draft files, each sorted by name."""
    paths = sorted(Path(bank_dir).glob("*.yaml"))
    if include_drafts:
        paths += sorted(Path(drafts_dir).glob("*.yaml"))
    return paths


def collect(paths: list[Path]) -> dict[str, ChapterStats]:
    """Per chapter ('00', '01', ...): totals and per-topic tallies. Raises BankError if a file does not parse."""
    if isinstance(paths, (str, Path)):
        raise TypeError(f"paths must be a list of bank files, not a single path ({paths!r})")
    problems, chapters = [], {}
    for path in paths:
        items, file_problems = parse_bank(Path(path))[:2]  # (items, problems[, ids])
        problems += file_problems
        for item in items:
            stats = chapters.setdefault(item.chapter, ChapterStats(item.chapter, [], Tally(), defaultdict(Tally)))
            if Path(path).parent.name + "/" + Path(path).name not in stats.files:
                stats.files.append(Path(path).parent.name + "/" + Path(path).name)
            stats.total.add(item)
            for topic in item.topics:
                stats.topics[topic].add(item)
    if problems:
        raise BankError(problems)
    return dict(sorted(chapters.items()))


def _row(label: str, tally: Tally, width: int) -> str:
    diff = " ".join(f"{tally.difficulty[d]:>3}" for d in DIFFICULTIES)
    kinds = " ".join(f"{tally.kind[k]:>{max(3, len(k))}}" for k in KINDS)
    return f"{label:<{width}} {tally.items:>5}  {diff}  {kinds}"


def format_stats(chapters: dict[str, ChapterStats]) -> str:
    """The table as text: one block per chapter (total row, then one row per topic), then a grand total."""
    topic_names = [t for c in chapters.values() for t in c.topics]
    width = max([len("chapter 00 (total)")] + [len(t) + 2 for t in topic_names])
    head = (f"{'':<{width}} {'items':>5}  " + " ".join(f"{'d' + str(d):>3}" for d in DIFFICULTIES) + "  "
            + " ".join(f"{k:>{max(3, len(k))}}" for k in KINDS))
    lines = [head, "-" * len(head)]
    grand = Tally()
    for chapter, stats in chapters.items():
        lines.append(_row(f"chapter {chapter} (total)", stats.total, width)
                     + f"   free-text {stats.total.free_text_share:.0%}, numeric+free-text "
                       f"{stats.total.numeric_or_free_text_share:.0%}   [{', '.join(stats.files)}]")
        for topic, tally in sorted(stats.topics.items(), key=lambda kv: (-kv[1].items, kv[0])):
            lines.append(_row("  " + topic, tally, width))
        grand.items += stats.total.items
        grand.difficulty.update(stats.total.difficulty)
        grand.kind.update(stats.total.kind)
    lines += ["-" * len(head), _row("all chapters", grand, width)]
    return "\n".join(lines)


def print_stats(include_drafts: bool = False, file: TextIO | None = None, bank_dir: Path | str = BANK_DIR,
                drafts_dir: Path | str = DRAFTS_DIR) -> dict[str, ChapterStats]:
    """Print items per chapter x topic x difficulty x kind; returns the counts it printed."""
    paths = bank_files(include_drafts, bank_dir, drafts_dir)
    if not paths:
        raise FileNotFoundError(f"no *.yaml bank files in {bank_dir}" + (f" or {drafts_dir}" if include_drafts else ""))
    chapters = collect(paths)
    print(format_stats(chapters), file=file or sys.stdout)
    return chapters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ftlab quiz stats", description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", action="store_true", help="also count quizzes/drafts/*.yaml")
    args = parser.parse_args(argv)
    try:
        print_stats(include_drafts=args.drafts)
    except (BankError, FileNotFoundError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
