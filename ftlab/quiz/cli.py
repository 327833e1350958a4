"""Terminal mode: `ftlab quiz | daily | review | report | export | import`, same engine and store as the widget.
(`export` and `import` carry the learner's lab check results too; `report` shows them beside the quizzes.)

Plain line-based prompts on stdin/stdout (no curses), so a session can be piped:
    printf 'a\\n16\\n' | ftlab quiz --chapter 02 --learner ada --seed 1
End of input (Ctrl-D) or Ctrl-C stops the session; every answer given so far is already saved.
Choices are listed in the learner's own order (`ordered_choices`); the letters follow that order.
Maths in the bank's text is shown as Unicode (ftlab.quiz.plaintext), not as raw LaTeX.
`ftlab progress check | drop` finds and removes rows of a store that no longer validate.
"""

from __future__ import annotations

import argparse
import sqlite3
import string
import sys
import textwrap
import warnings
from datetime import date
from pathlib import Path

from .bank import BANK_DIR, REPO, BankError, check, ordered_choices
from .plaintext import plain
from .session import Session
from .store import DamagedRowsWarning, Store, StoreError, check_learner, read_export


def _ask(prompt: str) -> str | None:
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    return None if line == "" else line.strip()


def _wrap(text: str, indent: str = "  ") -> str:
    return "\n".join(textwrap.fill(p, 92, initial_indent=indent, subsequent_indent=indent)
                     for p in plain(text).strip().split("\n") if p.strip())


def _read_answer(shown: list, kind: str, line: str):
    """Letters (a, b, ...) name the choices in the order `shown`; anything else goes to the session to check."""
    if kind not in ("single", "multi"):
        return line
    letters = dict(zip(string.ascii_lowercase, (c.id for c in shown)))
    picked = [letters.get(tok, "?" + tok) for tok in line.replace(",", " ").lower().split()]
    if kind == "single":
        if len(picked) != 1 or picked[0] not in letters.values():
            raise ValueError(f"answer with one letter, {', '.join(letters)}")
        return picked[0]
    if any(p.startswith("?") for p in picked):
        raise ValueError(f"answer with letters from {', '.join(letters)} separated by spaces or commas")
    return picked


def _show_feedback(fb) -> None:
    print(("\n✔ " if fb.correct else "\n✘ ") + plain(fb.headline))
    for choice, picked, is_answer in fb.options:  # already in the order this learner was shown (session.grade)
        print(f"  {'✔' if is_answer else '✘'} {choice.text}{'  <- your pick' if picked else ''}")
        print(_wrap(choice.feedback, "      "))
    if fb.hits or fb.misses:
        for k in fb.hits:
            print(f"  ✔ made: {plain(k)}")
        for k in fb.misses:
            print(f"  ✘ missed: {plain(k)}")
        print("  Model answer:\n" + _wrap(fb.model_answer, "    "))
    print("  Why:\n" + _wrap(fb.explanation, "    "))
    print(f"  Read: {fb.see}")


NOTHING = {"review": "no review is due right now", "daily": "no questions for today",
           "quiz": "no questions match", "practice": "no questions match"}


def run(session: Session) -> int:
    """Ask every question of the session on stdin/stdout (a KeyboardInterrupt goes to the caller)."""
    print(f"{session.mode} for {session.learner}: {session.saved_answers} answers saved so far in {session.store.path}")
    print("(Ctrl-D or Ctrl-C to stop; each answer is saved as soon as it is given)")
    while (item := session.next_item()) is not None:
        print(f"\n[{session.answered + 1}/{session.total}] difficulty {item.difficulty}/5 · {', '.join(item.topics)}")
        print(_wrap(item.prompt))
        shown = ordered_choices(item, session.learner) if item.kind in ("single", "multi") else []
        for letter, c in zip(string.ascii_lowercase, shown):
            print(f"   {letter}) {c.text}")
        hint = {"single": "one letter", "multi": "letters, e.g. a c",
                "numeric": f"a number in {getattr(item, 'unit', '')}",
                "free_text": "your answer, on one line"}[item.kind]
        while True:
            line = _ask(f"answer ({hint})> ")
            if line is None:
                print(f"\nStopped. {session.answered} answer(s) saved.")
                return 0
            try:
                fb = session.submit(_read_answer(shown, item.kind, line))
                break
            except ValueError as e:
                print(f"  {e}")
        _show_feedback(fb)
        print(f"  ability θ {session.ability.overall:+.2f}")
        while fb.needs_rating:
            line = _ask("rate it: 1 again, 2 hard, 3 good, 4 easy (Enter skips)> ")
            if not line:
                break
            if line in ("1", "2", "3", "4"):
                session.rate(("again", "hard", "good", "easy")[int(line) - 1])
            else:
                print("  type 1, 2, 3 or 4")
    if session.total == 0:
        print(f"Nothing to ask: {NOTHING[session.mode]}.")
        return 0
    r = session.summary()
    print(f"\nResult: {r['correct']} of {r['asked']} correct; ability θ {r['before']:+.2f} -> {r['after']:+.2f}")
    print("Weak topics: " + (", ".join(r["weak"]) or "none this time"))
    for see in r["read"]:
        print(f"  read again: {see}")
    return 0


