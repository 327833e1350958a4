"""Write the learners' copy of the course, without solutions: a folder and a zip to hand to a cohort.

    python tools/make_release.py [--out build/release] [--name ftlab-course]      (or `make release`)

OUT/NAME/ gets the chapters, the labs (stubs), the quizzes, the data, the ftlab package, the benchmarks and
what installs and opens them (README.md, pyproject.toml, environment.yml, Makefile, tools/workspace.py);
OUT/NAME.zip holds the same folder. Files are the ones git tracks, plus new ones it does not ignore, so
caches and a learner's my/ copies stay out. Nothing is written when a file to be shipped contains a solution
marker or lies under solutions/: the error names the file. The ftlab package itself holds the reference
implementations the checks compare against (that is how labs grade); see ftlab/grading.py for what keeps a
learner from simply calling them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("README.md", "INSTRUCTORS.md", "pyproject.toml", "environment.yml", "Makefile", ".gitignore", "ftlab",
           "chapters", "labs", "quizzes", "data", "benchmarks", "tools/workspace.py")
MARKERS = (b"### BEGIN SOLUTION", b"### END SOLUTION")
STAMP = ".ftlab-release"  # marks a folder this tool wrote, so only such a folder is ever replaced


class ReleaseError(RuntimeError):
    pass


def shipped_files(root: Path = ROOT, shipped: tuple[str, ...] = SHIPPED) -> list[Path]:
    """The files under `shipped` that git tracks or would track, relative to `root`."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *shipped],
                                cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ReleaseError(f"{root}: git could not list the files to ship ({e}); run this in a git checkout") from e
    names = sorted({Path(n.decode()) for n in listed.split(b"\0") if n})
    return [n for n in names if (root / n).is_file()]  # a tracked file deleted in the working tree is not shipped


def leaks(root: Path, files: list[Path]) -> list[str]:
    """Why each file must not reach learners: under solutions/, or holding a solution marker."""
    found = []
    for name in files:
        if "solutions" in name.parts:
            found.append(f"{name}: lies under solutions/")
        elif any(m in (root / name).read_bytes() for m in MARKERS):
            found.append(f"{name}: contains a solution marker ('### BEGIN/END SOLUTION')")
    return found


def make_release(out: Path, name: str = "ftlab-course", root: Path = ROOT,
                 shipped: tuple[str, ...] = SHIPPED) -> tuple[Path, Path]:
    """Write OUT/NAME/ and OUT/NAME.zip; ReleaseError (nothing written) if a solution would leak."""
    files = shipped_files(root, shipped)
    problems = leaks(root, files)
    if problems:
        raise ReleaseError("not released, a solution would leak:\n  " + "\n  ".join(problems))
    folder = out / name
    if folder.exists():
        if not (folder / STAMP).exists():
            raise ReleaseError(f"{folder} exists and was not written by make_release; choose another --out or --name")
        shutil.rmtree(folder)
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, folder / rel)
    (folder / STAMP).write_text("written by tools/make_release.py; replaced by the next release\n", encoding="utf-8")
    archive = Path(shutil.make_archive(str(out / name), "zip", root_dir=out, base_dir=name))
    return folder, archive


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the learners' copy of the course (no solutions).")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "release")
    ap.add_argument("--name", default="ftlab-course")
    args = ap.parse_args(argv)
    try:
        folder, archive = make_release(args.out, args.name)
    except (ReleaseError, OSError) as e:
        print(f"make_release: {e}", file=sys.stderr)
        return 1
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder} ({count} files, no solutions) and {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
