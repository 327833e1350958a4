import json
import time

import torch

from ftlab import compare


def test_time_pair_alternates_and_reports_the_ratio():
    calls = []
    slow = lambda: (calls.append("ours"), time.sleep(0.05))  # noqa: E731
    fast = lambda: (calls.append("theirs"), time.sleep(0.01))  # noqa: E731
    t = compare.time_pair(slow, fast, repeats=4, warmup=1, dev="cpu")
    assert len(t["ours_s"]) == len(t["theirs_s"]) == 4
    # warm-up pair, then alternating who goes first: ours/theirs, theirs/ours, ...
    assert calls == ["ours", "theirs", "ours", "theirs", "theirs", "ours", "ours", "theirs", "theirs", "ours"]
    # Only the direction: a busy machine stretches either sleep, so a band on the ratio flakes; the exact
    # ratio arithmetic is checked with a fake clock below.
    assert t["ratio"] > 1, t


def test_time_pair_ratio_agrees_with_the_medians_it_reports(monkeypatch):
    """Chapter 03 printed the median of the pair ratios beside the medians of the times; with noisy timings
    the two disagreed even on which side was faster (here: 0.5x against medians of 5 s and 3 s)."""
    clock = [0.0]
    times = {"ours": iter([1.0, 5.0, 6.0]), "theirs": iter([2.0, 10.0, 3.0])}

    class FakeTimer:
        def __init__(self, dev=None):
            pass

        def __enter__(self):
            self.start = clock[0]
            return self

        def __exit__(self, *exc):
            self.seconds = clock[0] - self.start

    def tick(side):
        return lambda: clock.__setitem__(0, clock[0] + next(times[side]))

    monkeypatch.setattr(compare.bench.runtime, "Timer", FakeTimer)
    t = compare.time_pair(tick("ours"), tick("theirs"), repeats=3, warmup=0)
    assert (t["ours_median_s"], t["theirs_median_s"]) == (5.0, 3.0)
    assert t["ratio"] == 5.0 / 3.0 and t["pair_ratios"] == [0.5, 0.5, 2.0]


def test_memory_pair_ratio():
    m = compare.memory_pair(lambda: torch.ones(2**20), lambda: torch.ones(2**19), dev="cpu")
    assert m["ours_bytes"] >= 4 * 2**20 and m["theirs_bytes"] >= 2 * 2**20
    assert 1.5 < m["ratio"] < 2.5


def test_write_result_keeps_the_environment(tmp_path):
    path = compare.write_result("demo", {"time": {"ratio": 1.0}}, folder=tmp_path)
    saved = json.loads(path.read_text())
    assert saved["name"] == "demo" and saved["time"]["ratio"] == 1.0
    assert saved["environment"]["torch"] == torch.__version__
