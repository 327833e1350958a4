"""One GPU check: everything the course claims about CUDA, in one run under 8 minutes.

    python benchmarks/gpu_check.py             # on a CUDA machine (make gpu-check)
    python benchmarks/gpu_check.py --dry-run   # anywhere: the same steps at toy sizes on the CPU

Steps, each recorded in benchmarks/results/gpu_check-gpu.json with the device's name:
1. the device (runtime.describe());
2. NF4 on the device: our quantize byte-exact against our CPU path and bitsandbytes' CPU quantizer,
   bytes that differ from bitsandbytes' CUDA quantizer counted (its decision tree is its own rounding
   rule), and our dequantize plus the Triton kernel bit-exact against bitsandbytes' CUDA dequantize;
3. the Triton dequantize timed against bitsandbytes' (ratio, GB/s, share of the device's bandwidth as
   measured by a plain copy); written to nf4_triton-gpu.json;
4. the LoRA, train-loop and PPO benchmarks under the `gpu` profile, their results written to
   benchmarks/results/<name>-gpu.json (the CPU results are left alone);
5. chapter 00 and chapters 02-05 up to their last parity cell, executed under the `gpu` profile.
A step that fails is recorded and the run goes on; the exit status is 1 if any step failed. A step that
would start after the 8-minute budget is recorded as skipped.

The dry run (also: FTLAB_DEVICE=cpu) exercises the same code at toy sizes so that it cannot rot
(tests/test_gpu_check.py runs it): the Triton kernel runs in its interpreter, the benchmarks run under
the `ci` profile with one repeat and write into a temporary folder, and the notebook step only selects
the cells it would run (make test already executes every chapter under `ci`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_S = 8 * 60
BENCHMARKS = ("lora", "train_loop", "ppo")
DRY_ARGS = {"lora": ["--repeats", "1", "--batch", "2"], "train_loop": ["--repeats", "1", "--steps", "1"],
            "ppo": ["--repeats", "1", "--batch", "2", "--response-length", "4"]}  # toy sizes for the dry run
CHAPTERS = ("00_setup", "02_small_hardware", "03_lora", "04_qlora_nf4", "05_adapters_prompt_prefix")
PARITY = re.compile(r"parity|torch\.equal|allclose|assert_close")


def parity_cells(notebook: Path) -> int:
    """How many leading cells to run: through the last code cell that checks parity (all of chapter 00)."""
    cells = json.loads(notebook.read_text())["cells"]
    if notebook.stem.startswith("00"):
        return len(cells)
    hits = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and PARITY.search("".join(c["source"]))]
    if not hits:
        raise ValueError(f"{notebook.name}: no parity cell (none mentions parity, torch.equal, allclose)")
    return hits[-1] + 1


def nf4_step(dry: bool, results: Path) -> dict:
    """Byte parity on the device, then the Triton kernel timed against bitsandbytes' dequantize."""
    import bitsandbytes.functional as bnbF
    import torch

    from ftlab import compare, runtime
    from ftlab.quant import nf4, triton_nf4

    dev = runtime.device()
    size = 256 if dry else 8192
    torch.manual_seed(0)
    w = (torch.randn(size, size, device=dev) * 0.02).to(torch.bfloat16)
    q = nf4.quantize_nf4(w, 64)
    q_cpu = nf4.quantize_nf4(w.cpu(), 64)
    ref_packed, ref_state = bnbF.quantize_4bit(w.cpu(), blocksize=64, quant_type="nf4")
    assert torch.equal(q.packed.cpu(), q_cpu.packed) and torch.equal(q.absmax.cpu(), q_cpu.absmax), \
        "our quantize differs between the device and the CPU"
    assert torch.equal(q_cpu.packed, ref_packed.reshape(-1)), "our quantize differs from bitsandbytes' CPU quantizer"
    dev_packed, dev_state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
    differing = int((q.packed != dev_packed.reshape(-1)).sum())
    state = bnbF.QuantState(absmax=q.absmax, shape=torch.Size([w.numel()]), dtype=w.dtype, blocksize=64,
                            code=nf4.NF4_CODE.to(dev), quant_type="nf4")
    theirs = bnbF.dequantize_4bit(q.packed.reshape(-1, 1), state).reshape(-1)
    assert torch.equal(nf4.dequantize_nf4(q).reshape(-1), theirs), "our dequantize differs from bitsandbytes'"
    assert torch.equal(triton_nf4.dequantize_nf4(q).reshape(-1), theirs), "the Triton kernel differs"
    out = {"device": runtime.describe(), "size": size, "bytes_differing_from_bnb_device_quantizer": differing,
           "of_bytes": q.packed.numel(), "absmax_equal_to_bnb_device": bool(torch.equal(q.absmax, dev_state.absmax))}

    repeats = 1 if dry else 20
    nbytes = w.numel() * w.element_size()
    copy_dst = torch.empty_like(w)
    t_copy = compare.time_pair(lambda: copy_dst.copy_(w), lambda: copy_dst.copy_(w), repeats=repeats, dev=dev)
    copy_bw = 2 * nbytes / min(t_copy["ours_s"] + t_copy["theirs_s"])  # bytes read + written per second
    t = compare.time_pair(lambda: triton_nf4.dequantize_nf4(q), lambda: bnbF.dequantize_4bit(q.packed, state),
                          repeats=repeats, dev=dev)
    moved = q.nbytes + nbytes
    out["triton_dequantize"] = {**t, "speedup": 1 / t["ratio"], "ours_GBps": nbytes / t["ours_median_s"] / 1e9,
                                "theirs_GBps": nbytes / t["theirs_median_s"] / 1e9, "copy_GBps": copy_bw / 1e9,
                                "ours_bandwidth_share": moved / t["ours_median_s"] / copy_bw,
                                "theirs_bandwidth_share": moved / t["theirs_median_s"] / copy_bw}
    compare.write_result("nf4_triton-gpu", out, folder=results)
    r = out["triton_dequantize"]
    print(f"  NF4 {size}x{size} bf16: bytes differing from bitsandbytes' device quantizer {differing:,} of "
          f"{q.packed.numel():,}; dequantize (ours, Triton) bit-exact against bitsandbytes'")
    print(f"  Triton dequantize {r['ours_GBps']:.1f} GB/s ({r['ours_bandwidth_share']:.0%} of copy bandwidth), "
          f"bitsandbytes {r['theirs_GBps']:.1f} GB/s ({r['theirs_bandwidth_share']:.0%}): "
          f"{r['speedup']:.2f}x bitsandbytes' throughput")
    return out


