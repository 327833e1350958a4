import json
import time

import torch

from ftlab import compare


def test_time_pair_alternates_and_reports_the_ratio():
    calls = []
    slow = lambda: (calls.append("ours"), time.sleep(0.02))  # noqa: E731
    fast = lambda: (calls.append("theirs"), time.sleep(0.01))  # noqa: E731
    t = compare.time_pair(slow, fast, repeats=4, warmup=1, dev="cpu")
    assert len(t["ours_s"]) == len(t["theirs_s"]) == 4
    # warm-up pair, then alternating who goes first: ours/theirs, theirs/ours, ...
    assert calls == ["ours", "theirs", "ours", "theirs", "theirs", "ours", "ours", "theirs", "theirs", "ours"]
    assert 1.3 < t["ratio"] < 3.5, t


def test_memory_pair_ratio():
    m = compare.memory_pair(lambda: torch.ones(2**20), lambda: torch.ones(2**19), dev="cpu")
    assert m["ours_bytes"] >= 4 * 2**20 and m["theirs_bytes"] >= 2 * 2**20
    assert 1.5 < m["ratio"] < 2.5


def test_write_result_keeps_the_environment(tmp_path):
    path = compare.write_result("demo", {"time": {"ratio": 1.0}}, folder=tmp_path)
    saved = json.loads(path.read_text())
    assert saved["name"] == "demo" and saved["time"]["ratio"] == 1.0
    assert saved["environment"]["torch"] == torch.__version__
