"""Generate the exercise notebooks in labs/ from the solutions in solutions/, with nbgrader metadata.

Inside a cell, everything between `### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader's markers) becomes
a stub at the same indentation, as nbgrader's own ClearSolutions writes it:

    # YOUR CODE HERE                      (a code cell)
    raise NotImplementedError()

    YOUR ANSWER HERE                      (a markdown cell: a written answer, graded by hand)

Outputs and execution counts are dropped. Every cell of solutions/ gets nbgrader metadata, written back into
solutions/ (so an instructor can copy a solution notebook into an nbgrader course as source/) and carried
into labs/:
- a cell with solution markers: a solution cell (`solution-NAME` after the function it defines); a markdown
  one is also graded by hand (1 point);
- a cell that calls `grading.check("NAME", ...)` or `grading.evaluate("NAME", ...)` (with `grading.report`):
  an autograded, locked test cell worth 1 point, grade id NAME. Strict grading (ftlab.grading) makes it fail
  unless the learner's NAME passes, so NAME must be a function a solution cell defines;
- every other cell: locked (nbgrader restores its source before grading).
Only cell metadata is touched in solutions/, under the notebook lock other tools use, so running this again
after someone edits a solution re-applies it. Usage:

    python tools/make_labs.py            # write nbgrader metadata into solutions/, then labs/
    python tools/make_labs.py --check    # exit 1 if solutions/ metadata or labs/ is stale, or labs/ has extras
"""

from __future__ import annotations

import argparse
import fcntl
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUBS = {"code": ["# YOUR CODE HERE", "raise NotImplementedError()"], "markdown": ["YOUR ANSWER HERE"]}
LOCK = Path("/tmp/ftlab-nb.lock")  # shared with the scripts that edit notebooks in place
_MARKER = re.compile(r"^([ \t]*)### (BEGIN|END) SOLUTION[ \t]*$")
_CHECK = re.compile(r"""\bgrading\.(check|evaluate)\(\s*(["'])([^"']+)\2""")
_DEF = re.compile(r"^def ([A-Za-z_]\w*)\(", re.MULTILINE)


class LabError(ValueError):
    pass


def strip_solution(source: str, where: str = "cell", stub: list[str] = STUBS["code"]) -> str:
    """Replace each BEGIN/END SOLUTION block of `source` with `stub`, indented like the marker."""
    out, indent = [], None
    for lineno, line in enumerate(source.splitlines(), 1):
        marker = _MARKER.match(line)
        if marker and marker[2] == "BEGIN":
            if indent is not None:
                raise LabError(f"{where}, line {lineno}: nested '{BEGIN}'")
            indent = marker[1]
            out += [indent + s for s in stub]
        elif marker:
            if indent is None:
                raise LabError(f"{where}, line {lineno}: '{END}' without '{BEGIN}'")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise LabError(f"{where}: '{BEGIN}' is never closed")
    return "\n".join(out)


def _nbgrader(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False) -> dict:
    """nbgrader's cell metadata (schema 3) for one cell."""
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    return {**meta, "points": 1} if grade else meta


def cell_metadata(nb: nbformat.NotebookNode, name: str) -> list[dict]:
    """The nbgrader metadata of each cell of a solution notebook; LabError says which cell breaks a rule."""
    metas, solved, ids = [], set(), set()
    for i, cell in enumerate(nb.cells):
        where = f"{name} cell {i}"
        checks = _CHECK.findall(cell.source) if cell.cell_type == "code" else []
        if BEGIN in cell.source and cell.cell_type not in STUBS:
            raise LabError(f"{where}: solution markers in a {cell.cell_type} cell")
        if BEGIN in cell.source and checks:
            raise LabError(f"{where}: a solution and a check in one cell; put the check in the next cell")
        if BEGIN in cell.source:
            defs = _DEF.findall(cell.source)
            solved.update(defs)
            meta = _nbgrader(f"solution-{defs[0] if defs else cell.get('id', i)}", solution=True,
                             grade=cell.cell_type == "markdown")
        elif checks:
            if len(checks) > 1:
                raise LabError(f"{where}: {len(checks)} checks in one cell; nbgrader grades a cell as a whole, so "
                               "give each check its own cell")
            kind, _, check = checks[0]
            if check not in solved:
                raise LabError(f"{where}: the check {check!r} grades no function defined in a solution cell above "
                               f"it; a check is named after the learner's function (`def {check}(...)`)")
            if kind == "evaluate" and "grading.report(" not in cell.source:
                raise LabError(f"{where}: grading.evaluate without grading.report: strict grading would never "
                               "fail this cell, so it would score the point for any answer")
            meta = _nbgrader(check, grade=True, locked=True)
        else:
            meta = _nbgrader(f"cell-{cell.get('id', i)}", locked=True)
        if meta["grade_id"] in ids:
            raise LabError(f"{where}: grade id {meta['grade_id']!r} is used twice")
        ids.add(meta["grade_id"])
        metas.append(meta)
    if not any(m["solution"] for m in metas):
        raise LabError(f"{name}: no '{BEGIN}' block, so the lab would equal the solution")
    return metas


def with_metadata(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The solution notebook with every cell's nbgrader metadata set (nothing else changes)."""
    nb = nbformat.from_dict(solution)
    for cell, meta in zip(nb.cells, cell_metadata(nb, name)):
        cell.metadata["nbgrader"] = meta
    return nb


def make_lab(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The lab notebook for a solution notebook: nbgrader metadata set, solutions stubbed, outputs dropped."""
    lab = with_metadata(solution, name)
    for i, cell in enumerate(lab.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if BEGIN in cell.source:
            cell.source = strip_solution(cell.source, f"{name} cell {i}", STUBS[cell.cell_type])
    return lab


def text(nb: nbformat.NotebookNode) -> str:
    """nbformat's canonical JSON (sorted keys, indent 1), as the committed notebooks are written."""
    return nbformat.writes(nb) + "\n"


@contextmanager
def notebook_lock():
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(solutions: Path, labs: Path) -> dict[Path, str]:
    """Every solution's and lab's path -> its notebook text."""
    wanted = {}
    for s in sorted(solutions.glob("*.ipynb")):
        nb = nbformat.read(s, as_version=4)
        wanted[s] = text(with_metadata(nb, s.name))
        wanted[labs / s.name] = text(make_lab(nb, s.name))
    return wanted


def _shown(p: Path) -> Path:
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write nbgrader metadata into solutions/ and generate labs/ from it.")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when solutions/ metadata or labs/ differ from what would be written")
    ap.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    ap.add_argument("--labs", type=Path, default=ROOT / "labs")
    args = ap.parse_args(argv)
    with notebook_lock():  # read and write under the lock: a solution edited meanwhile is never overwritten
        try:
            wanted = build(args.solutions, args.labs)
        except (LabError, nbformat.reader.NotJSONError) as e:
            print(f"make_labs: {e}", file=sys.stderr)
            return 2
        stale = [p for p, body in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != body]
        if args.check:
            extra = sorted(set(args.labs.glob("*.ipynb")) - set(wanted))
            for p in stale:
                print(f"stale: {_shown(p)}")
            for p in extra:
                print(f"no solution for: {p}")
            if stale or extra:
                print("run `make labs` (python tools/make_labs.py) and commit solutions/ and labs/", file=sys.stderr)
                return 1
            print(f"labs and nbgrader metadata up to date ({len(wanted) // 2} notebooks)")
            return 0
        args.labs.mkdir(exist_ok=True)
        for p in stale:
            p.write_text(wanted[p], encoding="utf-8")
            print(f"wrote {_shown(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
