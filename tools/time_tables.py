"""Write the measured-time tables of README.md and INSTRUCTORS.md from benchmarks/results/notebook_times.json.

    python tools/time_tables.py            # rewrite the blocks between the marker comments (or `make times`)
    python tools/time_tables.py --check    # exit 1 if a block differs from what the measurements give

A block is the text between `<!-- times:NAME -->` and `<!-- /times:NAME -->`, NAME one of:
- chapters, labs: seconds per notebook of chapters/ (labs/) under the `ci` and the `cpu` profile at one
  thread, the load average the run recorded, and the command that repeats it;
- minutes: one learner's minutes per chapter (chapter, lab, quiz): the `cpu` run times plus the human minutes
  assumed in HUMAN below;
- schedules: a one-day and a three-day workshop plan cut from those minutes, so the plans move when the
  measurements do.
The measurements come from benchmarks/time_notebooks.py. Every notebook in chapters/ and labs/ must have a
successful record under both keys: a missing or failed one is an error naming the notebook and the key, never a
blank cell. Nothing is written unless every block of every file renders.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks/results/notebook_times.json")
TARGETS = ("README.md", "INSTRUCTORS.md")
KEYS = {"ci": "ci/1 thread(s)", "cpu": "cpu/1 thread(s)"}
FOLDERS = {"chapters": "chapters", "labs": "labs"}
MARKER = re.compile(r"<!-- times:(\w+) -->\n(.*?)<!-- /times:\1 -->", re.DOTALL)
OPENING = re.compile(r"<!-- (/?)times:(\w+) -->")


@dataclass(frozen=True)
class Human:
    """Minutes a learner spends on one chapter apart from waiting for cells: reading the chapter (or hearing
    it taught) with its discussion, writing the lab's exercises, and the chapter's 5-question quiz."""
    reading: int
    lab: int
    quiz: int


# Assumptions, not measurements: set from the length of each chapter and the number of exercises in its lab.
# An instructor who knows the cohort edits these and runs the tool again.
HUMAN = {
    "00": Human(15, 15, 5), "01": Human(40, 35, 10), "02": Human(50, 35, 10), "03": Human(40, 45, 10),
    "04": Human(50, 50, 10), "05": Human(40, 40, 10), "06": Human(35, 35, 10), "07": Human(35, 35, 10),
    "08": Human(50, 60, 10), "09": Human(35, 30, 10), "10": Human(35, 30, 10),
}
DAY_START, DAY_END = 9 * 60, 17 * 60
# (earliest clock minute, length, name): each break starts at the first part boundary at or after that minute
BREAKS = ((10 * 60 + 30, 15, "break"), (12 * 60, 60, "lunch"), (15 * 60, 15, "break"))
TEACHING_MINUTES = DAY_END - DAY_START - sum(b[1] for b in BREAKS)
# The one-day plan: chapters in this order while they fit the day (the path to fine-tuning an LLM on a laptop).
ONE_DAY_ORDER = ("00", "03", "04", "06", "08", "02", "01", "07", "05", "09", "10")


class TimesError(ValueError):
    pass


def load_times(path: Path) -> dict:
    """The measurements: {key: {notebook path: record}}. TimesError names the file when it is absent or bad."""
    try:
        times = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TimesError(f"{path}: no measurements yet; run {repeat_command('cpu', 'chapters')} and "
                         f"the same for labs/ and for --profile ci") from None
    except json.JSONDecodeError as e:
        raise TimesError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(times, dict):
        raise TimesError(f"{path}: expected an object of '<profile>/<threads> thread(s)' keys")
    return times


def notebooks(root: Path, folder: str) -> list[str]:
    """The notebooks of `folder` under `root`, as the repository-relative names the measurements use."""
    return sorted(f"{folder}/{p.name}" for p in (root / folder).glob("*.ipynb"))


def repeat_command(profile: str, folder: str) -> str:
    return f"python benchmarks/time_notebooks.py --profile {profile} --threads 1 {folder}/*.ipynb"


def record(times: dict, profile: str, name: str) -> dict:
    """The successful measurement of notebook `name` under `profile`; TimesError names the notebook and key."""
    key = KEYS[profile]
    found = times.get(key, {}).get(name)
    if found is None:
        folder = name.split("/")[0]
        raise TimesError(f"{name} has no measurement under '{key}' in {RESULTS}; "
                         f"run {repeat_command(profile, folder)}")
    for field in ("seconds", "load_before", "load_after"):
        if not isinstance(found.get(field), (int, float)):
            raise TimesError(f"{name} under '{key}' in {RESULTS}: field '{field}' is not a number")
    if found.get("error"):
        raise TimesError(f"{name} failed in its timed run under '{key}' ({found['error']}); fix it and time it again")
    return found


def minutes(seconds: float) -> int:
    """Whole minutes a learner waits, rounded up."""
    return math.ceil(seconds / 60)


def time_table(times: dict, names: list[str], folder: str) -> str:
    """Markdown: seconds per notebook under ci and cpu, the cpu run's load and slowest cell, then how to repeat."""
    rows = ["| notebook | `ci` (s) | `cpu` (s) | load average during the `cpu` run | slowest `cpu` cell (s) |",
            "|---|---:|---:|---|---|"]
    totals = {"ci": 0.0, "cpu": 0.0}
    for name in names:
        ci, cpu = record(times, "ci", name), record(times, "cpu", name)
        totals["ci"] += ci["seconds"]
        totals["cpu"] += cpu["seconds"]
        slow = cpu.get("slowest_cells") or [{}]
        slowest = f"cell {slow[0]['cell']}: {slow[0]['seconds']:.0f}" if slow[0] else "-"
        rows.append(f"| {Path(name).stem} | {ci['seconds']:.0f} | {cpu['seconds']:.0f} | "
                    f"{cpu['load_before']:.1f} → {cpu['load_after']:.1f} | {slowest} |")
    rows.append(f"| **all {len(names)}** | **{totals['ci']:.0f}** | **{totals['cpu']:.0f}** | | |")
    measured = [record(times, p, n) for p in KEYS for n in names]
    machines = sorted({m.get("machine", "unknown machine") for m in measured})
    dates = sorted(m.get("measured", "")[:10] for m in measured if m.get("measured"))
    when = f"{dates[0]} to {dates[-1]}" if dates and dates[0] != dates[-1] else (dates[0] if dates else "undated")
    return "\n".join([
        f"Seconds per notebook of `{folder}/`, run top to bottom in a fresh kernel, one notebook at a time, with "
        f"`OMP_NUM_THREADS=1`; measured on {', '.join(machines)}, {when} (UTC). A load average above the core "
        "count means other work shared the machine and the times are upper bounds. Repeat with "
        f"`{repeat_command('cpu', folder)}` (and `--profile ci`), then `python tools/time_tables.py`.",
        "", *rows])


