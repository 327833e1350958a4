"""Lay out an nbgrader course folder for the ftlab labs.

    python tools/nbgrader_course.py COURSE [LAB ...]     # LAB: e.g. 03_lora_lab (default: every lab)

writes COURSE/nbgrader_config.py (this repository's) and COURSE/source/LAB/LAB.ipynb from solutions/, which
carry nbgrader's cell metadata (tools/make_labs.py). An existing notebook or config in COURSE is replaced;
nothing else there (gradebook, submissions) is touched.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_course(course: Path, labs: list[str] | None = None, solutions: Path = ROOT / "solutions") -> list[Path]:
    """Write the course's config and source notebooks; returns the notebooks written. ValueError names an
    unknown lab."""
    available = {p.stem: p for p in sorted(solutions.glob("*.ipynb"))}
    unknown = sorted(set(labs or ()) - set(available))
    if unknown:
        raise ValueError(f"no solution notebook for {', '.join(unknown)} in {solutions} "
                         f"(labs: {', '.join(available)})")
    course.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    written = []
    for name in labs or available:
        target = course / "source" / name / f"{name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(available[name], target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Make an nbgrader course folder from solutions/.")
    ap.add_argument("course", type=Path, help="the course folder (created if missing)")
    ap.add_argument("labs", nargs="*", help="lab names such as 03_lora_lab (default: all)")
    args = ap.parse_args(argv)
    try:
        written = make_course(args.course, args.labs)
    except (ValueError, OSError) as e:
        print(f"nbgrader_course: {e}", file=sys.stderr)
        return 2
    print(f"{args.course}: nbgrader_config.py and {len(written)} lab(s) under source/; next, inside it: "
          f"nbgrader generate_assignment {written[0].parent.name}" if written else "no labs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
