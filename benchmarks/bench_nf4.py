"""NF4 throughput, ours (pure torch, ftlab.quant) vs bitsandbytes, alternating in one process.

    python benchmarks/bench_nf4.py                 # 4096 x 4096 bf16 weight, the issue's setting
    python benchmarks/bench_nf4.py --size 1024     # a quicker run
    python benchmarks/bench_nf4.py --threads 1 2   # the thread counts to measure (default: 1 and all cores)

Measures, on runtime.device(), at each thread count (torch.set_num_threads; bitsandbytes' OpenMP
kernels share torch's OpenMP runtime, so the setting holds for both sides):
- quantize:   bf16 weight -> packed NF4 codes + absmax          (GB/s = input bytes / second)
- dequantize: packed codes + absmax -> bf16 weight              (GB/s = output bytes / second)
- copy:       a plain bf16 tensor copy of the same size, the machine's practical memory bandwidth.
  `bandwidth_share` = (bytes the operation must read and write) / time / (copy bytes read and written
  / copy time): 1.0 would mean running as fast as memory allows.
Then, at the largest thread count, the forward of a 4-bit linear layer (ours.Linear4bit vs
bnb.nn.Linear4bit), double quantization on, bf16 compute, `tokens` rows of input.
Each `ratio` is ours_median_s / theirs_median_s (below 1: ours is faster); `speedup` = 1 / ratio is
our throughput in units of bitsandbytes'. `bitsandbytes_path` says which bitsandbytes kernels ran.
Writes benchmarks/results/nf4.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as bnbF  # noqa: E402

from ftlab import compare, runtime  # noqa: E402
from ftlab.quant import linear4bit, nf4  # noqa: E402


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def bitsandbytes_path(dev: torch.device, blocksize: int, compute_dtype: torch.dtype) -> dict:
    """Which bitsandbytes code each measurement runs on this machine (0.50's dispatch rules)."""
    if dev.type == "cuda":
        return {"quantize": "CUDA kernel kQuantizeBlockwise (NF4 decision tree)",
                "dequantize": "CUDA kernel kDequantizeBlockwise",
                "linear_forward": "CUDA gemv_4bit / dequantize + matmul"}
    lib = bnbF.lib
    avx512 = bool(getattr(lib, "has_avx512f_cpu", lambda: False)())
    avx512_bf16 = bool(bnbF.has_avx512bf16())
    if avx512 and blocksize >= 2048:
        dequant = "pure-torch fallback (its AVX-512 kernel is not used for blocksize >= 2048)"
    else:
        dequant = f"C++ kernel cdequantize_blockwise_cpu_nf4_* ({'AVX-512' if avx512 else 'without AVX-512'})"
    if avx512_bf16 and compute_dtype == torch.bfloat16:
        forward = "fused AVX512-BF16 gemv_4bit kernel (no dequantized weight is materialised)"
    else:
        forward = "dequantize (the C++ kernel above) + torch matmul: no AVX512-BF16 on this CPU"
    return {"quantize": "pure torch: float32 scaling and torch.bucketize on the 15 midpoints",
            "dequantize": dequant, "linear_forward": forward, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512f": avx512, "avx512_bf16": avx512_bf16}


def measure(w: torch.Tensor, bs: int, repeats: int) -> dict:
    """quantize, dequantize and copy timings at the current thread count, checked byte for byte first."""
    nbytes = w.numel() * w.element_size()
    q = nf4.quantize_nf4(w, bs)
    # bitsandbytes' CPU quantizer is the reference (its CUDA kernel rounds its own way; gpu_check counts that)
    ref_packed, ref_state = bnbF.quantize_4bit(w.cpu(), blocksize=bs, quant_type="nf4")
    assert torch.equal(q.packed.cpu(), ref_packed.reshape(-1)) and torch.equal(q.absmax.cpu(), ref_state.absmax), \
        "not byte-exact"
    flat_state = bnbF.QuantState(absmax=q.absmax, shape=torch.Size([w.numel()]), dtype=w.dtype, blocksize=bs,
                                 code=nf4.NF4_CODE.to(w.device), quant_type="nf4")
    packed = q.packed.reshape(-1, 1)
    assert torch.equal(nf4.dequantize_nf4(q).reshape(-1), bnbF.dequantize_4bit(packed, flat_state).reshape(-1)), \
        "dequantize differs"
    copy_dst = torch.empty_like(w)
    t_copy = compare.time_pair(lambda: copy_dst.copy_(w), lambda: copy_dst.copy_(w), repeats=repeats)
    copy_s = min(t_copy["ours_s"] + t_copy["theirs_s"])  # both sides are the same copy: take the best
    copy_bw = 2 * nbytes / copy_s  # bytes read + written per second
    moved = {"quantize": nbytes + q.nbytes, "dequantize": q.nbytes + nbytes}  # read + written
    out = {"threads": torch.get_num_threads(), "copy": {"seconds": copy_s, "GBps": copy_bw / 1e9}}
    pairs = {"quantize": (lambda: nf4.quantize_nf4(w, bs),
                          lambda: bnbF.quantize_4bit(w, blocksize=bs, quant_type="nf4")),
             "dequantize": (lambda: nf4.dequantize_nf4(q), lambda: bnbF.dequantize_4bit(packed, flat_state))}
    for name, (ours, theirs) in pairs.items():
        t = compare.time_pair(ours, theirs, repeats=repeats)
        out[name] = {**t, "speedup": 1 / t["ratio"], "ours_GBps": gbps(nbytes, t["ours_median_s"]),
                     "theirs_GBps": gbps(nbytes, t["theirs_median_s"]),
                     "ours_bandwidth_share": moved[name] / t["ours_median_s"] / copy_bw,
                     "theirs_bandwidth_share": moved[name] / t["theirs_median_s"] / copy_bw}
    return out


def linear_forward(w: torch.Tensor, bs: int, tokens: int, repeats: int, compute_dtype: torch.dtype) -> dict:
    dev, size = w.device, w.shape[0]
    base = torch.nn.Linear(size, size, bias=False, device=dev)
    with torch.no_grad():
        base.weight.copy_(w.float())
    ours = linear4bit.Linear4bit(base, bs, double_quant=True, compute_dtype=compute_dtype)
    theirs = bnb.nn.Linear4bit(size, size, bias=False, compute_dtype=compute_dtype,
                               compress_statistics=True, quant_type="nf4")
    theirs.weight = bnb.nn.Params4bit(base.weight.detach().clone().cpu(), requires_grad=False, quant_type="nf4",
                                      compress_statistics=True, blocksize=bs)
    theirs = theirs.to(dev)
    x = torch.randn(tokens, size, device=dev)
    with torch.no_grad():
        exact = torch.equal(ours(x), theirs(x))
        t = compare.time_pair(lambda: ours(x), lambda: theirs(x), repeats=repeats)
    return {**t, "tokens": tokens, "outputs_equal": exact, "bits_per_parameter": ours.bits_per_parameter()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="the weight is size x size (default 4096)")
    ap.add_argument("--blocksize", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16, help="input rows for the linear forward")
    ap.add_argument("--repeats", type=int, default=None, help="alternating pairs (default: the profile's)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="CPU thread counts to measure (default: 1 and torch's default)")
    args = ap.parse_args(argv)
    if args.size < 64 or args.size % 64:
        ap.error(f"--size={args.size} must be a positive multiple of 64")
    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    if min(threads) < 1:
        ap.error(f"--threads={threads}: every count must be at least 1")
    repeats = args.repeats or runtime.profile().bench_repeats
    dev = runtime.device()
    torch.manual_seed(0)
    w = (torch.randn(args.size, args.size, device=dev) * 0.02).to(torch.bfloat16)
    bs = args.blocksize
    compute_dtype = torch.bfloat16
    results = {"size": args.size, "blocksize": bs, "dtype": "bfloat16", "repeats": repeats,
               "bitsandbytes_path": bitsandbytes_path(dev, bs, compute_dtype), "by_threads": {}}
    try:
        for n in threads:
            torch.set_num_threads(n)
            results["by_threads"][str(n)] = measure(w, bs, repeats)
        torch.set_num_threads(max(threads))
        results["linear_forward"] = linear_forward(w, bs, args.tokens, repeats, compute_dtype)
    finally:
        torch.set_num_threads(default_threads)

    path = compare.write_result("nf4", results)
    print(f"NF4 {args.size}x{args.size} bf16, blocksize {bs}, {repeats} alternating pairs on {dev}")
    for key, value in results["bitsandbytes_path"].items():
        print(f"  bitsandbytes {key}: {value}")
    for n, r in results["by_threads"].items():
        print(f"  {n} thread(s): plain copy {r['copy']['GBps']:.1f} GB/s (read + write)")
        for key in ("quantize", "dequantize"):
            m = r[key]
            print(f"    {key:10s} ours {m['ours_GBps']:6.2f} GB/s ({m['ours_bandwidth_share']:5.1%} of copy)   "
                  f"bitsandbytes {m['theirs_GBps']:6.2f} GB/s ({m['theirs_bandwidth_share']:5.1%})   "
                  f"-> {m['speedup']:.2f}x bitsandbytes' throughput")
    r = results["linear_forward"]
    print(f"  linear forward ({max(threads)} threads) ours {r['ours_median_s'] * 1e3:7.2f} ms   "
          f"bitsandbytes {r['theirs_median_s'] * 1e3:7.2f} ms   ratio {r['ratio']:.2f}   "
          f"outputs equal: {r['outputs_equal']}")
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
