"""Wall time of whole notebooks, one at a time, the numbers behind the README's and INSTRUCTORS.md's tables.

    python benchmarks/time_notebooks.py --profile cpu --threads 1 chapters/0[1-4]_*.ipynb
    python benchmarks/time_notebooks.py --profile ci solutions/*.ipynb

Each notebook runs top to bottom in a fresh kernel (nbclient), with FTLAB_PROFILE and OMP_NUM_THREADS
set for that kernel only, the way a learner's "Run All" runs it. Nothing is written back to the notebook.
The result for every notebook (seconds, the three slowest cells, the 1-minute load average before and
after, and an error if a cell failed) is merged into benchmarks/results/notebook_times.json under
"<profile>/<threads> thread(s)", so timing the chapters and the labs in separate runs keeps both, and
two runs at once (one per core, at 1 thread each) can share the file.

Timings are honest only on a quiet machine: with other processes busy the load columns say so, and the
2-core course machine runs torch's small ops far slower at 2 threads under load than at 1.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "notebook_times.json"


def _cell_seconds(cell) -> float | None:
    """Seconds between a cell's execute_input and its reply, from the timing nbclient records."""
    t = cell.get("metadata", {}).get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not (start and end):
        return None
    start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    return (end - start).total_seconds()


def time_notebook(path: Path, profile: str, threads: int, cell_timeout: int = 900) -> dict:
    """Run one notebook in a fresh kernel under `profile` with `threads` threads; its timing record."""
    return execute(path, profile, threads, cell_timeout)[1]


def execute(path: Path, profile: str, threads: int, cell_timeout: int = 900) -> tuple[nbformat.NotebookNode, dict]:
    """Run one notebook in a fresh kernel under `profile` with `threads` threads: the executed notebook (with its
    outputs; tools/run_chapters.py keeps them) and the timing record."""
    nb = nbformat.read(path, as_version=4)
    # the inline backend, as in JupyterLab: plots are rendered (and kept by tools/run_chapters.py)
    env = {"FTLAB_PROFILE": profile, "OMP_NUM_THREADS": str(threads),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    load_before = os.getloadavg()[0]
    error = None
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", record_timing=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError:
        failed = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        i, out = failed[0] if failed else (None, {})
        error = f"cell {i}: {out.get('ename', 'error')}: {out.get('evalue', '')}"[:300]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    cells = [(i, s) for i, c in enumerate(nb.cells) if c.cell_type == "code" and (s := _cell_seconds(c)) is not None]
    slowest = sorted(cells, key=lambda x: -x[1])[:3]
    return nb, {"seconds": round(seconds, 1), "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
                "slowest_cells": [{"cell": i, "seconds": round(s, 1)} for i, s in slowest], "error": error}


def _merge(out: Path, key: str, name: str, record: dict) -> None:
    """Add one notebook's record to `out` right away (a run stopped half-way keeps what it measured),
    re-reading the file under a lock so two runs, one per core, can share it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(out.read_text()) if out.exists() else {}
        results.setdefault(key, {})[name] = record
        out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def display_name(path: Path) -> str:
    """A notebook's path as the results and messages name it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def record_result(out: Path, key: str, path: Path, record: dict) -> str | None:
    """Stamp a timing record with when and where it was measured, merge it into `out` and print one line;
    returns the record's error (None when every cell ran)."""
    record["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    name = display_name(path)
    _merge(out, key, name, record)
    status = f"FAILED: {record['error']}" if record["error"] else "ok"
    load = f"load {record['load_before']:.1f} -> {record['load_after']:.1f}"
    print(f"{name:55} {record['seconds']:7.1f} s   {load}   {status}", flush=True)
    return record["error"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path, help="notebooks to run, one at a time, in this order")
    ap.add_argument("--profile", default="cpu", choices=["ci", "cpu", "gpu"],
                    help="FTLAB_PROFILE for the kernels (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the kernels (default 1)")
    ap.add_argument("--out", type=Path, default=RESULT,
                    help=f"JSON file to merge results into (default {RESULT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        ap.error(f"no such notebook: {', '.join(missing)}")
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    key = f"{args.profile}/{args.threads} thread(s)"
    failed = 0
    for path in args.notebooks:
        record = time_notebook(path.resolve(), args.profile, args.threads)
        failed += record_result(args.out, key, path, record) is not None
    print(f"wrote {args.out} [{key}]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
