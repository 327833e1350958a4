"""ftlab.compare.dist: the course's loop under `accelerate launch` (DDP, FSDP) equals the single-process run."""

import pytest
import torch

from ftlab import models
from ftlab.compare import dist


def _spec(modes, steps=3, n=8):
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, 500, (int(torch.randint(4, 30, (1,), generator=g)),), generator=g).tolist()}
            for _ in range(n)]  # very different lengths: the ranks' target counts differ
    return {"model": "tiny-llama", "rows": rows, "pad_id": 0, "modes": modes,
            "config": dict(steps=steps, batch_size=4, micro_batch_size=1, lr=1e-3, warmup_steps=0, shuffle=False,
                           progress=False)}


def _distance(weights, reference, initial):
    """||theta - theta_ref|| / ||theta_ref - theta_0||: the gap as a share of how far training moved the weights."""
    gap = sum(((weights[k] - reference[k]).double() ** 2).sum() for k in weights) ** 0.5
    moved = sum(((reference[k] - initial[k]).double() ** 2).sum() for k in weights) ** 0.5
    return (gap / moved).item()


def test_spec_is_checked_before_anything_launches(tmp_path):
    with pytest.raises(ValueError, match="modes"):
        dist.launch(_spec(["zero3"]), tmp_path)
    with pytest.raises(ValueError, match="multiples of the 2 processes"):
        dist.launch({**_spec(["ddp"]), "rows": _spec(["ddp"])["rows"][:7]}, tmp_path)
    with pytest.raises(ValueError, match="micro_batch_size=3"):
        dist.launch({**_spec(["ddp"]), "config": {**_spec(["ddp"])["config"], "micro_batch_size": 3}}, tmp_path)
    assert not (tmp_path / "spec.json").exists()


def test_ddp_and_fsdp_equal_the_single_process_run(tmp_path):
    spec = _spec(["ddp", "ddp-naive", "fsdp"])
    reference, _ = dist.single_process(spec)
    initial = models.load("tiny-llama", device="cpu")[0].state_dict()
    result = dist.launch(spec, tmp_path)
    want = reference.state_dict()
    assert result["backend"] in ("gloo", "nccl")
    # float32 sums in another order, through 3 Adam steps: measured ~1e-6 of the distance trained
    assert _distance(result["ddp"]["weights"], want, initial) < 1e-4
    assert _distance(result["fsdp"]["weights"], want, initial) < 1e-4
    assert _distance(result["ddp-naive"]["weights"], want, initial) > 1e-2  # each rank's own count: the bug
    ddp, fsdp = (result[m]["ranks"] for m in ("ddp", "fsdp"))
    assert [r["wrapper"] for r in ddp] == ["DistributedDataParallel"] * 2 and fsdp[0]["wrapper"].startswith("FSDP")
    for a, b in zip(ddp, fsdp):  # FSDP holds half of the weights and of AdamW's moments on each of 2 ranks
        assert b["held_bytes"]["weights"] * 2 == pytest.approx(a["held_bytes"]["weights"], rel=0.01)
        assert b["held_bytes"]["optimizer"] * 2 == pytest.approx(a["held_bytes"]["optimizer"], rel=0.01)