def _session(args, mode: str, **kwargs) -> int:
    session = None
    try:
        with warnings.catch_warnings(record=True) as caught:  # damaged rows: skipped, and said so
            warnings.simplefilter("always", DamagedRowsWarning)
            session = Session(mode, store=Store(args.learner), bank_dir=args.bank, **kwargs)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        return run(session)
    except KeyboardInterrupt:
        print(f"\nStopped. {session.answered if session else 0} answer(s) saved.")
        return 130
    except (BankError, StoreError, ValueError, sqlite3.Error, RuntimeError, OSError) as e:
        kept = (f" (the {session.answered} answer(s) given before this were saved)"
                if session and session.answered else "")
        print(f"ftlab {mode}: error: {e}{kept}", file=sys.stderr)
        return 1


def cmd_quiz(args) -> int:
    if args.action == "stats":  # the bank's table of items per chapter, topic, difficulty and kind
        from .stats import print_stats

        try:
            print_stats(bank_dir=args.bank)
        except (BankError, FileNotFoundError) as e:
            print(f"ftlab quiz stats: error: {e}", file=sys.stderr)
            return 1
        return 0
    if args.action == "validate":
        items, problems = check(args.bank, args.root)
        for p in problems:
            print(p)
        if problems:
            print(f"{len(problems)} problem(s)", file=sys.stderr)
            return 1
        print(f"OK: {len(items)} items in {len({i.chapter for i in items})} bank(s), all `see` links resolve")
        return 0
    if args.chapter is not None and not (args.chapter.isascii() and args.chapter.isdigit()):
        present = sorted({f.name[:2] for f in Path(args.bank).glob("[0-9][0-9]_*.yaml")})
        print(f"ftlab quiz: error: --chapter {args.chapter!r} is not a chapter number; chapters with questions: "
              f"{', '.join(present) or 'none'}", file=sys.stderr)
        return 2
    chapters = [args.chapter] if args.chapter is not None else None
    return _session(args, "quiz" if chapters else "practice", chapters=chapters, topics=args.topic, seed=args.seed,
                    n=args.n)


def cmd_daily(args) -> int:
    return _session(args, "daily", day=args.date)


def cmd_review(args) -> int:
    return _session(args, "review", n=args.n)


