"""The course's own loop (`ftlab.train.train`) on several processes: DDP through accelerate, and FSDP.

    result = launch(spec, work_dir)      # `accelerate launch`, 2 processes: gloo on CPU, NCCL on 2+ GPUs
    result["ddp"]["weights"], result["fsdp"]["ranks"][1]["held_bytes"], result["seconds"]

`spec` holds what every process needs, as JSON: the model name, the rows as token ids, the pad id, the
TrainConfig fields of the single-process run, and the modes to run one after the other in the same job:

    "ddp"        accelerate's `prepare` wraps the model in DistributedDataParallel (gradients all-reduced)
    "ddp-naive"  the same, but each rank divides by its own target count: the token-weighting bug across ranks
    "fsdp"       torch's FSDP2 `fully_shard` (what accelerate's fsdp_version=2 calls): one unit per decoder
                 layer plus the root; parameters, gradients and AdamW state are sharded across the ranks

Each rank trains on rows[rank::W] with a batch of B / W, so one optimizer step of the job sees the same B rows
as one step of the single-process run (shuffle=False; len(rows) a multiple of W). accelerate 1.15 turns FSDP
on only for accelerator devices (state.py: a CPU job stays MULTI_CPU and is wrapped in DDP even with
`--use_fsdp`), so on CPU, and on GPUs alike, the "fsdp" mode calls `fully_shard` itself.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from ftlab import models, runtime
from ftlab.data import pad_batch
from ftlab.train import TrainConfig, train

MODES = ("ddp", "ddp-naive", "fsdp")


def global_token_count(n_local: int) -> float:
    """N_global / W for `train(..., token_count=...)`: the ranks' target counts summed with one all-reduce,
    divided by the world size because DDP and FSDP average the ranks' gradients (dividing by N / W, then
    averaging W ranks, gives sum_r S_r / N: the gradient of the whole batch's mean token loss)."""
    import torch.distributed as dist

    n = torch.tensor(float(n_local), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(n)
    return n.item() / dist.get_world_size()


def _comm_device() -> torch.device:
    """Where collectives take their tensors: the current GPU under NCCL, the CPU under gloo."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_spec(spec: dict, world: int = 2) -> dict:
    """Refuse a spec that the processes could not split into equal shares of every batch."""
    missing = {"model", "rows", "pad_id", "config", "modes"} - set(spec)
    if missing:
        raise ValueError(f"spec lacks {sorted(missing)}")
    unknown = set(spec["modes"]) - set(MODES)
    if unknown or not spec["modes"]:
        raise ValueError(f"spec['modes'] = {spec['modes']!r}: choose from {MODES}")
    cfg = TrainConfig(**spec["config"])
    if cfg.batch_size % world or len(spec["rows"]) % world or cfg.shuffle:
        raise ValueError(f"spec['config'] batch_size={cfg.batch_size} and len(spec['rows'])={len(spec['rows'])} must "
                         f"be multiples of the {world} processes, with shuffle=False, so that every rank's share of "
                         "a step is a slice of the single-process batch")
    if cfg.micro_batch_size and (cfg.batch_size // world) % cfg.micro_batch_size:
        raise ValueError(f"spec['config'] micro_batch_size={cfg.micro_batch_size} must divide each rank's "
                         f"batch of {cfg.batch_size // world}")
    return spec


def single_process(spec: dict) -> tuple[torch.nn.Module, dict]:
    """The reference: `train` in this process on all the rows with the whole batch. Returns (model, history)."""
    model = models.load(spec["model"], device="cpu")[0]
    history = train(model, spec["rows"], TrainConfig(**spec["config"]), collate=_collate(spec))
    return model, history


def _collate(spec: dict):
    pad = spec["pad_id"]
    return lambda rows: pad_batch(rows, pad)


def _tensor_bytes(tensors) -> int:
    """Bytes this rank holds for these tensors: a sharded (DTensor) one counts only its local shard."""
    local = (t.to_local() if hasattr(t, "to_local") else t for t in tensors)
    return sum(t.numel() * t.element_size() for t in local)


def _full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter in full on every rank (an FSDP shard is all-gathered: all ranks must call this)."""
    inner = getattr(model, "module", model)  # DDP keeps the model in .module
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu().clone()
            for k, v in inner.state_dict().items()}


