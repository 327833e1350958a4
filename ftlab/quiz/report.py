"""Instructor report: one self-contained HTML file from a folder of learners' JSON exports.

Plots (matplotlib, embedded as PNG): mastery per topic per learner (heatmap of sigmoid(theta),
the same 1PL estimate the widget shows), hardest items by error rate, answers per day. A table
gives each learner's totals and weakest topics; a learner with no answers yet is listed too.

Labs, beside the quizzes: per learner and lab, how many of the lab's graded checks have passed (the
checks are the grade cells of labs/*.ipynb, plus any other check a learner ran) and how many tries that
took, as a table and a heatmap; then each check's passes and tries across the cohort.

A learner is one store: exports carry the store's random id, so two people who share a name
(`jovyan` on every Jupyter docker image) stay two rows, and two exports of one store merge.
An older export without an id counts as its own learner. A file that is not a valid export is
skipped with a warning naming it and why; names, item ids and topics are plain text in plots.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .adaptive import Ability, estimate
from .bank import REPO
from .store import read_export

LABS_DIR = REPO / "labs"


class ReportError(RuntimeError):
    pass


def load_exports(folder: Path) -> tuple[dict[str, list], list[str]]:
    """learner label -> answers (exports of one store are merged), and one warning per skipped file or shared name.

    The label is the learner's name, followed by the first file's name when other stores use that name too.
    """
    learners, _, warnings = load_cohort(folder)
    return learners, warnings


def load_cohort(folder: Path) -> tuple[dict[str, list], dict[str, list], list[str]]:
    """As load_exports, and also learner label -> lab checks (oldest first), under the same labels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder of exports")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ReportError(f"{folder} has no *.json exports; learners write them with `ftlab export`")
    stores: dict[tuple, dict] = {}  # (name, store id or file) -> {uid: answer}
    checks: dict[tuple, dict] = {}  # the same keys -> {uid: lab check}
    first_file: dict[tuple, str] = {}
    warnings = []
    for f in files:
        try:
            data = read_export(f)
        except ValueError as e:
            warnings.append(f"skipped {e}")
            continue
        key = (data["learner"], data["store_id"] or f"file {f.name}")
        first_file.setdefault(key, f.name)
        stores.setdefault(key, {}).update((a.uid, a) for a in data["answers"])
        checks.setdefault(key, {}).update((c.uid, c) for c in data["lab_checks"])
    if not stores:
        raise ReportError(f"none of the {len(files)} file(s) in {folder} is a valid export:\n  "
                          + "\n  ".join(warnings))
    names = Counter(name for name, _ in stores)
    learners, lab_checks = {}, {}
    for key in sorted(stores, key=lambda k: (k[0], first_file[k])):
        name = key[0]
        if names[name] > 1:
            name = f"{name} ({first_file[key]})"
        learners[name] = sorted(stores[key].values(), key=lambda a: a.answered_at)
        lab_checks[name] = sorted(checks[key].values(), key=lambda c: c.checked_at)
    for name, count in sorted(names.items()):
        if count > 1:
            shared = ", ".join(first_file[k] for k in stores if k[0] == name)
            warnings.append(f"{count} different stores use the learner name {name!r} ({shared}): shown as separate "
                            f"rows, labelled by file; ask learners to export with `--learner` set to their own name")
    return learners, lab_checks, warnings


