"""NF4 (4-bit NormalFloat) from scratch: codebook, blockwise absmax quantization, packing, double quantization.

Byte-exact with bitsandbytes 0.50's CPU path (`bitsandbytes.functional.quantize_4bit(x, blocksize,
quant_type="nf4")`); chapter 04 proves it on hundreds of random and adversarial cases.

    q = quantize_nf4(w, blocksize=64)         # NF4Tensor: packed uint8 (2 codes a byte) + one float32 absmax a block
    w_hat = dequantize_nf4(q)                 # original shape and dtype
    dq = double_quantize(q.absmax)            # the absmax values themselves in 8 bits (QLoRA's "double quantization")
    absmax = double_dequantize(dq)

The recipe, in the words of the code below:

1. Cut the flattened tensor into blocks of `blocksize` values (the last block may be shorter).
2. Each block remembers its largest magnitude m (its "absmax") and is divided by it, so every value
   lands in [-1, 1].
3. Every scaled value becomes the index (0..15) of the nearest of 16 levels (the NF4 codebook).
   "Nearest" means: compare with the 15 midpoints between neighbouring levels; a value exactly on a
   midpoint goes to the lower level.
4. Two indices share a byte: element 2i in the high nibble, element 2i+1 in the low nibble.

bitsandbytes' arithmetic, which we follow to the last bit (all in float32, whatever the input dtype):
- bf16/fp16 inputs are first converted to float32 (exact), so every dtype takes the same path.
- Full blocks are scaled by multiplying with the reciprocal 1/m, the ragged last block by dividing by m.
  x * (1/m) and x / m can differ in the last bit, and a value on a midpoint can flip level because of it.
- m is clamped to at least 1e-38 before scaling, so an all-zero block gives all-zero scaled values (index 7,
  the exact zero). The clamped m is what is stored for the ragged last block; full blocks store m itself.
- Scaled values are clamped to [-1, 1] (x * (1/m) can overshoot 1 by an ulp).
- An odd number of values is padded with one scaled 0.0, so the final low nibble is 7.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import torch

from ftlab.checks import positive_int

__all__ = [
    "NF4_CODE", "FP4_CODE", "NF4Tensor", "DoubleQuantized", "nf4_codebook", "nf4_midpoints", "quantize_nf4",
    "dequantize_nf4", "pack_nibbles", "unpack_nibbles", "dynamic_code", "quantize_blockwise_8bit",
    "dequantize_blockwise_8bit", "double_quantize", "double_dequantize", "bits_per_parameter", "nearest_code",
    "quantize_4bit_with_code", "dequantize_4bit_with_code", "int4_code", "fp4_code", "SUPPORTED_DTYPES",
    "BNB_BLOCKSIZES", "LUT_SIZE", "byte_table",
]

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what bitsandbytes accepts; we accept any size >= 1

# The 16 levels bitsandbytes ships (hard-coded there to avoid a scipy dependency). `nf4_codebook()`
# re-derives them from normal quantiles; the two agree to about 1e-7 (chapter 04 prints the figure).
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=torch.float32)

# bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit) as 16 values in *bit-pattern* order,
# normalised to [-1, 1]; used here only to compare errors with NF4.
FP4_CODE = torch.tensor([0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0,
                         -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0], dtype=torch.float32) / 12.0


# --- the codebook ---------------------------------------------------------------------------------

def nf4_codebook(offset: float = 0.9677083) -> torch.Tensor:
    """The 16 NF4 levels derived from quantiles of the standard normal (QLoRA, section 3).

    A normal weight is equally likely to fall in any of 2^k equal-probability slices; putting one
    level at the centre of each slice spends the 4 bits where the weights are. Two catches make
    the construction asymmetric:
    - zero must be represented exactly (padding, ReLU-like zeros, and it keeps sign symmetry),
    - 16 is even, so one side gets an extra level: 8 positive levels, 7 negative, and 0.
    The outermost slice is cut at probability `offset` (not 1, whose quantile is infinite):
    the positive levels are the quantiles at 8 evenly spaced probabilities from `offset` down to
    0.5 (exclusive), the negative ones mirror 7 such points, and everything is divided by the
    largest level so the code spans [-1, 1].

    Arithmetic follows bitsandbytes' `create_normal_map` (float32 probabilities, float64
    quantiles, float32 result), which is how the hard-coded table was produced.
    """
    if not 0.5 < offset < 1.0:
        raise ValueError(f"offset={offset!r} must lie strictly between 0.5 and 1 (a probability above the median)")
    probs_pos = torch.linspace(offset, 0.5, 9, dtype=torch.float32)[:-1].double()  # 8 probabilities > 0.5
    probs_neg = torch.linspace(offset, 0.5, 8, dtype=torch.float32)[:-1].double()  # 7 probabilities > 0.5
    positive = torch.special.ndtri(probs_pos)  # inverse normal CDF
    negative = -torch.special.ndtri(probs_neg)
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float().sort().values
    return levels / levels.max()


def nf4_midpoints(code: torch.Tensor = NF4_CODE) -> torch.Tensor:
    """The 15 decision thresholds between neighbouring (sorted) levels, computed in float32."""
    return (code[:-1] + code[1:]) / 2


def int4_code() -> torch.Tensor:
    """Plain symmetric int4 (absmax scaling): the 15 levels k/7 for k = -7..7, plus a duplicate zero."""
    return torch.cat([torch.arange(-7, 8, dtype=torch.float32) / 7, torch.zeros(1)])


def fp4_code() -> torch.Tensor:
    """bitsandbytes' FP4 levels (bit-pattern order), normalised to [-1, 1]."""
    return FP4_CODE.clone()


