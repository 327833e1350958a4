"""tools/time_tables.py: the README's and INSTRUCTORS.md's time tables and schedules come from the measurements,
refuse a notebook with no measurement, and `--check` notices when the files fall behind the JSON."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import time_tables  # noqa: E402

CHAPTERS = ("00_setup", "03_lora", "04_qlora", "08_rlhf")
README = "# course\n\nintro\n\n<!-- times:chapters -->\n<!-- /times:chapters -->\n\nmiddle\n\n" \
         "<!-- times:labs -->\nold table\n<!-- /times:labs -->\n\nend\n"
INSTRUCTORS = "# instructors\n\n<!-- times:minutes -->\n<!-- /times:minutes -->\n\n" \
              "<!-- times:schedules -->\n<!-- /times:schedules -->\n\nafter\n"


def entry(seconds, load=(0.5, 0.7), error=None):
    return {"seconds": seconds, "load_before": load[0], "load_after": load[1], "error": error,
            "slowest_cells": [{"cell": 4, "seconds": seconds / 2}], "machine": "x86_64, 2 cores",
            "measured": "2026-01-02T03:04:05+00:00"}


def course(tmp_path: Path, cpu_chapter_seconds=(50, 120, 180, 1200)) -> tuple[Path, dict]:
    """A tiny checkout: four chapters, their labs, README.md, INSTRUCTORS.md, and the measurements of each."""
    for folder, suffix in (("chapters", ""), ("labs", "_lab")):
        (tmp_path / folder).mkdir()
        for stem in CHAPTERS:
            (tmp_path / folder / f"{stem}{suffix}.ipynb").write_text("{}")
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "INSTRUCTORS.md").write_text(INSTRUCTORS)
    times = {"ci/1 thread(s)": {}, "cpu/1 thread(s)": {}}
    for stem, cpu in zip(CHAPTERS, cpu_chapter_seconds):
        times["ci/1 thread(s)"][f"chapters/{stem}.ipynb"] = entry(11.2)
        times["ci/1 thread(s)"][f"labs/{stem}_lab.ipynb"] = entry(7.0)
        times["cpu/1 thread(s)"][f"chapters/{stem}.ipynb"] = entry(cpu, load=(1.25, 2.5))
        times["cpu/1 thread(s)"][f"labs/{stem}_lab.ipynb"] = entry(61.0)
    write_times(tmp_path, times)
    return tmp_path, times


def write_times(root: Path, times: dict) -> Path:
    path = root / time_tables.RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times))
    return path


def run(root: Path, *args: str) -> int:
    return time_tables.main(["--root", str(root), *args])


def test_tables_are_written_from_the_measurements_and_check_sees_staleness(tmp_path, capsys):
    root, times = course(tmp_path)
    assert run(root, "--check") == 1  # the blocks are empty: stale
    assert run(root) == 0
    readme = (root / "README.md").read_text()
    assert readme.startswith("# course\n\nintro\n\n<!-- times:chapters -->\n") and readme.endswith("\n\nend\n")
    assert "old table" not in readme and "middle" in readme
    chapters = readme.split("<!-- times:chapters -->")[1].split("<!-- /times:chapters -->")[0]
    assert "| 04_qlora | 11 | 180 | 1.2 → 2.5 | cell 4: 90 |" in chapters
    assert "| **all 4** | **45** | **1550** |" in chapters
    assert "python benchmarks/time_notebooks.py --profile cpu --threads 1 chapters/*.ipynb" in chapters
    assert "| 08_rlhf_lab | 7 | 61 |" in readme
    instructors = (root / "INSTRUCTORS.md").read_text()
    human = time_tables.HUMAN["08"]  # chapter 08: 1200 s = 20 min of run, its lab 61 s = 2 min
    assert (f"| 08 | {human.reading} | 20 | {human.lab} | 2 | {human.quiz} | "
            f"{human.reading + 20 + human.lab + 2 + human.quiz} |") in instructors
    assert "### Three days: day 3" in instructors and instructors.endswith("\n\nafter\n")

    assert run(root, "--check") == 0  # rewriting is idempotent
    times["cpu/1 thread(s)"]["chapters/03_lora.ipynb"]["seconds"] = 400
    write_times(root, times)
    before = (root / "README.md").read_text()
    assert run(root, "--check") == 1
    assert "stale: README.md" in capsys.readouterr().err
    assert (root / "README.md").read_text() == before  # --check writes nothing
    assert run(root) == 0 and "| 03_lora | 11 | 400 |" in (root / "README.md").read_text()


def test_a_notebook_without_a_measurement_is_refused_by_name_and_key(tmp_path, capsys):
    root, times = course(tmp_path)
    del times["ci/1 thread(s)"]["labs/04_qlora_lab.ipynb"]
    write_times(root, times)
    assert run(root) == 2
    err = capsys.readouterr().err
    assert "labs/04_qlora_lab.ipynb" in err and "ci/1 thread(s)" in err and "--profile ci" in err
    assert (root / "README.md").read_text() == README and (root / "INSTRUCTORS.md").read_text() == INSTRUCTORS


def test_a_failed_run_or_a_missing_file_is_refused(tmp_path, capsys):
    root, times = course(tmp_path)
    times["cpu/1 thread(s)"]["chapters/08_rlhf.ipynb"]["error"] = "ValueError: boom"
    path = write_times(root, times)
    assert run(root) == 2
    err = capsys.readouterr().err
    assert "chapters/08_rlhf.ipynb" in err and "boom" in err and "cpu/1 thread(s)" in err
    path.unlink()
    assert run(root) == 2 and "no measurements yet" in capsys.readouterr().err
    assert (root / "README.md").read_text() == README


def test_an_unpaired_marker_names_the_file(tmp_path, capsys):
    root, _ = course(tmp_path)
    (root / "INSTRUCTORS.md").write_text("<!-- times:schedules -->\nno end\n")
    assert run(root) == 2
    err = capsys.readouterr().err
    assert "INSTRUCTORS.md" in err and "/times:schedules" in err
    assert (root / "README.md").read_text() == README  # nothing is written when one file cannot be filled


def test_schedules_follow_the_measurements(tmp_path):
    root, times = course(tmp_path)
    sessions = time_tables.session_minutes(times, root)
    human = time_tables.HUMAN["03"]
    # 120 s chapter run = 2 minutes, 61 s lab run = 2 minutes (rounded up)
    assert sessions["03"] == {"chapter": human.reading + 2, "lab": human.lab + 2, "quiz": human.quiz}
    assert time_tables.one_day(sessions) == ["00", "03", "04"]

    # A slower chapter 04 no longer fits the day, and the plan stops there rather than skipping ahead.
    times["cpu/1 thread(s)"]["chapters/04_qlora.ipynb"]["seconds"] = 4 * 3600
    slow = time_tables.session_minutes(times, root)
    assert time_tables.one_day(slow) == ["00", "03"]
    days = time_tables.three_days(slow)
    assert sum(days, []) == ["00", "03", "04", "08"] and days[1] == ["04"]


def test_three_days_make_the_longest_day_as_short_as_possible():
    sessions = {n: {"chapter": m, "lab": 0, "quiz": 0} for n, m in
                zip(["00", "01", "02", "03", "04"], [10, 10, 10, 100, 10])}
    assert time_tables.three_days(sessions) == [["00", "01", "02"], ["03"], ["04"]]


def test_the_day_table_puts_breaks_at_boundaries_and_reports_an_overrun():
    sessions = {"01": {"chapter": 100, "lab": 60, "quiz": 10}, "02": {"chapter": 200, "lab": 100, "quiz": 10}}
    table, end = time_tables.day_table(["01", "02"], sessions)
    lines = table.splitlines()[2:]
    assert lines[0] == "| 09:00–10:40 | chapter 01: read and run |"
    assert lines[1] == "| 10:40–10:55 | break |"  # the first boundary after 10:30
    assert "| lunch |" in lines[4] and lines[4].startswith("| 12:05–13:05")
    assert end == 9 * 60 + 480 + 15 + 60 + 15
    assert "past 17:00" in time_tables.overrun(end) and "past" not in time_tables.overrun(16 * 60)


def test_every_real_chapter_has_a_human_time_assumption():
    numbers = {p.name[:2] for p in (ROOT / "chapters").glob("*.ipynb")}
    assert numbers <= set(time_tables.HUMAN), sorted(numbers - set(time_tables.HUMAN))


@pytest.mark.skipif(not (ROOT / time_tables.RESULTS).exists(), reason="no measured run in this checkout yet")
def test_the_repository_tables_match_its_measurements():
    assert time_tables.main(["--check"]) == 0, "run python tools/time_tables.py"
