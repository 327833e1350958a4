"""Terminal mode with piped stdin, export/import, and the instructor report."""

import io
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.cli import build_parser
from ftlab.quiz import Store, ordered_choices, scoring, store as store_module
from ftlab.quiz.cli import main
from ftlab.quiz.session import Session

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(scoring, "similarities", lambda a, kps: [0.9 if "MODEL" in a else 0.1] * len(kps))
    return tmp_path / "home"


def right_lines(item, learner):
    """What to type, in the letters `learner` sees (the choices are shown in their per-learner order)."""
    letters = "abcdefgh"
    ids = [c.id for c in ordered_choices(item, learner)] if item.kind in ("single", "multi") else []
    return {"single": lambda: [letters[ids.index(item.answer)]] if ids else [],
            "multi": lambda: [" ".join(letters[ids.index(a)] for a in item.answer)],
            "numeric": lambda: [f"{item.value:g}"],
            "free_text": lambda: [f"MODEL {item.model_answer}".replace("\n", " "), "3"]}[item.kind]()


def planned_lines(seed, learner, n=5):
    """The input a learner who knows every answer would type, found by a dry run on a throwaway store."""
    s = Session("quiz", store=Store("dry-run"), chapters=["02"], seed=seed, n=n)
    lines = []
    while (item := s.next_item()) is not None:
        lines += right_lines(item, learner)
        s.submit({"single": lambda: item.answer, "multi": lambda: item.answer, "numeric": lambda: item.value,
                  "free_text": lambda: "MODEL " + item.model_answer}[item.kind]())
    return lines, [i.id for i in s.test.asked]