# --- packing --------------------------------------------------------------------------------------

def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 (even count) -> bytes: element 2i in the high nibble, 2i+1 in the low nibble.

    Read as int16, each pair of codes is one little-endian word, code 2i in its low byte and code 2i+1
    in its high byte, so (word << 4) | (word >> 8) has the packed byte in its low byte: two contiguous
    shifts instead of two strided gathers (about 3x faster on CPU).
    """
    if codes.numel() % 2:
        raise ValueError(f"codes has {codes.numel()} elements; pack an even number (pad with the zero level first)")
    words = codes.reshape(-1).to(torch.uint8).contiguous().view(torch.int16)
    return ((words << 4) | (words >> 8)).to(torch.uint8)  # the int16 -> uint8 cast keeps the low byte


def unpack_nibbles(packed: torch.Tensor, numel: int | None = None) -> torch.Tensor:
    """Inverse of `pack_nibbles`: bytes -> int64 codes (dropping a padding nibble when `numel` is odd)."""
    packed = packed.reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1).long()
    return codes if numel is None else codes[:numel]


# --- the NF4 tensor -------------------------------------------------------------------------------

@dataclass
class NF4Tensor:
    """A tensor stored as 4-bit NF4 codes plus one float32 scale (absmax) per block."""

    packed: torch.Tensor  # uint8, 1-D, ceil(numel / 2) bytes
    absmax: torch.Tensor  # float32, 1-D, ceil(numel / blocksize) values
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: packed codes + float32 absmax (not counting the 16-entry codebook)."""
        return self.packed.numel() * self.packed.element_size() + self.absmax.numel() * self.absmax.element_size()

    def dequantize(self) -> torch.Tensor:
        return dequantize_nf4(self)

    def to(self, device) -> "NF4Tensor":
        return NF4Tensor(self.packed.to(device), self.absmax.to(device), self.shape, self.dtype, self.blocksize)