def benchmark_step(name: str, dry: bool, results: Path, env: dict, timeout: float) -> dict:
    """benchmarks/bench_<name>.py in a fresh process, its result written as <name>-gpu.json in `results`."""
    script = ROOT / "benchmarks" / f"bench_{name}.py"
    argv = [str(script)] + (DRY_ARGS[name] if dry else [])
    code = ("import runpy, sys; from pathlib import Path; from ftlab import compare; from ftlab.compare import bench; "
            f"compare.write_result = lambda name, payload: bench.write_result(name + '-gpu', payload, "
            f"folder=Path({str(results)!r})); sys.argv = {argv!r}; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=timeout, capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"bench_{name}.py exited {done.returncode}: {done.stderr[-2000:]}")
    print("  " + "\n  ".join(done.stdout.strip().splitlines()[-3:]))
    return {"result": str(results / f"{name}-gpu.json")}


def notebook_step(chapter: str, dry: bool, env: dict, timeout: float) -> dict:
    """Execute the chapter's first cells (through its last parity check) in a kernel under the gpu profile."""
    path = ROOT / "chapters" / f"{chapter}.ipynb"
    n = parity_cells(path)
    if dry:
        return {"cells": n, "executed": False}
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells = nb.cells[:n]
    os.environ.update(env)  # the kernel inherits this process's environment
    client = NotebookClient(nb, timeout=int(timeout), kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "chapters")}})
    client.execute()
    return {"cells": n, "executed": True}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (also when FTLAB_DEVICE=cpu)")
    args = ap.parse_args(argv)
    dry = args.dry_run or os.environ.get("FTLAB_DEVICE") == "cpu"
    env = dict(os.environ, HF_HUB_OFFLINE="1", FTLAB_PROFILE="ci" if dry else "gpu")
    if dry:
        env.update(FTLAB_DEVICE="cpu", TRITON_INTERPRET="1")
        os.environ.update(FTLAB_DEVICE="cpu", TRITON_INTERPRET="1")  # before ftlab.quant.triton_nf4 is imported
    os.environ["FTLAB_PROFILE"] = env["FTLAB_PROFILE"]
    import torch

    from ftlab import compare, runtime

    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run (or on a GPU machine)")
        return 2
    results = Path(tempfile.mkdtemp(prefix="gpu_check-")) if dry else compare.bench.RESULTS
    start = time.perf_counter()
    print(f"GPU check{' (dry run: toy sizes on the CPU)' if dry else ''}: {runtime.describe()}")
    steps = [("nf4", lambda left: nf4_step(dry, results))]
    steps += [(f"bench_{b}", lambda left, b=b: benchmark_step(b, dry, results, env, left)) for b in BENCHMARKS]
    steps += [(f"chapter_{c}", lambda left, c=c: notebook_step(c, dry, env, left)) for c in CHAPTERS]
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() and not dry else "cpu (dry run)",
              "dry_run": dry, "steps": {}}
    for name, run in steps:
        left = BUDGET_S - (time.perf_counter() - start)
        if left <= 0:
            report["steps"][name] = {"status": "skipped: the 8-minute budget is spent"}
            continue
        t0 = time.perf_counter()
        try:
            report["steps"][name] = {"status": "ok", **run(left)}
        except Exception as exc:  # recorded; the other steps still run
            report["steps"][name] = {"status": f"failed: {type(exc).__name__}: {str(exc)[:2000]}"}
        report["steps"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {report['steps'][name]['status']} ({report['steps'][name]['seconds']} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    path = compare.write_result("gpu_check-gpu", report, folder=results)
    print(f"wrote {path} in {report['seconds']} s")
    return 0 if all(s["status"] == "ok" for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
