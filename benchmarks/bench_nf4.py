"""NF4 throughput, ours (pure torch, ftlab.quant) vs bitsandbytes, alternating in one process.

    python benchmarks/bench_nf4.py                 # 4096 x 4096 bf16 weight, the issue's setting
    python benchmarks/bench_nf4.py --size 1024     # a quicker run

Measures, on runtime.device():
- quantize:   bf16 weight -> packed NF4 codes + absmax          (GB/s = input bytes / second)
- dequantize: packed codes + absmax -> bf16 weight              (GB/s = output bytes / second)
- forward of a 4-bit linear layer (ours.Linear4bit vs bnb.nn.Linear4bit), double quantization on,
  bf16 compute, `tokens` rows of input.
On CUDA it also times a torch.compile'd ("fused") version of our dequantize. Each `ratio` is the
median over alternating pairs of ours_time / theirs_time: below 1 means ours is faster.
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="the weight is size x size (default 4096)")
    ap.add_argument("--blocksize", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16, help="input rows for the linear forward")
    ap.add_argument("--repeats", type=int, default=None, help="alternating pairs (default: the profile's)")
    args = ap.parse_args(argv)
    if args.size < 64 or args.size % 64:
        ap.error(f"--size={args.size} must be a positive multiple of 64")
    repeats = args.repeats or runtime.profile().bench_repeats
    dev = runtime.device()
    torch.manual_seed(0)
    w = (torch.randn(args.size, args.size, device=dev) * 0.02).to(torch.bfloat16)
    nbytes = w.numel() * w.element_size()
    bs = args.blocksize

    q = nf4.quantize_nf4(w, bs)
    packed, state = bnbF.quantize_4bit(w, blocksize=bs, quant_type="nf4")
    assert torch.equal(q.packed, packed.reshape(-1)) and torch.equal(q.absmax, state.absmax), "not byte-exact"
    flat_state = bnbF.QuantState(absmax=state.absmax, shape=torch.Size([w.numel()]), dtype=w.dtype, blocksize=bs,
                                 code=state.code, quant_type="nf4")
    ours_w = nf4.dequantize_nf4(q)
    assert torch.equal(ours_w.reshape(-1), bnbF.dequantize_4bit(packed, flat_state).reshape(-1)), "dequantize differs"

    results = {"size": args.size, "blocksize": bs, "dtype": "bfloat16", "repeats": repeats}
    t = compare.time_pair(lambda: nf4.quantize_nf4(w, bs),
                          lambda: bnbF.quantize_4bit(w, blocksize=bs, quant_type="nf4"), repeats=repeats)
    results["quantize"] = {**t, "ours_GBps": gbps(nbytes, t["ours_median_s"]),
                           "theirs_GBps": gbps(nbytes, t["theirs_median_s"])}
    t = compare.time_pair(lambda: nf4.dequantize_nf4(q), lambda: bnbF.dequantize_4bit(packed, flat_state),
                          repeats=repeats)
    results["dequantize"] = {**t, "ours_GBps": gbps(nbytes, t["ours_median_s"]),
                             "theirs_GBps": gbps(nbytes, t["theirs_median_s"])}
    if dev.type == "cuda":  # the fused kernel: one compiled graph for unpack, lookup, scale, cast
        fused = torch.compile(nf4.dequantize_nf4, dynamic=False)
        assert torch.equal(fused(q), ours_w)
        t = compare.time_pair(lambda: fused(q), lambda: bnbF.dequantize_4bit(packed, flat_state), repeats=repeats)
        results["dequantize_fused"] = {**t, "ours_GBps": gbps(nbytes, t["ours_median_s"]),
                                       "theirs_GBps": gbps(nbytes, t["theirs_median_s"])}

    base = torch.nn.Linear(args.size, args.size, bias=False, device=dev)
    with torch.no_grad():
        base.weight.copy_(w.float())
    ours = linear4bit.Linear4bit(base, bs, double_quant=True, compute_dtype=torch.bfloat16)
    theirs = bnb.nn.Linear4bit(args.size, args.size, bias=False, compute_dtype=torch.bfloat16,
                               compress_statistics=True, quant_type="nf4")
    theirs.weight = bnb.nn.Params4bit(base.weight.detach().clone().cpu(), requires_grad=False, quant_type="nf4",
                                      compress_statistics=True, blocksize=bs)
    theirs = theirs.to(dev)
    x = torch.randn(args.tokens, args.size, device=dev)
    with torch.no_grad():
        exact = torch.equal(ours(x), theirs(x))
        t = compare.time_pair(lambda: ours(x), lambda: theirs(x), repeats=repeats)
    results["linear_forward"] = {**t, "tokens": args.tokens, "outputs_equal": exact}
    results["bits_per_parameter"] = {"single": nf4.bits_per_parameter(bs), "double": ours.bits_per_parameter()}

    path = compare.write_result("nf4", results)
    print(f"NF4 {args.size}x{args.size} bf16, blocksize {bs}, {repeats} alternating pairs on {dev}")
    for key in ("quantize", "dequantize", "dequantize_fused"):
        if key in results:
            r = results[key]
            print(f"  {key:17s} ours {r['ours_GBps']:7.2f} GB/s   bitsandbytes {r['theirs_GBps']:7.2f} GB/s   "
                  f"ratio (time ours/theirs) {r['ratio']:.2f}  -> throughput {1 / r['ratio']:.2f}x bitsandbytes")
    r = results["linear_forward"]
    print(f"  linear forward    ours {r['ours_median_s'] * 1e3:7.2f} ms    "
          f"bitsandbytes {r['theirs_median_s'] * 1e3:7.2f} ms"
          f"   ratio {r['ratio']:.2f}   outputs equal: {exact}")
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
