"""Terminal mode with piped stdin, export/import, and the instructor report."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.quiz import Store, scoring
from ftlab.quiz.cli import main
from ftlab.quiz.session import Session

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(scoring, "similarities", lambda a, kps: [0.9 if "MODEL" in a else 0.1] * len(kps))
    return tmp_path / "home"


def right_lines(item):
    letters = "abcdefgh"
    ids = [c.id for c in getattr(item, "choices", [])]
    return {"single": lambda: [letters[ids.index(item.answer)]] if ids else [],
            "multi": lambda: [" ".join(letters[ids.index(a)] for a in item.answer)],
            "numeric": lambda: [f"{item.value:g}"],
            "free_text": lambda: [f"MODEL {item.model_answer}".replace("\n", " "), "3"]}[item.kind]()


def planned_lines(seed, n=5):
    """The input a learner who knows every answer would type, found by a dry run on a throwaway store."""
    s = Session("quiz", store=Store("dry-run"), chapters=["02"], seed=seed, n=n)
    lines = []
    while (item := s.next_item()) is not None:
        lines += right_lines(item)
        s.submit({"single": lambda: item.answer, "multi": lambda: item.answer, "numeric": lambda: item.value,
                  "free_text": lambda: "MODEL " + item.model_answer}[item.kind]())
    return lines, [i.id for i in s.test.asked]


def run_cli(monkeypatch, capsys, argv, stdin=""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_terminal_quiz_from_piped_answers(monkeypatch, capsys):
    lines, ids = planned_lines(seed=3)
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
    lines, ids = planned_lines(seed=5)
    first = right_lines(Session("quiz", store=Store("dry2"), chapters=["02"], seed=5).next_item())
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
    assert rc == 1 and "no bank items for chapter(s) ['77']" in err
    (home / "progress").mkdir(parents=True, exist_ok=True)
    (home / "progress" / "e.sqlite").write_text("not a database" * 50)
    rc, _, err = run_cli(monkeypatch, capsys, ["quiz", "--learner", "e"])
    assert rc == 1 and "e.sqlite is not a readable progress store" in err


def test_export_import_commands(monkeypatch, capsys, tmp_path):
    lines, _ = planned_lines(seed=1)
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
        lines, _ = planned_lines(seed=seed)
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
    cli = pytest.importorskip("ftlab.cli", reason="ftlab/cli.py is another part of the project")
    parser = cli.build_parser()
    for argv in (["quiz", "validate"], ["quiz", "--chapter", "02", "--learner", "x", "--seed", "1"], ["daily"],
                 ["review"], ["report", "d", "-o", "r.html"], ["export"], ["import", "f.json"]):
        assert callable(parser.parse_args(argv).func)


def test_real_pipe_into_a_subprocess(home):
    env = {**os.environ, "FTLAB_HOME": str(home), "PYTHONPATH": str(REPO)}
    lines, ids = planned_lines(seed=9, n=2)
    done = subprocess.run([sys.executable, "-m", "ftlab.quiz.cli", "quiz", "--chapter", "02", "-n", "1",
                           "--learner", "pipe", "--seed", "9"], input=lines[0] + "\n", text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Result: 1 of 1 correct" in done.stdout
    assert [a.item_id for a in Store("pipe").answers()] == ids[:1]
