"""Run every benchmark script (benchmarks/bench_*.py) and print its ratios (ours / library).

    python benchmarks/run.py                 # all of them
    python benchmarks/run.py train_loop      # only bench_train_loop.py

Each script measures both sides alternating in one process (ftlab.compare) and writes
benchmarks/results/<name>.json; this runner just runs them in turn and reports failures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in argv]
        if not scripts:
            print(f"no benchmark named {', '.join(argv)}; have: "
                  f"{', '.join(s.stem.removeprefix('bench_') for s in sorted(HERE.glob('bench_*.py')))}")
            return 2
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"== {script.name}: exit {rc} in {time.perf_counter() - start:.1f} s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