def course_checks(labs_dir: Path = LABS_DIR) -> dict[str, list[str]]:
    """lab name -> its graded checks, from the nbgrader grade cells of labs/*.ipynb ({} without labs/)."""
    import json

    labs = {}
    for path in sorted(Path(labs_dir).glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        grading = [c.get("metadata", {}).get("nbgrader", {}) for c in cells]
        labs[path.stem] = [g["grade_id"] for g in grading if g.get("grade") and not g.get("solution")]
    return labs


def lab_progress(lab_checks: dict[str, list], known: dict[str, list[str]]) -> dict[str, dict[str, tuple]]:
    """learner -> lab -> (checks passed, checks in the lab, tries), for every lab someone ran a check of.

    A lab's checks are those `known` lists plus any other one a learner ran; tries counts every card shown.
    """
    labs = {lab: list(names) for lab, names in known.items()}
    for checks in lab_checks.values():
        for c in checks:
            if c.check not in labs.setdefault(c.lab, []):
                labs[c.lab].append(c.check)
    ran = sorted({c.lab for checks in lab_checks.values() for c in checks})
    return {name: {lab: (len({c.check for c in checks if c.lab == lab and c.passed}), len(labs[lab]),
                         sum(c.lab == lab for c in checks)) for lab in ran}
            for name, checks in lab_checks.items()}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _heatmap(learners: dict, abilities: dict) -> str:
    import numpy as np

    topics = sorted({t for a in abilities.values() for t in a.topics})
    grid = np.full((len(learners), len(topics)), np.nan)
    for r, name in enumerate(learners):
        for c, t in enumerate(topics):
            if t in abilities[name].topics:
                grid[r, c] = Ability.mastery(abilities[name].topics[t])
    return _share_grid_png(grid, list(learners), topics, "mastery: P(correct) on a difficulty-3 item",
                           "Mastery per topic (blank: no answers yet)")


def _lab_heatmap(progress: dict) -> str:
    import numpy as np

    labs = sorted({lab for row in progress.values() for lab in row})
    grid = np.array([[row[lab][0] / row[lab][1] if row[lab][2] else np.nan for lab in labs]
                     for row in progress.values()])
    return _share_grid_png(grid, list(progress), labs, "share of the lab's checks passed",
                           "Labs: checks passed (blank: not started)")


def _share_grid_png(grid, rows: list[str], columns: list[str], label: str, title: str) -> str:
    """A learners x columns heatmap of shares in [0, 1], each cell labelled with its percentage (NaN: blank)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.2 + 0.45 * len(rows)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for (r, c), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(c, r, f"{v:.0%}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    return _png(fig)


def _labs_section(lab_checks: dict, known: dict[str, list[str]]) -> str:
    """The Labs part of the page: progress table and heatmap, then each check's passes and tries."""
    progress = {name: row for name, row in lab_progress(lab_checks, known).items() if lab_checks[name]}
    if not progress:
        return "<h2>Labs</h2><p>No lab checks recorded yet.</p>"
    labs = sorted({lab for row in progress.values() for lab in row})
    head = "".join(f"<th>{html.escape(lab)}</th>" for lab in labs)
    rows = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(
        f"<td>{row[lab][0]}/{row[lab][1]} ({row[lab][2]} tries)</td>" if row[lab][2] else "<td>-</td>"
        for lab in labs) + "</tr>" for name, row in progress.items())
    tally: dict[tuple, list] = {}  # (lab, check) -> [learners who passed, learners who tried, tries]
    for checks in lab_checks.values():
        for key in {(c.lab, c.check) for c in checks}:
            mine = [c for c in checks if (c.lab, c.check) == key]
            t = tally.setdefault(key, [0, 0, 0])
            t[0] += any(c.passed for c in mine)
            t[1] += 1
            t[2] += len(mine)
    per_check = "".join(f"<tr><td>{html.escape(lab)}</td><td>{html.escape(check)}</td><td>{p} of {n}</td>"
                        f"<td>{tries}</td></tr>" for (lab, check), (p, n, tries) in sorted(tally.items()))
    return (f"<h2>Labs</h2><table><tr><th>learner</th>{head}</tr>{rows}</table>{_lab_heatmap(progress)}"
            "<h3>Checks</h3><table><tr><th>lab</th><th>check</th><th>learners passed</th><th>tries</th></tr>"
            f"{per_check}</table>")