def session_minutes(times: dict, root: Path) -> dict[str, dict[str, int]]:
    """chapter number -> minutes of its parts: chapter (reading + measured cpu run), lab (exercises + run), quiz."""
    labs = {Path(n).name[:2]: n for n in notebooks(root, FOLDERS["labs"])}
    sessions = {}
    for name in notebooks(root, FOLDERS["chapters"]):
        number = Path(name).name[:2]
        if number not in HUMAN:
            raise TimesError(f"{name}: no human-time assumption for chapter {number} in HUMAN (tools/time_tables.py)")
        human = HUMAN[number]
        lab_run = minutes(record(times, "cpu", labs[number])["seconds"]) if number in labs else 0
        sessions[number] = {"chapter": human.reading + minutes(record(times, "cpu", name)["seconds"]),
                            "lab": human.lab + lab_run, "quiz": human.quiz}
    return sessions


def one_day(sessions: dict[str, dict[str, int]]) -> list[str]:
    """The chapters of ONE_DAY_ORDER taken in turn while their total fits a teaching day, in chapter order."""
    chosen, used = [], 0
    for number in (n for n in ONE_DAY_ORDER if n in sessions):
        need = sum(sessions[number].values())
        if used + need > TEACHING_MINUTES:
            break
        chosen.append(number)
        used += need
    return sorted(chosen)