def _check_input(x, blocksize, name: str = "x") -> int:
    """Refuse what absmax scaling cannot quantize; returns `blocksize` as an int."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}.dtype={x.dtype} is not supported: use float32, bfloat16 or float16")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): nothing to quantize")
    return positive_int("blocksize", blocksize, f"(bitsandbytes accepts {BNB_BLOCKSIZES})")


def _check_finite(absmax: torch.Tensor, name: str = "x") -> None:
    """A NaN or infinity anywhere in a block makes that block's absmax NaN or infinite, so checking the
    absmax values finds it without another pass over the whole tensor."""
    if not torch.isfinite(absmax).all():
        raise ValueError(f"{name} contains NaN or infinity; absmax scaling needs finite values")


def _scale_blocks(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled values in [-1, 1] as a flat float32 tensor, float32 absmax per block), bitsandbytes' way."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    n_full = n // blocksize
    full = flat[: n_full * blocksize].view(n_full, blocksize)
    absmax = full.abs().amax(dim=1)  # stored unclamped
    scaled = (full * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1.0, 1.0).reshape(-1)
    if n % blocksize:
        tail = flat[n_full * blocksize:]
        tail_max = tail.abs().amax().clamp(min=1e-38)  # stored clamped
        absmax = torch.cat([absmax, tail_max.reshape(1)])
        scaled = torch.cat([scaled, (tail / tail_max).clamp(-1.0, 1.0)])  # divided, not multiplied
    return scaled, absmax


def nearest_code(scaled: torch.Tensor, code: torch.Tensor = NF4_CODE) -> torch.Tensor:
    """Index of the nearest level for each value: the number of midpoints strictly below it.

    So a value exactly on a midpoint goes to the lower level. `code` must be sorted ascending.
    """
    return torch.searchsorted(nf4_midpoints(code.to(scaled.device)), scaled, right=False)


# --- fast kernels: a lookup grid for the level search, cache-sized chunks, one thread per core ---------

GRID_MARGIN = 2.0 ** -22  # how far float32 rounding can move (s + 1) * K off the exact value, in units of s


@functools.lru_cache(maxsize=16)
def _grid_tables(midpoints: tuple[float, ...]) -> tuple[int, tuple[int, ...], tuple[float, ...]] | None:
    """(K, low, threshold): a uniform grid of 2K + 1 cells over [-1, 1] where each cell holds at most one midpoint.

    A scaled value s falls in cell g = int((s + 1) * K). Every midpoint below the cell is below s, so it
    counts towards s's index without looking (`low[g]` of them); the cell's own midpoint, if any, takes
    one comparison (`threshold[g]`, +inf when there is none). So the nearest level is
    low[g] + (s > threshold[g]): two table reads and a compare instead of a binary search of the midpoints
    (bitsandbytes' `bucketize`, which costs about 20 ns a value on CPU). Each cell is widened by
    GRID_MARGIN on both sides so that the float32 rounding of (s + 1) * K cannot put a value in a cell
    whose tables do not describe it. Returns None if no grid up to 2^16 cells per unit separates the
    midpoints (two of them closer than that, or equal).
    """
    for log_k in range(4, 17):
        k = 1 << log_k
        low, threshold = [], []
        for g in range(2 * k + 1):
            start = -math.inf if g == 0 else g / k - 1 - GRID_MARGIN
            stop = math.inf if g == 2 * k else (g + 1) / k - 1 + GRID_MARGIN
            inside = [m for m in midpoints if start <= m <= stop]
            if len(inside) > 1:
                break
            low.append(sum(m < start for m in midpoints))
            threshold.append(inside[0] if inside else math.inf)
        else:
            return k, tuple(low), tuple(threshold)
    return None


@functools.lru_cache(maxsize=16)
def _grid_tensors(midpoints: tuple[float, ...], device: str) -> tuple[int, torch.Tensor, torch.Tensor] | None:
    """`_grid_tables` as tensors on `device` (uint8 counts, float32 thresholds), built once per codebook."""
    tables = _grid_tables(midpoints)
    if tables is None:
        return None
    k, low, threshold = tables
    return (k, torch.tensor(low, dtype=torch.uint8, device=device),
            torch.tensor(threshold, dtype=torch.float32, device=device))


def level_index(scaled: torch.Tensor, code: torch.Tensor = NF4_CODE) -> torch.Tensor:
    """uint8 index of the nearest level of the sorted `code` for each value in [-1, 1]: equal to
    `nearest_code` (ties go down), computed with `_grid_tables`' lookup when the midpoints allow it."""
    tables = _grid_tensors(tuple(nf4_midpoints(code).double().tolist()), str(scaled.device))
    if tables is None:
        return nearest_code(scaled, code).to(torch.uint8)
    k, low, threshold = tables
    cell = scaled.mul(k).add_(k).int()  # in [0, 2k]: |scaled| <= 1 + one ulp, and the cast truncates
    return torch.index_select(low, 0, cell).add_(torch.gt(scaled, torch.index_select(threshold, 0, cell)))


CPU_CHUNK = 1 << 18  # elements per chunk on CPU: its float32 intermediates (1 MiB each) stay in cache


def _run_chunks(n: int, step: int, fn, device: torch.device) -> None:
    """fn(start, stop) over [0, n) in pieces of `step`, spread over torch.get_num_threads() CPU threads.

    Each thread claims the next piece when it is done with its own, and runs torch ops single-threaded
    (torch.set_num_threads(1) in that thread). So a call opens one parallel region of its own instead of
    one per op per chunk: with torch's own threading every op waits at a barrier for every thread, and on
    a machine whose cores other processes share, a descheduled thread stalls all of them, op after op.
    On a GPU the whole range is one call.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu":
        step = max(n, 1)
    if device.type != "cpu" or threads == 1 or n <= step:
        for start in range(0, n, step):
            fn(start, min(start + step, n))
        return
    starts, lock, errors = iter(range(0, n, step)), threading.Lock(), []

    def worker():
        torch.set_num_threads(1)
        while not errors:
            with lock:
                start = next(starts, None)
            if start is None:
                return
            try:
                fn(start, min(start + step, n))
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        torch.set_num_threads(threads)  # a worker's call also set the process-wide default
    if errors:
        raise errors[0]


def _quantize(x: torch.Tensor, code: torch.Tensor, blocksize: int) -> NF4Tensor:
    """Blockwise absmax quantization of a checked `x` to the nearest level of `code` (16 levels, any order).

    Full blocks go through `_run_chunks` in pairs (so every chunk holds whole bytes); what is left (at most
    one full block and the ragged tail) goes through `_scale_blocks`. Scaled values are not clamped to
    [-1, 1] here: x * (1/m) overshoots by one ulp at most, and no float32 midpoint lies strictly between 1
    and the next float, so the level index is the same with or without the clamp.
    """
    order = torch.argsort(code, stable=True)
    sorted_code = code[order]
    permute = None if torch.equal(order, torch.arange(16, device=order.device)) else order.to(torch.uint8)
    flat = x.reshape(-1)
    n, bs = flat.numel(), blocksize
    pairs = n // bs // 2  # pairs of full blocks
    packed = torch.empty((n + 1) // 2, dtype=torch.uint8, device=x.device)
    absmax = torch.empty(-(-n // bs), dtype=torch.float32, device=x.device)

    def indices(scaled):
        idx = level_index(scaled, sorted_code.to(scaled.device))
        return idx if permute is None else torch.index_select(permute, 0, idx.int())

    def chunk(p0, p1):  # block pairs p0..p1-1
        blocks = flat[2 * p0 * bs: 2 * p1 * bs].view(-1, bs).float()
        m = torch.amax(blocks.abs(), dim=1, out=absmax[2 * p0: 2 * p1])
        _check_finite(m)  # before the level search, which would index its tables with NaN
        scaled = blocks * (1.0 / m.clamp(min=1e-38)).unsqueeze(1)
        packed[p0 * bs: p1 * bs] = pack_nibbles(indices(scaled.reshape(-1)))

    _run_chunks(pairs, max(1, CPU_CHUNK // (2 * bs)), chunk, x.device)
    done = 2 * pairs * bs
    if done < n:
        scaled, rest = _scale_blocks(flat[done:], bs)
        _check_finite(rest)
        absmax[2 * pairs:] = rest
        if scaled.numel() % 2:  # the odd last element shares its byte with a zero
            scaled = torch.cat([scaled, scaled.new_zeros(1)])
        packed[done // 2:] = pack_nibbles(indices(scaled))
    return NF4Tensor(packed, absmax, x.shape, x.dtype, blocksize)


def quantize_nf4(x: torch.Tensor, blocksize: int = 64) -> NF4Tensor:
    """Blockwise absmax NF4 quantization of any float tensor (fp32, bf16, fp16; any shape)."""
    blocksize = _check_input(x, blocksize)
    return _quantize(x, NF4_CODE.to(x.device), blocksize)


def dequantize_nf4(q: NF4Tensor, absmax: torch.Tensor | None = None) -> torch.Tensor:
    """codebook[code] * absmax of its block, in float32, then cast to the original dtype and shape.

    `absmax` overrides `q.absmax` (e.g. scales recovered from double quantization).
    """
    if not isinstance(q, NF4Tensor):
        raise TypeError(f"q must be an NF4Tensor (from quantize_nf4), got {type(q).__name__}")
    return dequantize_4bit_with_code(q, NF4_CODE, absmax)


def byte_table(code: torch.Tensor) -> torch.Tensor:
    """(256, 2): for each possible byte, the levels of its high and its low nibble.

    Decoding through this table needs one gather per byte instead of two shifts, two masks and two
    gathers per pair of values: the trick that makes pure-torch dequantization fast.
    """
    b = torch.arange(256, device=code.device)
    return torch.stack([code[b >> 4], code[b & 0x0F]], dim=1)


def _byte_values(packed: torch.Tensor, pairs: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """float32 levels of elements start..end-1: one gather of an 8-byte word (two levels) per byte."""
    values = torch.index_select(pairs, 0, packed[start // 2: (end + 1) // 2].int()).view(torch.float32)
    return values[start % 2: start % 2 + end - start]


def dequantize_4bit_with_code(q: NF4Tensor, code: torch.Tensor, absmax: torch.Tensor | None = None) -> torch.Tensor:
    absmax = q.absmax if absmax is None else absmax
    n, bs = q.numel, q.blocksize
    n_blocks = -(-n // bs)
    if absmax.numel() != n_blocks:
        raise ValueError(f"absmax has {absmax.numel()} values but {n} elements in blocks of {bs} need {n_blocks}")
    # Each byte selects the pair (level of its high nibble, level of its low nibble). Viewing each pair of
    # float32 as one 8-byte word makes this a single gather of one element per byte; the words are then
    # viewed back as float32, two per byte, in memory order (high nibble first).
    pairs = byte_table(code.to(q.packed.device)).contiguous().view(torch.int64).reshape(256)
    absmax = absmax.float().reshape(-1, 1)
    out = torch.empty(n, dtype=q.dtype, device=q.packed.device)

    # value * absmax is computed in float32 and rounded once into the output dtype (mul writes into `out`).
    # On CPU a chunk at a time: gather, scale and cast run on data still in cache, about 4x faster than
    # three passes over the whole tensor. Chunks hold an even number of blocks, so whole bytes.
    def chunk(p0, p1):  # block pairs p0..p1-1
        s, e = 2 * p0 * bs, min(2 * p1 * bs, n // bs * bs)
        torch.mul(_byte_values(q.packed, pairs, s, e).view(-1, bs), absmax[s // bs: e // bs],
                  out=out[s:e].view(-1, bs))

    _run_chunks(-(-(n // bs) // 2), max(1, CPU_CHUNK // (2 * bs)), chunk, q.packed.device)
    n_full = n // bs * bs
    if n_full < n:  # a ragged last block
        torch.mul(_byte_values(q.packed, pairs, n_full, n), absmax[-1], out=out[n_full:])
    return out.reshape(q.shape)


def quantize_4bit_with_code(x: torch.Tensor, code: torch.Tensor, blocksize: int = 64) -> NF4Tensor:
    """The same blockwise scheme with any 16-level codebook (any order): NF4, FP4, int4.

    Used to compare data types on equal terms; for NF4 this equals `quantize_nf4`.
    """
    blocksize = _check_input(x, blocksize)
    if code.numel() != 16:
        raise ValueError(f"code must have 16 levels, got {code.numel()}")
    return _quantize(x, code.to(x.device), blocksize)


# --- double quantization: the absmax values in 8 bits ----------------------------------------------

def dynamic_code() -> torch.Tensor:
    """bitsandbytes' signed 8-bit "dynamic" map (Dettmers 2015): 256 sorted levels in [-1, 1].

    A dynamic exponent lets the levels cover magnitudes from 1e-7 to 1: for exponent e = 0..6 the
    interval [0.1, 1] is cut into 2^e equal parts, and the part centres, times 10^(e-6), become levels
    of both signs (so small magnitudes get few levels, large ones many): 2 * 127 levels, plus 0 and 1.
    """
    levels: list[float] = []
    for e in range(7):
        edges = torch.linspace(0.1, 1, 2 ** e + 1, dtype=torch.float32)
        centres = (edges[:-1] + edges[1:]) / 2.0
        scale = 10 ** (e - 6)
        levels += (scale * centres).tolist() + (-scale * centres).tolist()
    levels += [0.0, 1.0]
    assert len(levels) == 256
    return torch.tensor(sorted(levels), dtype=torch.float32)


LUT_SIZE = 65536  # bitsandbytes' CPU 8-bit quantizer looks values up on a grid of this many points


def _lookup_table(code: torch.Tensor) -> torch.Tensor:
    """For each of 65,536 evenly spaced points in [-1, 1]: the index of its nearest level (ties down)."""
    grid = -1.0 + (2.0 * torch.arange(LUT_SIZE, dtype=torch.float32, device=code.device)) / (LUT_SIZE - 1)
    return nearest_code(grid, code)


def quantize_blockwise_8bit(x: torch.Tensor, code: torch.Tensor, blocksize: int = 256, rule: str = "bitsandbytes"):
    """(uint8 codes, float32 absmax per block): blockwise absmax quantization to a 256-level code.

    rule="nearest": each scaled value takes its nearest level (ties go down), like the 4-bit path.
    rule="bitsandbytes": what bitsandbytes 0.50's CPU kernel does, byte for byte. For speed it does not
        search the 256 levels per value: it rounds the scaled value to the nearest of 65,536 grid points
        on [-1, 1] (spacing 3.05e-5) and reads the level precomputed for that grid point. Where levels are
        closer together than the grid spacing (the dynamic map packs many levels near zero) this can pick
        a level that is not the nearest one. A block whose absmax is 0 gets code 0 everywhere.
    Both rules scale by multiplying with the float32 reciprocal of the block's absmax.
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise ValueError(f"x must be a float32 tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    blocksize = positive_int("blocksize", blocksize)
    if rule not in ("bitsandbytes", "nearest"):
        raise ValueError(f"rule={rule!r}: use 'bitsandbytes' or 'nearest'")
    flat = x.reshape(-1)
    n = flat.numel()
    n_blocks = -(-n // blocksize)
    padded = torch.cat([flat, flat.new_zeros(n_blocks * blocksize - n)]).view(n_blocks, blocksize)
    absmax = padded.abs().amax(dim=1)
    scaled = (padded * (1.0 / absmax).unsqueeze(1)).clamp(-1.0, 1.0)  # 0/0 rows are overwritten below
    if rule == "nearest":
        idx = nearest_code(scaled.nan_to_num(0.0), code)
    else:
        grid_index = ((scaled.nan_to_num(0.0) + 1.0) * 0.5 * (LUT_SIZE - 1) + 0.5).long()  # truncation, as C's cast
        idx = _lookup_table(code)[grid_index]
        idx[absmax == 0] = 0
    return idx.reshape(-1)[:n].to(torch.uint8).reshape(x.shape), absmax


def dequantize_blockwise_8bit(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor,
                              blocksize: int = 256) -> torch.Tensor:
    """code[codes] * absmax of the block, float32."""
    flat = code[codes.reshape(-1).int()]
    n = flat.numel()
    n_full = n // blocksize
    head = (flat[: n_full * blocksize].view(n_full, blocksize) * absmax[:n_full].view(n_full, 1)).reshape(-1)
    if n % blocksize:
        head = torch.cat([head, flat[n_full * blocksize:] * absmax[n_full]])
    return head.reshape(codes.shape)


@dataclass
class DoubleQuantized:
    """absmax values stored as 8-bit codes around their mean, with one float32 scale per `blocksize` of them."""

    codes: torch.Tensor  # uint8, one per first-level absmax
    absmax2: torch.Tensor  # float32, one per block of `blocksize` codes
    offset: torch.Tensor  # float32 scalar: the mean that was subtracted
    blocksize: int
    code: torch.Tensor  # the 256-level dynamic map

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + 4 * self.absmax2.numel() + 4


def double_quantize(absmax: torch.Tensor, blocksize: int = 256, rule: str = "bitsandbytes") -> DoubleQuantized:
    """Quantize the (positive) absmax values to 8 bits, as bitsandbytes' `compress_statistics=True`.

    The absmax values are all positive, so a signed 8-bit code would waste its negative half:
    subtracting their mean first centres them on zero. Then blockwise 8-bit quantization with the
    dynamic map, `blocksize` values per second-level scale. `rule` picks the rounding
    (see `quantize_blockwise_8bit`): "bitsandbytes" reproduces its `state2` byte for byte.
    """
    if not isinstance(absmax, torch.Tensor) or absmax.dtype != torch.float32 or absmax.dim() != 1:
        raise ValueError(f"absmax must be a 1-D float32 tensor, got {getattr(absmax, 'dtype', type(absmax).__name__)}"
                         f" with shape {tuple(getattr(absmax, 'shape', ()))}")
    if absmax.numel() == 0:
        raise ValueError("absmax is empty")
    if not torch.isfinite(absmax).all():  # one NaN would poison the mean, so every block's scale
        raise ValueError("absmax contains NaN or infinity; double quantization needs finite scales")
    offset = absmax.mean()
    code = dynamic_code().to(absmax.device)
    codes, absmax2 = quantize_blockwise_8bit(absmax - offset, code, blocksize, rule)
    return DoubleQuantized(codes, absmax2, offset, blocksize, code)


def double_dequantize(dq: DoubleQuantized) -> torch.Tensor:
    """The first-level absmax values back (float32): code[codes] * absmax2 + offset."""
    if not isinstance(dq, DoubleQuantized):
        raise TypeError(f"dq must be a DoubleQuantized (from double_quantize), got {type(dq).__name__}")
    return dequantize_blockwise_8bit(dq.codes, dq.absmax2, dq.code, dq.blocksize) + dq.offset


def bits_per_parameter(blocksize: int = 64, double_quant: bool = False, dq_blocksize: int = 256) -> float:
    """Storage cost per weight: 4 bits of code + the amortised scale.

    single: 4 + 32/blocksize                         (64 -> 4.5)
    double: 4 + 8/blocksize + 32/(blocksize * dq_blocksize)   (64, 256 -> 4.127)
    """
    blocksize, dq_blocksize = positive_int("blocksize", blocksize), positive_int("dq_blocksize", dq_blocksize)
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)
    return 4 + 32 / blocksize
