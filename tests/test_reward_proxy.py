"""ftlab.rlhf.reward's laptop recipe: cached last-token features, a head fitted on them, saved for chapter 08."""

import json

import pytest
import torch
import torch.nn.functional as F

from ftlab import data
from ftlab.rlhf import reward
from ftlab.rlhf.reward import RewardModel, fit_head, load_head, pair_features, pairwise_accuracy, save_head


@pytest.fixture(scope="module")
def rm():
    return RewardModel.from_pretrained("tiny-llama", seed=0, device="cpu")


@pytest.fixture(scope="module")
def rows():
    return data.load("preferences", "train", n=10)


def test_features_are_what_the_head_reads(rm, rows):
    f_c, f_r = pair_features(rm, rows, batch_size=3)
    assert f_c.shape == f_r.shape == (len(rows), rm.config.hidden_size)
    prompts = [r["prompt"] for r in rows]
    torch.testing.assert_close(rm.head(f_c).squeeze(-1), rm.score(prompts, [r["chosen"] for r in rows]),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm.head(f_r).squeeze(-1), rm.score(prompts, [r["rejected"] for r in rows]),
                               rtol=1e-5, atol=1e-5)


def synthetic_pairs(n=200, hidden=12, seed=0):
    # chosen = rejected + a fixed direction + noise, features on very different scales
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 2, hidden)
    rejected = torch.randn(n, hidden, generator=g) * scale
    direction = torch.randn(hidden, generator=g) * scale
    chosen = rejected + 0.5 * direction + 0.5 * torch.randn(n, hidden, generator=g) * scale
    return chosen, rejected


def test_fit_head_reaches_the_penalised_optimum():
    chosen, rejected = synthetic_pairs()
    head = fit_head(chosen, rejected, l2=1e-2)
    assert head.bias is None and head.weight.shape == (1, chosen.shape[1])
    # at the minimum the objective's gradient vanishes: check it in the standardised coordinates v = w * s
    scale = torch.cat([chosen, rejected]).double().std(0, unbiased=False)
    v = (head.weight[0].detach().double() * scale).requires_grad_()
    diff = (chosen - rejected).double() / scale
    loss = -F.logsigmoid(diff @ v).mean() + 0.5 * 1e-2 * v.dot(v)
    (grad,) = torch.autograd.grad(loss, v)
    assert grad.abs().max().item() < 1e-5
    assert pairwise_accuracy(head(chosen).squeeze(-1), head(rejected).squeeze(-1)) > 0.8


def test_fit_head_has_no_seed_and_ignores_pair_order():
    chosen, rejected = synthetic_pairs()
    perm = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(3))
    a, b = fit_head(chosen, rejected), fit_head(chosen[perm], rejected[perm])
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-6)


def test_fit_head_bad_input_is_named():
    with pytest.raises(ValueError, match="chosen"):
        fit_head(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="l2"):
        fit_head(torch.ones(3, 4), torch.zeros(3, 4), l2=0)
    with pytest.raises(ValueError, match="NaN"):
        fit_head(torch.full((3, 4), float("nan")), torch.zeros(3, 4))


def test_head_round_trip_and_errors_name_the_file(tmp_path):
    head = fit_head(*synthetic_pairs())
    save_head(head, tmp_path / "h", model="tiny-llama", n_pairs=200)
    loaded, info = load_head(tmp_path / "h")
    assert torch.equal(loaded.weight, head.weight) and info["model"] == "tiny-llama" and info["n_pairs"] == 200
    with pytest.raises(FileNotFoundError, match="head.json"):
        load_head(tmp_path / "nothing")
    (tmp_path / "h" / "head.json").write_text("{not json")
    with pytest.raises(ValueError, match="head.json"):
        load_head(tmp_path / "h")
    (tmp_path / "h" / "head.json").write_text(json.dumps({"format": reward.HEAD_FORMAT, "hidden_size": 5}))
    with pytest.raises(ValueError, match="hidden_size 5"):
        load_head(tmp_path / "h")


def test_proxy_rows_are_a_fixed_shuffle():
    first = reward.proxy_rows("preferences", 20)
    assert reward.proxy_rows("preferences", 10) == first[:10]
    assert len(reward.proxy_rows("preferences")) == len(data.load("preferences", "train"))
    assert [r["id"] for r in first] != [r["id"] for r in data.load("preferences", "train", n=20)]


def test_proxy_is_fitted_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path))
    fitted = reward.proxy_reward_model("tiny-llama", n_pairs=12)
    info = json.loads((reward.proxy_dir("tiny-llama") / "head.json").read_text())
    assert info["n_pairs"] == 12 and info["model"] == "tiny-llama" and info["dataset"] == "preferences"
    assert not any(p.requires_grad for p in fitted.parameters())

    def no_refit(*args, **kwargs):
        raise AssertionError("a saved proxy must be loaded, not fitted again")

    monkeypatch.setattr(reward, "fit_proxy", no_refit)
    loaded = reward.proxy_reward_model("tiny-llama")
    assert torch.equal(loaded.head.weight, fitted.head.weight)
    rows = data.load("preferences", "test", n=4)
    prompts, replies = [r["prompt"] for r in rows], [r["chosen"] for r in rows]
    assert torch.equal(loaded.score(prompts, replies), fitted.score(prompts, replies))


def test_a_saved_head_of_another_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path))
    save_head(fit_head(*synthetic_pairs(hidden=64)), reward.proxy_dir("tiny-llama"), model="smollm2-135m",
              dataset="preferences")
    with pytest.raises(ValueError, match="smollm2-135m"):
        reward.proxy_reward_model("tiny-llama")
