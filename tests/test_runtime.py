import pytest
import torch

from ftlab import runtime


def test_profile_from_env(monkeypatch):
    monkeypatch.setenv("FTLAB_PROFILE", "ci")
    assert runtime.profile().name == "ci" and runtime.profile().causal_lm == "tiny-llama"
    monkeypatch.setenv("FTLAB_PROFILE", "CPU")
    assert runtime.profile().causal_lm == "smollm2-135m"


def test_default_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("FTLAB_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.profile_name() == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.profile_name() == "cpu"


def test_bad_profile_names_the_variable(monkeypatch):
    monkeypatch.setenv("FTLAB_PROFILE", "laptop")
    with pytest.raises(ValueError, match="FTLAB_PROFILE='laptop'"):
        runtime.profile()
    with pytest.raises(ValueError, match="unknown profile"):
        runtime.profile("huge")


def test_profile_overrides_and_accumulation():
    p = runtime.profile("ci", batch_size=12, micro_batch_size=4)
    assert p.accumulation_steps == 3 and runtime.PROFILES["ci"].batch_size == 8


def test_device_override(monkeypatch):
    # "meta" is never the default, so this fails if the variable is ignored
    monkeypatch.setenv("FTLAB_DEVICE", "meta")
    assert runtime.device() == torch.device("meta")


def test_home_is_created(monkeypatch, tmp_path):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "h"))
    assert runtime.home() == tmp_path / "h" and (tmp_path / "h").is_dir()


def test_seed_everything_repeats_streams():
    runtime.seed_everything(3)
    a = torch.rand(4)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_timer_measures_sleep():
    import time

    with runtime.Timer("cpu") as t:
        time.sleep(0.05)
    assert 0.04 < t.seconds < 1.0


def test_peak_memory_sees_a_freed_transient():
    # 16 MiB allocated and freed inside the block, then 4 MiB kept: the peak is the 16 MiB moment.
    with runtime.PeakMemory("cpu") as m:
        big = torch.ones(4 * 2**20)  # 16 MiB of float32
        del big
        kept = torch.ones(2**20)  # 4 MiB
    assert 16 * 2**20 <= m.peak_bytes < 24 * 2**20, m.peak_bytes
    assert kept.numel() == 2**20


def test_peak_memory_is_relative_to_the_block():
    before = torch.ones(8 * 2**20)  # 32 MiB live before the block is not counted
    with runtime.PeakMemory("cpu") as m:
        small = torch.ones(2**18)  # 1 MiB
    assert 2**20 <= m.peak_bytes < 4 * 2**20, m.peak_bytes
    del before, small
