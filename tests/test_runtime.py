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


def _with_dropout() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5))


def test_eval_mode_turns_dropout_off_inside_and_restores_the_mode():
    model, x = _with_dropout(), torch.ones(4, 8)
    with runtime.eval_mode(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
        assert torch.equal(model(x), model(x))  # no dropout: the same input gives the same output
    assert all(m.training for m in model.modules())
    model.eval()
    with runtime.eval_mode(model):
        pass
    assert not model.training  # a model that was in eval mode stays there


def test_eval_mode_restores_training_mode_after_an_exception():
    model = _with_dropout()
    with pytest.raises(KeyError, match="inside the block"):
        with runtime.eval_mode(model):
            assert not model[1].training
            raise KeyError("inside the block")
    assert all(m.training for m in model.modules())


class _Stop(Exception):
    pass


class _FailsWhenUsed(torch.nn.Linear):
    """A model whose forward, generate and tokenizer all stop the caller, noting whether it was in eval mode then."""

    def __init__(self):
        super().__init__(2, 2)
        self.seen_training: list[bool] = []
        self.tokenizer = _FailingTokenizer(self)

    def fail(self, *args, **kwargs):
        self.seen_training.append(self.training)
        raise _Stop("stopped inside")

    forward = generate = fail


class _FailingTokenizer:
    """Formats chat turns (so the model itself is reached), but fails when called on plain texts."""

    pad_token_id, eos_token_id, chat_template = 0, 1, "a template"

    def __init__(self, model: _FailsWhenUsed):
        self.fail = model.fail

    def __call__(self, *args, **kwargs):
        self.fail()

    def apply_chat_template(self, messages, **kwargs):
        return {"input_ids": [2] * (3 * len(messages))}


def _inference_calls():
    from ftlab import evaluation, sft, transfer
    from ftlab.rlhf import ppo, reward

    pair = {"prompt": "p", "chosen": "a", "rejected": "b"}
    return {
        "transfer.predict": lambda m: transfer.predict(m, [{"text": "x", "label": 0}], m.tokenizer),
        "evaluation.positive_probability": lambda m: evaluation.positive_probability(m, m.tokenizer, ["x"]),
        "sft.generate": lambda m: sft.generate(m, m.tokenizer, ["x"]),
        "reward.RewardModel.score": lambda m: reward.RewardModel.score(m, ["p"], ["r"]),
        "reward.score_pairs": lambda m: reward.score_pairs(m, [pair]),
        "ppo.rollout": lambda m: ppo.rollout(m, m, m, torch.ones(1, 3, dtype=torch.long), pad_id=0, stop_id=1,
                                             cfg=ppo.PPOConfig()),
    }


@pytest.mark.parametrize("name", list(_inference_calls()))
def test_inference_helpers_run_in_eval_mode_and_restore_it_after_an_error(name):
    model = _FailsWhenUsed()
    with pytest.raises(_Stop):
        _inference_calls()[name](model)
    assert model.seen_training == [False]  # the failure happened inside, in eval mode
    assert model.training  # and the training mode came back although the call failed


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
