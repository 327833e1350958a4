"""The `ftlab` command: doctor, bench, and the quiz engine's quiz | daily | review | report | export | import |
progress."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    """name -> pinned version, from the installed ftlab's own requirements (pyproject.toml)."""
    pins = {}
    for req in importlib.metadata.requires("ftlab") or []:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)\s*(;.*)?$", req)
        if m and "extra" not in (m[3] or ""):
            pins[m[1]] = m[2]
    return pins


def doctor_checks() -> list[tuple[bool, str]]:
    """(ok, line) for everything the course needs; chapter 00 prints these too."""
    import torch

    from ftlab import data, models, runtime

    checks = [(sys.version_info >= (3, 10), f"python {platform.python_version()}")]
    for name, pinned in _pins().items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append((False, f"{name} missing (pinned {pinned}): run `make setup`"))
            continue
        have_base = have.split("+")[0]  # torch's CPU wheel reports 2.13.0+cpu
        checks.append((have_base == pinned, f"{name} {have}" + ("" if have_base == pinned else f" (pinned {pinned})")))
    dev = runtime.device()
    gpu = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f", {torch.get_num_threads()} threads"
    checks.append((True, f"device {dev}{gpu}"))
    try:
        checks.append((True, f"profile {runtime.profile().name}"))
    except ValueError as e:
        checks.append((False, str(e)))
    for name, where in models.availability().items():
        checks.append((not where.startswith("MISSING"), f"model {name}: {where}"))
    try:
        home = runtime.home()
        with tempfile.NamedTemporaryFile(dir=home):
            pass
        checks.append((True, f"cache writable: {home}"))
    except OSError as e:
        checks.append((False, f"cache not writable ({e}); set FTLAB_HOME to a writable folder"))
    for name in data.SCHEMAS:
        try:
            checks.append((True, f"data {name}: {len(data.load(name, 'train'))} train rows"))
        except (data.DataError, OSError) as e:
            checks.append((False, f"data {name}: {e}"))
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    checks.append((True, "hub access: " + ("off (HF_HUB_OFFLINE=1)" if offline else "only when you load a hub id")))
    return checks


def doctor(args: argparse.Namespace) -> int:
    checks = doctor_checks()
    for ok, line in checks:
        print(f"[{'OK' if ok else 'FAIL'}] {line}")
    failed = sum(not ok for ok, _ in checks)
    print(f"{len(checks) - failed} ok, {failed} failed")
    return 1 if failed else 0


def bench(args: argparse.Namespace) -> int:
    return subprocess.call([sys.executable, str(ROOT / "benchmarks" / "run.py"), *args.names])


def build_parser() -> argparse.ArgumentParser:
    from ftlab.quiz import cli as quiz_cli

    parser = argparse.ArgumentParser(prog="ftlab", description="ftlab: fine-tuning from scratch, with quizzes.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check versions, device, profile, packaged models, cache").set_defaults(func=doctor)
    p = sub.add_parser("bench", help="run benchmarks/ (ratios ours / library)")
    p.add_argument("names", nargs="*", help="benchmark names (default: all)")
    p.set_defaults(func=bench)
    quiz_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: a quiet stop (the quiz commands also say how many answers were saved)
        print("\nStopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