def _run_mode(mode: str, spec: dict, accelerator) -> tuple[dict, dict]:
    """One training run in this process. Returns (this rank's numbers, the full final weights)."""
    from torch.distributed.fsdp import fully_shard

    rank, world = accelerator.process_index, accelerator.num_processes
    cfg = TrainConfig(**{**spec["config"], "batch_size": spec["config"]["batch_size"] // world, "progress": False})
    model = models.load(spec["model"], device=accelerator.device)[0]
    if mode == "fsdp":
        for layer in model.model.layers:  # one unit per decoder layer: gathered just before it runs, freed after
            fully_shard(layer)
        fully_shard(model)
    else:
        model = accelerator.prepare(model)  # DistributedDataParallel on gloo or NCCL
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    shard = spec["rows"][rank::world]
    count = None if mode == "ddp-naive" else global_token_count
    with runtime.PeakMemory(accelerator.device) as peak, runtime.Timer(accelerator.device) as timer:
        history = train(model, shard, cfg, collate=_collate(spec), optimizer=optimizer, token_count=count)
    mine = {"loss": history["loss"], "seconds": timer.seconds, "peak_bytes": peak.peak_bytes,
            "held_bytes": {"weights": _tensor_bytes(model.parameters()),
                           "optimizer": _tensor_bytes(t for s in optimizer.state.values()
                                                      for t in s.values() if t.dim() > 0)},
            "wrapper": type(model).__name__}
    weights = _full_weights(model)
    del model, optimizer  # nothing that holds the process group may outlive the run (see `worker`)
    gc.collect()
    return mine, weights


def worker(spec_path: str, out_dir: str) -> None:
    """One process of the job (`python -m ftlab.compare.dist SPEC OUT` under `accelerate launch`).

    Rank r writes rank-r.json; rank 0 also writes MODE.safetensors with the full final weights.
    Teardown order matters: a DDP or FSDP module keeps a reference to the process group, so a model still
    alive at `destroy_process_group` leaves gloo's threads and sockets running into interpreter shutdown,
    where a peer that exits first, or a thread that needs the GIL, can abort the process (SIGABRT). So every
    run frees its model first, all ranks meet at a barrier, and only then is the group destroyed.
    """
    from accelerate import Accelerator
    from safetensors.torch import save_file

    spec = json.loads(Path(spec_path).read_text())
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    out = Path(out_dir)
    try:
        mine = {"backend": accelerator.state.backend, "world": accelerator.num_processes}
        for mode in spec["modes"]:
            mine[mode], weights = _run_mode(mode, spec, accelerator)
            if accelerator.is_main_process:
                save_file(weights, str(out / f"{mode}.safetensors"))
            del weights
        (out / f"rank-{accelerator.process_index}.json").write_text(json.dumps(mine))
        accelerator.wait_for_everyone()  # nobody tears down while another rank still writes or communicates
    finally:
        accelerator.end_training()  # destroy_process_group, with nothing left that holds the group


def launch(spec: dict, work_dir: str | Path, processes: int = 2, timeout: float = 600) -> dict:
    """Run the spec's modes under `accelerate launch` with `processes` processes; collect what they wrote.

    Returns {"seconds": wall time of the job, "backend": "gloo" | "nccl", MODE: {"weights": full final weights,
    "ranks": [rank 0's numbers, rank 1's, ...]}}. NCCL needs one GPU per process; with fewer GPUs the job
    runs on CPU with gloo. Raises RuntimeError with the processes' own error lines if the job fails.
    """
    from safetensors.torch import load_file

    check_spec(spec, processes)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec))
    for old in list(work.glob("rank-*.json")) + list(work.glob("*.safetensors")):
        old.unlink()
    on_gpus = torch.cuda.is_available() and torch.cuda.device_count() >= processes
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # processes share the cores
    if not on_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the workers see no GPU, so accelerate picks gloo on CPU
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", "-m", "ftlab.compare.dist", str(work / "spec.json"), str(work)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines()
                  if any(w in line for w in ("Error", "error", "terminate", "Abort", "abort", "Signal"))]
        raise RuntimeError(f"accelerate launch exited with {done.returncode}:\n" + "\n".join(errors[:30])
                           + f"\n...\n{done.stderr[-1500:]}")
    ranks = [json.loads((work / f"rank-{r}.json").read_text()) for r in range(processes)]
    result = {"seconds": seconds, "backend": ranks[0]["backend"], "command": " ".join(command[2:])}
    for mode in spec["modes"]:
        result[mode] = {"weights": load_file(str(work / f"{mode}.safetensors")), "ranks": [r[mode] for r in ranks]}
    return result


if __name__ == "__main__":
    worker(*sys.argv[1:3])