def cmd_report(args) -> int:
    from .report import ReportError, build_report

    try:
        out, warnings = build_report(args.exports, args.output)
    except ReportError as e:
        print(f"ftlab report: error: {e}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def cmd_export(args) -> int:
    try:
        with Store(args.learner, writable=False) as store:
            out = args.path or Path(f"{store.learner}.json")
            good, bad = store.read()
            store.export(out, good)  # the good rows are salvaged; the bad ones stay in the store, listed below
            print(f"exported {len(good)} answers and {len(store.lab_checks())} lab check results of {store.learner} "
                  f"to {out}")
            if bad:
                print(f"warning: left out {len(bad)} damaged row(s) of {store.path} (row id "
                      f"{', '.join(str(b.id) for b in bad)}); `ftlab progress check --learner {store.learner}` "
                      f"shows why", file=sys.stderr)
        return 0
    except (StoreError, OSError, ValueError, sqlite3.Error) as e:
        print(f"ftlab export: error: {e}", file=sys.stderr)
        return 1


def cmd_import(args) -> int:
    try:
        data = read_export(args.path)  # a bad file is refused before any store is opened or made
        with Store(args.learner) as store:
            new_checks = len({c.uid for c in data["lab_checks"]} - {c.uid for c in store.lab_checks()})
            added = store.merge(data["answers"], data["lab_checks"])  # one transaction for both kinds of row
            print(f"imported {added - new_checks} new answers and {new_checks} new lab check results into "
                  f"{store.path}")
        return 0
    except (StoreError, OSError, ValueError, sqlite3.Error) as e:
        print(f"ftlab import: error: {e}", file=sys.stderr)
        return 1


def _show_row(row_id: int, values: dict, reason: str | None) -> None:
    print(f"row {row_id}: " + (f"DAMAGED: {reason}" if reason else "valid"))
    for name, value in values.items():
        print(f"    {name:<11} {value!r:.200}")


def cmd_progress(args) -> int:
    """`progress check` lists the rows that do not validate; `progress drop ROW` shows one, then deletes it."""
    try:
        with Store(args.learner, writable=args.action == "drop") as store:
            good, bad = store.read()
            if args.action == "check":
                for b in bad:
                    _show_row(b.id, b.values, b.reason)
                print(f"{store.path}: {len(good)} valid answer(s), {len(bad)} damaged row(s)"
                      + (f"; remove one with `ftlab progress drop ROW --learner {store.learner}`" if bad else ""))
                return 1 if bad else 0
            if args.row is None:
                raise ValueError("say which row: `ftlab progress drop ROW` (`ftlab progress check` lists them)")
            reasons = {b.id: b.reason for b in bad}
            _show_row(args.row, store.row(args.row), reasons.get(args.row))
            if not args.yes and _ask(f"delete row {args.row}? [y/N] ") not in ("y", "yes"):
                print("kept it")
                return 1
            store.drop(args.row)
            print(f"deleted row {args.row} from {store.path}")
            return 0
    except (StoreError, OSError, ValueError, KeyError, sqlite3.Error) as e:
        print(f"ftlab progress: error: {str(e).strip(chr(39))}", file=sys.stderr)
        return 1


def _learner(text: str) -> str:
    try:
        return check_learner(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"-n wants a whole number of questions, 1 or more (got {text!r})")
    return n


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--date wants YYYY-MM-DD, got {text!r}") from None


def register(subparsers) -> None:
    """Add the quiz engine's subcommands to the `ftlab` parser (ftlab/cli.py calls this)."""
    def common(p, bank=True):
        p.add_argument("--learner", type=_learner, help="whose progress (default: $FTLAB_LEARNER or your user name)")
        if bank:
            p.add_argument("--bank", type=Path, default=BANK_DIR, help="folder of bank YAML files")

    p = subparsers.add_parser("quiz", help="adaptive 5-question test in the terminal; `quiz validate` checks the "
                                           "banks, `quiz stats` counts their items")
    p.add_argument("action", nargs="?", choices=["run", "validate", "stats"], default="run")
    p.add_argument("--chapter", help="chapter number, e.g. 02 (default: all chapters)")
    p.add_argument("--topic", action="append", help="only items with this topic tag (repeatable)")
    p.add_argument("--seed", type=int, help="makes the choice of questions reproducible")
    p.add_argument("-n", type=_count, default=5, help="questions per test")
    p.add_argument("--root", type=Path, default=REPO, help="where chapters/ lives, for checking `see` links")
    common(p)
    p.set_defaults(func=cmd_quiz)

    p = subparsers.add_parser("daily", help="today's challenge: due reviews and weak topics")
    p.add_argument("--date", type=_date, help="YYYY-MM-DD (default: today)")
    common(p)
    p.set_defaults(func=cmd_daily)

    p = subparsers.add_parser("review", help="the questions due for spaced review now")
    p.add_argument("-n", type=_count, default=10, help="at most this many")
    common(p)
    p.set_defaults(func=cmd_review)

    p = subparsers.add_parser("report", help="instructor report: HTML with plots from learners' JSON exports")
    p.add_argument("exports", type=Path, help="folder of *.json files written by `ftlab export`")
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"))
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("export", help="write a learner's answers as JSON (to hand in, or back up)")
    p.add_argument("path", nargs="?", type=Path, help="output file (default: LEARNER.json)")
    common(p, bank=False)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("import", help="merge a JSON export into a learner's store")
    p.add_argument("path", type=Path)
    common(p, bank=False)
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser("progress", help="`progress check` lists damaged rows of a learner's store; "
                                               "`progress drop ROW` shows one and deletes it")
    p.add_argument("action", choices=["check", "drop"])
    p.add_argument("row", nargs="?", type=int, help="the row id to drop (from `progress check`)")
    p.add_argument("--yes", action="store_true", help="drop without asking")
    common(p, bank=False)
    p.set_defaults(func=cmd_progress)


def main(argv: list[str] | None = None) -> int:
    """`python -m ftlab.quiz.cli ...`: the same subcommands without the rest of the `ftlab` tool."""
    parser = argparse.ArgumentParser(prog="ftlab")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
