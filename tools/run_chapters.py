"""Run chapters in place under the `cpu` profile and commit them with their outputs, stamped with what made them.

    python tools/run_chapters.py chapters/03_lora.ipynb      # one chapter (its time goes into the README tables too)
    make outputs                                              # every chapter, one at a time (about 45 min)
    python tools/run_chapters.py --check                      # exit 1 naming each chapter whose code changed since

Each chapter runs top to bottom in a fresh kernel (benchmarks/time_notebooks.py's `execute`, one thread), then
is written back with lean outputs: progress bars and widget views dropped (nbclient records only their first
frame), the quiz cell's widget replaced by a one-line note. The notebook's metadata gets a stamp under
"ftlab_outputs": profile, machine, threads, package versions, date, wall time, and the SHA-256 of its code
cells' sources. `--check` (and tests/test_notebooks.py) recompute that hash: a chapter whose code changed
since its outputs were made is stale until this tool runs it again. A chapter whose run fails is not written.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import time_notebooks  # noqa: E402

STAMP = "ftlab_outputs"
PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate")
QUIZ_NOTE = "(The chapter's adaptive quiz appears here when you run this cell in JupyterLab.)\n"
WIDGET = "application/vnd.jupyter.widget-view+json"


def code_hash(nb: dict) -> str:
    """SHA-256 of the code cells' sources, in order: what the outputs were computed from."""
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in nb["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256("\n\x00\n".join(sources).encode()).hexdigest()


def _progress(output: dict) -> bool:
    # tqdm's widget (its first frame only) or its text bars on stderr
    if WIDGET in output.get("data", {}):
        return True
    text = "".join(output.get("text", "")) if output.get("output_type") == "stream" else ""
    return output.get("name") == "stderr" and ("\r" in text or "it/s]" in text or "s/it]" in text)


def lean(nb) -> None:
    """Drop progress bars and widget views from every code cell's outputs; the quiz cell gets a note instead."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "Quiz(chapter=" in cell.source:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=QUIZ_NOTE)]
            continue
        cell.outputs = [o for o in cell.outputs if not _progress(o)]
        cell.metadata.pop("execution", None)  # nbclient's per-cell timestamps: noise in every diff


def stamp(nb, record: dict, profile: str, threads: int) -> None:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    nb.metadata[STAMP] = {
        "profile": profile, "threads": threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "gpu": None, "packages": versions, "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_seconds": record["seconds"],
        "code_sha256": code_hash(nb)}


def stale(path: Path) -> str | None:
    """Why `path`'s committed outputs do not belong to its code (None when they do)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    made = nb.get("metadata", {}).get(STAMP)
    if made is None:
        return "has no outputs stamp"
    if made.get("code_sha256") != code_hash(nb):
        return f"code cells changed since its outputs were made ({made.get('date', '?')})"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapters", nargs="*", type=Path, help="chapters to run (default: every chapter)")
    ap.add_argument("--profile", default="cpu", choices=["ci", "cpu", "gpu"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="only say which chapters' outputs are stale")
    ap.add_argument("--times", type=Path, default=time_notebooks.RESULT,
                    help=f"where the run times go (default {time_notebooks.RESULT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    paths = args.chapters or sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        ap.error(f"no such notebook: {', '.join(missing)}")
    if args.check:
        problems = [(p, why) for p in paths if (why := stale(p))]
        for p, why in problems:
            print(f"{p.name}: {why}; refresh with: python tools/run_chapters.py {time_notebooks.display_name(p)}")
        return 1 if problems else 0
    failed = 0
    for path in paths:
        nb, record = time_notebooks.execute(path.resolve(), args.profile, args.threads)
        error = time_notebooks.record_result(args.times, f"{args.profile}/{args.threads} thread(s)", path, record)
        if error:
            failed += 1
            continue  # a failed run's outputs are not the chapter's: leave the file as it was
        lean(nb)
        stamp(nb, record, args.profile, args.threads)
        nbformat.write(nb, path)
    print("now run: python tools/time_tables.py (the README's times include these runs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