def run_cli(monkeypatch, capsys, argv, stdin=""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_terminal_quiz_from_piped_answers(monkeypatch, capsys):
    lines, ids = planned_lines(seed=3, learner="ada")
    noisy = ["", "zz"] + lines  # blank and nonsense first: re-asked, not counted
    rc, out, _ = run_cli(monkeypatch, capsys, ["quiz", "--chapter", "02", "--learner", "ada", "--seed", "3"],
                         "\n".join(noisy) + "\n")
    assert rc == 0
    assert "Result: 5 of 5 correct" in out and "[5/5]" in out
    assert out.count("✔ ") >= 5 and "Read: chapters/02_small_hardware.ipynb#" in out
    answers = Store("ada").answers()
    assert [a.item_id for a in answers] == ids and all(a.correct for a in answers)
    assert all(a.mode == "quiz" for a in answers)
    rated = [a for a in answers if a.kind == "free_text"]
    assert all(a.rating == 3 for a in rated)  # the typed self-rating replaced the provisional one


def test_end_of_input_stops_and_keeps_answers(monkeypatch, capsys):
    lines, ids = planned_lines(seed=5, learner="bo")
    first = right_lines(Session("quiz", store=Store("dry2"), chapters=["02"], seed=5).next_item(), "bo")
    rc, out, _ = run_cli(monkeypatch, capsys, ["quiz", "--chapter", "2", "--learner", "bo", "--seed", "5"],
                         "\n".join(first[:1]) + "\n")
    assert rc == 0 and "Stopped. 1 answer(s) saved." in out
    assert [a.item_id for a in Store("bo").answers()] == ids[:1]


def test_daily_and_review_share_the_store(monkeypatch, capsys):
    rc, out, _ = run_cli(monkeypatch, capsys, ["daily", "--learner", "cy", "--date", "2025-01-02"], "")
    assert rc == 0 and "daily for cy" in out and "[1/5]" in out
    rc, out, _ = run_cli(monkeypatch, capsys, ["review", "--learner", "cy"], "")
    assert rc == 0 and "Nothing to ask" in out
    with pytest.raises(SystemExit) as e:
        run_cli(monkeypatch, capsys, ["daily", "--learner", "cy", "--date", "tomorrow"], "")
    assert e.value.code == 2 and "--date wants YYYY-MM-DD, got 'tomorrow'" in capsys.readouterr().err


def test_bad_arguments_and_broken_store_give_clear_errors(monkeypatch, capsys, home):
    rc, _, err = run_cli(monkeypatch, capsys, ["quiz", "--chapter", "77", "--learner", "d"])
    assert rc == 1 and "chapter '77' has no questions; chapters with questions: 00, 01" in err
    (home / "progress").mkdir(parents=True, exist_ok=True)
    (home / "progress" / "e.sqlite").write_text("not a database" * 50)
    rc, _, err = run_cli(monkeypatch, capsys, ["quiz", "--learner", "e"])
    assert rc == 1 and "e.sqlite is not a readable progress store" in err


def test_export_import_commands(monkeypatch, capsys, tmp_path):
    lines, _ = planned_lines(seed=1, learner="fa")
    run_cli(monkeypatch, capsys, ["quiz", "--chapter", "02", "--learner", "fa", "--seed", "1"], "\n".join(lines) + "\n")
    rc, out, _ = run_cli(monkeypatch, capsys, ["export", str(tmp_path / "fa.json"), "--learner", "fa"])
    assert rc == 0 and "exported 5 answers" in out
    rc, out, _ = run_cli(monkeypatch, capsys, ["import", str(tmp_path / "fa.json"), "--learner", "fb"])
    assert rc == 0 and "imported 5 new answers" in out
    (tmp_path / "bad.json").write_text("{")
    rc, _, err = run_cli(monkeypatch, capsys, ["import", str(tmp_path / "bad.json"), "--learner", "fb"])
    assert rc == 1 and "bad.json: not a readable JSON export" in err
    assert len(Store("fb").answers()) == 5


def test_report_from_two_exports(monkeypatch, capsys, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    for name, seed, right in (("gil", 2, True), ("hana", 4, False)):
        lines, _ = planned_lines(seed=seed, learner=name)
        if not right:
            lines = ["a", "1e9", "MODEL no", "1"] * 3  # whatever the question, mostly wrong
        run_cli(monkeypatch, capsys, ["quiz", "--chapter", "02", "--learner", name, "--seed", str(seed)],
                "\n".join(lines) + "\n")
        Store(name).export(exports / f"{name}.json")
    (exports / "broken.json").write_text('{"format": "nope"}')
    out_html = tmp_path / "report.html"
    rc, out, err = run_cli(monkeypatch, capsys, ["report", str(exports), "-o", str(out_html)])
    assert rc == 0 and "skipped" in err and "broken.json" in err
    page = out_html.read_text()
    assert page.count('src="data:image/png;base64,') == 3  # heatmap, activity, hardest items
    assert "<td>gil</td>" in page and "<td>hana</td>" in page and "broken.json" in page
    assert "ch02-" in page  # the hardest-items table names items


def test_report_empty_and_all_malformed(monkeypatch, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(monkeypatch, capsys, ["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html")])
    assert rc == 1 and "has no *.json exports" in err and not (tmp_path / "r.html").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("[1, 2")
    rc, _, err = run_cli(monkeypatch, capsys, ["report", str(tmp_path / "bad"), "-o", str(tmp_path / "r.html")])
    assert rc == 1 and "none of the 1 file(s)" in err and "x.json" in err


def test_the_ftlab_command_has_the_quiz_subcommands():
    parser = build_parser()
    for argv in (["quiz", "validate"], ["quiz", "--chapter", "02", "--learner", "x", "--seed", "1"], ["daily"],
                 ["review"], ["report", "d", "-o", "r.html"], ["export"], ["import", "f.json"]):
        assert callable(parser.parse_args(argv).func)


def test_real_pipe_into_a_subprocess(home):
    env = {**os.environ, "FTLAB_HOME": str(home), "PYTHONPATH": str(REPO)}
    lines, ids = planned_lines(seed=9, learner="pipe", n=2)
    done = subprocess.run([sys.executable, "-m", "ftlab.quiz.cli", "quiz", "--chapter", "02", "-n", "1",
                           "--learner", "pipe", "--seed", "9"], input=lines[0] + "\n", text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Result: 1 of 1 correct" in done.stdout
    assert [a.item_id for a in Store("pipe").answers()] == ids[:1]


class InterruptAfter(io.StringIO):
    """stdin that gives some lines, then raises KeyboardInterrupt the way Ctrl-C at a prompt does."""

    def __init__(self, lines):
        super().__init__("".join(line + "\n" for line in lines))
        self.left = len(lines)

    def readline(self, *args):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super().readline(*args)


def test_ctrl_c_at_a_prompt_stops_quietly_with_the_count(monkeypatch, capsys):
    lines, ids = planned_lines(seed=5, learner="cc")
    monkeypatch.setattr(sys, "stdin", InterruptAfter(lines[:1]))
    rc = main(["quiz", "--chapter", "02", "--learner", "cc", "--seed", "5"])
    out = capsys.readouterr()
    assert rc == 130 and out.out.endswith("Stopped. 1 answer(s) saved.\n") and "Traceback" not in out.err
    assert "Ctrl-D or Ctrl-C to stop" in out.out
    assert [a.item_id for a in Store("cc").answers()] == ids[:1]


def test_letters_follow_the_learners_own_choice_order(monkeypatch, capsys):
    """Each learner sees the choices shuffled for them; typing the letter shown next to the key is correct."""
    first = lambda seed: Session("quiz", store=Store("dry3"), chapters=["02"], seed=seed, n=1).next_item()  # noqa: E731
    seed = next(s for s in range(100) if first(s).kind == "single")
    item, orders = first(seed), set()
    for learner in ("ann", "ben", "cat", "dan"):
        shown = [c.id for c in ordered_choices(item, learner)]
        orders.add(tuple(shown))
        rc, out, _ = run_cli(monkeypatch, capsys, ["quiz", "--chapter", "02", "--learner", learner, "--seed", str(seed),
                                                   "-n", "1"], "abcdefgh"[shown.index(item.answer)] + "\n")
        listed = [line.split(") ", 1)[1] for line in out.splitlines() if re.match(r"   [a-h]\) ", line)]
        assert listed == [next(c.text for c in item.choices if c.id == i) for i in shown], learner
        assert rc == 0 and Store(learner).answers()[0].correct, learner
    assert len(orders) > 1  # the test would prove nothing if every learner saw the bank's order


@pytest.mark.parametrize("argv,message", [
    (["quiz", "-n", "0"], "-n wants a whole number of questions, 1 or more (got '0')"),
    (["quiz", "-n", "-3"], "1 or more (got '-3')"),
    (["review", "-n", "-1"], "1 or more"),
    (["quiz", "--learner", ""], "learner name ''"),
])
def test_bad_counts_and_names_are_usage_errors(monkeypatch, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        run_cli(monkeypatch, capsys, argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("chapter,message", [("lora", "--chapter 'lora' is not a chapter number"),
                                             ("abc", "--chapter 'abc' is not a chapter number"),
                                             ("99", "chapter '99' has no questions")])
def test_unknown_chapter_lists_the_chapters_without_claiming_saved_answers(monkeypatch, capsys, chapter, message):
    rc, _, err = run_cli(monkeypatch, capsys, ["quiz", "--chapter", chapter, "--learner", "x"])
    assert rc in (1, 2) and message in err and "chapters with questions: 00, 01, 02" in err
    assert "were saved" not in err


def test_store_error_mid_session_says_how_many_answers_were_kept(monkeypatch, capsys):
    lines, _ = planned_lines(seed=5, learner="mid")
    real = Store.record
    calls = []

    def record_then_fail(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise store_module.StoreError("could not write (is the disk full?)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "record", record_then_fail)
    rc, _, err = run_cli(monkeypatch, capsys, ["quiz", "--chapter", "02", "--learner", "mid", "--seed", "5"],
                         "\n".join(lines) + "\n")
    assert rc == 1 and "(the 1 answer(s) given before this were saved)" in err


def test_ftlab_home_that_is_a_file(monkeypatch, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "file"))
    rc, _, err = run_cli(monkeypatch, capsys, ["quiz", "--learner", "x"])
    assert rc == 1 and "a file is in the way of a folder" in err and "Errno" not in err


def test_failed_import_creates_no_store_and_export_to_a_folder_leaves_nothing(monkeypatch, capsys, tmp_path, home):
    rc, _, err = run_cli(monkeypatch, capsys, ["import", str(tmp_path / "missing.json"), "--learner", "new"])
    assert rc == 1 and "missing.json" in err and not (home / "progress" / "new.sqlite").exists()
    (tmp_path / "out").mkdir()
    rc, _, err = run_cli(monkeypatch, capsys, ["export", str(tmp_path / "out"), "--learner", "new"])
    assert rc == 1 and "is a folder" in err and not (tmp_path / "out.tmp").exists()


def test_damaged_row_is_listed_skipped_salvaged_and_dropped(monkeypatch, capsys, tmp_path, home):
    lines, ids = planned_lines(seed=1, learner="dr")
    run_cli(monkeypatch, capsys, ["quiz", "--chapter", "02", "--learner", "dr", "--seed", "1"], "\n".join(lines) + "\n")
    with sqlite3.connect(home / "progress" / "dr.sqlite") as conn:
        conn.execute("UPDATE answers SET topics='oops' WHERE id=3")
    rc, out, _ = run_cli(monkeypatch, capsys, ["progress", "check", "--learner", "dr"])
    assert rc == 1 and "row 3: DAMAGED: field 'topics': must be JSON text (got 'oops'" in out
    assert "4 valid answer(s), 1 damaged row(s)" in out
    rc, out, err = run_cli(monkeypatch, capsys, ["export", str(tmp_path / "dr.json"), "--learner", "dr"])
    assert rc == 0 and "exported 4 answers" in out and "left out 1 damaged row(s)" in err and "row id 3" in err
    rc, out, err = run_cli(monkeypatch, capsys, ["daily", "--learner", "dr", "--date", "2026-01-02"])
    assert rc == 0 and "warning: " in err and "dr.sqlite: skipped 1 damaged row(s) (row id 3" in err and "[1/" in out
    rc, out, _ = run_cli(monkeypatch, capsys, ["progress", "drop", "3", "--learner", "dr"], "n\n")
    assert rc == 1 and "topics" in out and "kept it" in out
    rc, out, _ = run_cli(monkeypatch, capsys, ["progress", "drop", "3", "--learner", "dr"], "y\n")
    assert rc == 0 and "deleted row 3" in out
    rc, out, _ = run_cli(monkeypatch, capsys, ["progress", "check", "--learner", "dr"])
    assert rc == 0 and "4 valid answer(s), 0 damaged row(s)" in out
    rc, _, err = run_cli(monkeypatch, capsys, ["progress", "drop", "3", "--learner", "dr", "--yes"])
    assert rc == 1 and "no row 3" in err


def test_sqlite_errors_in_export_are_one_line(monkeypatch, capsys, home):
    (home / "progress" / "d.sqlite").mkdir(parents=True)
    rc, _, err = run_cli(monkeypatch, capsys, ["export", "x.json", "--learner", "d"])
    assert rc == 1 and err.startswith("ftlab export: error: ") and "is a folder" in err and "Traceback" not in err


def test_bank_maths_is_readable_in_the_terminal():
    """Every text the terminal prints from the bank, converted: no LaTeX command or maths dollar is left."""
    from ftlab.quiz import bank
    from ftlab.quiz.plaintext import plain

    texts = [t for i in bank.load_banks() for t in [i.prompt, i.explanation, getattr(i, "model_answer", ""),
                                                     *getattr(i, "key_points", []),
                                                     *(c.feedback for c in getattr(i, "choices", []))]]
    assert sum("$" in t for t in texts) > 100  # the conversion has work to do
    for t in texts:
        out = plain(t)
        assert not re.search(r"\\[A-Za-z]+", out), (t, out)
        assert not re.search(r"\$(?!\d)", out), (t, out)  # only a currency sign (from \$) before a figure
    assert plain(r"$4{,}194{,}304$ and $\frac{\alpha}{r}$, $\mathbb{R}^{d \times r}$") == "4,194,304 and α/r, R^(d × r)"