def _hardest(learners: dict, top: int = 12) -> tuple[str, list]:
    import matplotlib.pyplot as plt

    tries, wrong = Counter(), Counter()
    for answers in learners.values():
        for a in answers:
            tries[a.item_id] += 1
            wrong[a.item_id] += not a.correct
    ranked = sorted(tries, key=lambda i: (-wrong[i] / tries[i], -tries[i], i))[:top]
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.35 * len(ranked)))
    ax.barh(ranked[::-1], [wrong[i] / tries[i] for i in ranked[::-1]], color="#cf6b4d")
    ax.set_xlim(0, 1)
    ax.set_xlabel("error rate")
    ax.set_title("Hardest items")
    return _png(fig), [(i, wrong[i], tries[i]) for i in ranked]


def _activity(learners: dict) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    for name, answers in learners.items():
        per_day = Counter(a.answered_at.date() for a in answers)
        days = sorted(per_day)
        ax.plot(days, [per_day[d] for d in days], marker="o", label=name)
    times = [a.answered_at for answers in learners.values() for a in answers]
    if max(times) - min(times) < timedelta(days=7):  # else a short span is auto-scaled to years around it
        mid = (min(times) + (max(times) - min(times)) / 2).date()
        ax.set_xlim(mid - timedelta(days=4), mid + timedelta(days=4))
    ax.set_ylabel("answers per day")
    ax.set_title("Activity over time")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def build_report(exports: Path, output: Path, labs_dir: Path = LABS_DIR) -> tuple[Path, list[str]]:
    """Write the report; returns its path and warnings (skipped files, shared names). ReportError if nothing usable.

    `labs_dir` holds the lab notebooks whose graded checks count as each lab's checks.
    """
    import matplotlib

    output = Path(output)
    if not output.parent.is_dir():  # checked before the plots are built, not after
        raise ReportError(f"cannot write {output}: the folder {output.parent} does not exist")
    matplotlib.use("Agg")  # a file, not a window: works on a server with no display
    learners, lab_checks, warnings = load_cohort(exports)
    abilities = {name: estimate(answers) for name, answers in learners.items()}
    answered = {n: a for n, a in learners.items() if a}
    with matplotlib.rc_context({"text.parse_math": False}):  # '$...$' in a learner name is text, not mathtext
        hardest_png, hardest = _hardest(learners)
        plots = ((_heatmap(answered, abilities) + _activity(answered) + hardest_png) if answered
                 else "<p>No answers yet.</p>")
        labs = _labs_section(lab_checks, course_checks(labs_dir))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{len(a)}</td><td>{sum(x.correct for x in a) / len(a):.0%}</td>"
        f"<td>{abilities[name].overall:+.2f}</td><td>{a[-1].answered_at:%Y-%m-%d}</td>"
        f"<td>{html.escape(', '.join(abilities[name].weakest(3)))}</td></tr>" if a else
        f"<tr><td>{html.escape(name)}</td><td>0</td><td colspan=4>no answers yet</td></tr>"
        for name, a in learners.items())
    hard_rows = "".join(f"<tr><td>{html.escape(i)}</td><td>{w} of {n}</td></tr>" for i, w, n in hardest)
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ftlab cohort report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 10px;text-align:left}}
img{{max-width:100%;display:block;margin:1em 0}}.warn{{color:#b35900}}</style></head><body>
<h1>ftlab cohort report</h1><p>{len(learners)} learner(s), {sum(map(len, learners.values()))} answers,
built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from <code>{html.escape(str(exports))}</code>.</p>
{f'<div class="warn"><b>Warnings</b><ul>{warn}</ul></div>' if warn else ''}
<h2>Learners</h2><table><tr><th>learner</th><th>answers</th><th>correct</th><th>ability θ</th><th>last active</th>
<th>weakest topics</th></tr>{rows}</table>
<h2>Plots</h2>{plots}
<h2>Hardest items</h2><table><tr><th>item</th><th>wrong</th></tr>{hard_rows}</table>
{labs}</body></html>"""
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"cannot write {output}: {e.strerror or e}") from e
    return output, warnings
