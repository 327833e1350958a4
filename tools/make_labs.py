"""Generate the exercise notebooks in labs/ from the solutions in solutions/.

Inside a code cell, everything between `### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader's
markers, so instructors can also use nbgrader) becomes a stub at the same indentation:

    # YOUR CODE HERE
    raise NotImplementedError()

Outputs and execution counts are dropped. Usage:

    python tools/make_labs.py            # write labs/
    python tools/make_labs.py --check    # exit 1 if labs/ is stale or has extra notebooks
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_MARKER = re.compile(r"^([ \t]*)### (BEGIN|END) SOLUTION[ \t]*$")


class LabError(ValueError):
    pass


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace each BEGIN/END SOLUTION block of `source` with an indented stub."""
    out, indent = [], None
    for lineno, line in enumerate(source.splitlines(), 1):
        marker = _MARKER.match(line)
        if marker and marker[2] == "BEGIN":
            if indent is not None:
                raise LabError(f"{where}, line {lineno}: nested '{BEGIN}'")
            indent = marker[1]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif marker:
            if indent is None:
                raise LabError(f"{where}, line {lineno}: '{END}' without '{BEGIN}'")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise LabError(f"{where}: '{BEGIN}' is never closed")
    return "\n".join(out)


def make_lab(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The lab notebook for a solution notebook: solutions stubbed, outputs dropped."""
    lab = nbformat.from_dict(solution)
    n_blocks = 0
    for i, cell in enumerate(lab.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if BEGIN in cell.source:
            n_blocks += cell.source.count(BEGIN)
            cell.source = strip_solution(cell.source, f"{name} cell {i}")
    if n_blocks == 0:
        raise LabError(f"{name}: no '{BEGIN}' block, so the lab would equal the solution")
    return lab


def build(solutions: Path, labs: Path) -> dict[Path, str]:
    """Every lab's path -> its notebook text (nbformat's canonical JSON)."""
    return {labs / s.name: nbformat.writes(make_lab(nbformat.read(s, as_version=4), s.name)) + "\n"
            for s in sorted(solutions.glob("*.ipynb"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate labs/ from solutions/.")
    ap.add_argument("--check", action="store_true", help="exit 1 when labs/ differs from what would be generated")
    ap.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    ap.add_argument("--labs", type=Path, default=ROOT / "labs")
    args = ap.parse_args(argv)
    try:
        wanted = build(args.solutions, args.labs)
    except (LabError, nbformat.reader.NotJSONError) as e:
        print(f"make_labs: {e}", file=sys.stderr)
        return 2
    if args.check:
        stale = [p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        extra = sorted(set(args.labs.glob("*.ipynb")) - set(wanted))
        for p in stale:
            print(f"stale: {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
        for p in extra:
            print(f"no solution for: {p}")
        if stale or extra:
            print("run `make labs` (python tools/make_labs.py) and commit labs/", file=sys.stderr)
            return 1
        print(f"labs up to date ({len(wanted)} notebooks)")
        return 0
    args.labs.mkdir(exist_ok=True)
    for p, text in wanted.items():
        p.write_text(text, encoding="utf-8")
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
