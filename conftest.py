"""Suite-wide pytest hooks: a per-notebook duration table at the end of `make test`."""

from __future__ import annotations

from collections import defaultdict

_notebook_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook durations (nbval)")
    for path, seconds in sorted(_notebook_seconds.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{seconds:8.1f} s  {path}")
    tr.write_line(f"{sum(_notebook_seconds.values()):8.1f} s  total over {len(_notebook_seconds)} notebooks")