def three_days(sessions: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every chapter in order, cut into three consecutive days so that the longest day is as short as it can be."""
    order = sorted(sessions)
    total = [sum(sessions[n].values()) for n in order]
    if len(order) < 3:
        return [order[i:i + 1] for i in range(3)]
    best = min(combinations(range(1, len(order)), 2),
               key=lambda cut: max(sum(total[:cut[0]]), sum(total[cut[0]:cut[1]]), sum(total[cut[1]:])))
    return [order[:best[0]], order[best[0]:best[1]], order[best[1]:]]


def clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def day_table(chapters: list[str], sessions: dict[str, dict[str, int]]) -> tuple[str, int]:
    """Markdown rows from 09:00 with each break at the first part boundary after its hour; and the day's end."""
    rows, now, breaks = ["| time | what |", "|---|---|"], DAY_START, list(BREAKS)
    for number in chapters:
        for part, label in (("chapter", f"chapter {number}: read and run"), ("lab", f"lab {number}"),
                            ("quiz", f"quiz {number}")):
            if breaks and now >= breaks[0][0]:
                _, length, name = breaks.pop(0)
                rows.append(f"| {clock(now)}–{clock(now + length)} | {name} |")
                now += length
            rows.append(f"| {clock(now)}–{clock(now + sessions[number][part])} | {label} |")
            now += sessions[number][part]
    return "\n".join(rows), now


def overrun(end: int) -> str:
    return (f"Ends at {clock(end)}, {end - DAY_END} minutes past {clock(DAY_END)}: trim a lab's experiment or "
            "move a quiz to homework." if end > DAY_END else f"Ends at {clock(end)}.")


def minutes_table(sessions: dict[str, dict[str, int]]) -> str:
    """Markdown: one learner's minutes per chapter, the assumed parts and the measured ones side by side."""
    rows = ["| chapter | reading (assumed) | `cpu` run (measured) | lab exercises (assumed) | lab `cpu` run "
            "(measured) | quiz (assumed) | total |", "|---|---:|---:|---:|---:|---:|---:|"]
    for number, parts in sessions.items():
        human = HUMAN[number]
        rows.append(f"| {number} | {human.reading} | {parts['chapter'] - human.reading} | {human.lab} | "
                    f"{parts['lab'] - human.lab} | {human.quiz} | {sum(parts.values())} |")
    total = sum(sum(parts.values()) for parts in sessions.values())
    return "\n".join([
        "Minutes one learner spends per chapter: the chapter, then its lab, then its quiz. The measured parts are "
        "the `cpu` profile's run times at one thread (the README's notebook tables), rounded up to whole minutes and "
        "counted as waiting on top of the reading, an upper bound since many cells finish while a learner reads. "
        "The assumed parts are `HUMAN` in `tools/time_tables.py`, set from each chapter's length and its lab's "
        "number of exercises: reading and discussing the chapter, writing the lab's exercises, one 5-question "
        f"quiz. The whole course comes to about {total / 60:.0f} hours.", "", *rows])


def schedules(sessions: dict[str, dict[str, int]]) -> str:
    """The one-day and the three-day plan, as markdown."""
    day = one_day(sessions)
    left = [n for n in sessions if n not in day]
    table, end = day_table(day, sessions)
    out = ["Built from the minutes per chapter above. A day runs from 09:00 to 17:00 with a 15-minute break after "
           "10:30, an hour's lunch after 12:00 and a 15-minute break after 15:00, each at the first boundary "
           f"between parts, which leaves {TEACHING_MINUTES} teaching minutes.",
           "", "### One day", "",
           f"Chapters taken in the order {', '.join(ONE_DAY_ORDER)} (the way to fine-tuning an LLM on a laptop) "
           f"until the next one does not fit: {', '.join(day)}. {overrun(end)} Left for later: "
           f"{', '.join(left) or 'none'}.", "", table]
    for i, chapters in enumerate(three_days(sessions), 1):
        table, end = day_table(chapters, sessions)
        named = f"Chapter{'s' if len(chapters) > 1 else ''} {', '.join(chapters)}"
        out += ["", f"### Three days: day {i}", "", f"{named}. {overrun(end)}", "", table]
    return "\n".join(out)


def render(times: dict, root: Path) -> dict[str, str]:
    """Block name -> its new markdown."""
    sessions = session_minutes(times, root)
    return {"chapters": time_table(times, notebooks(root, FOLDERS["chapters"]), FOLDERS["chapters"]),
            "labs": time_table(times, notebooks(root, FOLDERS["labs"]), FOLDERS["labs"]),
            "minutes": minutes_table(sessions), "schedules": schedules(sessions)}


def fill(text: str, blocks: dict[str, str], where: str) -> str:
    """`text` with every marker block replaced by its rendering; TimesError names the file and the marker when
    a block is unknown or a marker has no partner."""
    opened = [m.group(2) for m in OPENING.finditer(text) if not m.group(1)]
    closed = [m.group(2) for m in OPENING.finditer(text) if m.group(1)]
    paired = [m.group(1) for m in MARKER.finditer(text)]
    for name in set(opened) | set(closed):
        if name not in blocks:
            raise TimesError(f"{where}: unknown block 'times:{name}' (known: {', '.join(blocks)})")
        if opened.count(name) != closed.count(name) or paired.count(name) != opened.count(name):
            raise TimesError(f"{where}: 'times:{name}' needs one '<!-- times:{name} -->' line and one "
                             f"'<!-- /times:{name} -->' after it")
    return MARKER.sub(lambda m: f"<!-- times:{m.group(1)} -->\n{blocks[m.group(1)]}\n<!-- /times:{m.group(1)} -->",
                      text)


def updated(root: Path, times: dict) -> dict[Path, tuple[str, str]]:
    """path -> (current text, text with fresh blocks) for each target file that exists."""
    blocks = render(times, root)
    files = [root / t for t in TARGETS if (root / t).exists()]
    return {p: (old, fill(old, blocks, p.name)) for p in files for old in [p.read_text(encoding="utf-8")]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a file's blocks are stale; write nothing")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    ap.add_argument("--times", type=Path, help=f"measurements (default: ROOT/{RESULTS})")
    args = ap.parse_args(argv)
    try:
        texts = updated(args.root, load_times(args.times or args.root / RESULTS))
    except (TimesError, OSError) as e:
        print(f"time_tables: {e}", file=sys.stderr)
        return 2
    stale = [p for p, (old, new) in texts.items() if old != new]
    if args.check:
        for p in stale:
            print(f"stale: {p.name}; run python tools/time_tables.py", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(texts[p][1], encoding="utf-8")
        tmp.replace(p)
    print(f"updated {', '.join(p.name for p in stale) or 'nothing (already current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
