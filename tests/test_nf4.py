"""NF4 from scratch (ftlab.quant.nf4) against bitsandbytes 0.50, byte for byte.

Every comparison here is exact (torch.equal on uint8 codes and float32 scales): quantization is a
deterministic function of float32 arithmetic, so there is nothing to tolerate. Each test that can
only pass because the two sides agree is paired with a mutation test showing that a plausible
wrong rule (ties upward, dividing instead of multiplying) is caught.
"""

from __future__ import annotations

import math

import bitsandbytes.functional as bnb_functional
import pytest
import torch

from ftlab.quant import nf4

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CASES_PER_PAIR = 15  # 3 dtypes x 8 blocksizes x 15 shapes = 360 random cases
# the docstrings promise hundreds of random cases; fewer block sizes in nf4 would quietly break that
assert len(DTYPES) * len(nf4.BNB_BLOCKSIZES) * CASES_PER_PAIR >= 300


@pytest.fixture(autouse=True, scope="module")
def no_dynamo():
    """bitsandbytes wraps its pure-torch 4-bit dequantize fallback (odd shapes) in torch.compile, which
    recompiles for every new shape: minutes of compiling in a test that only needs the numbers."""
    import torch._dynamo

    before = torch._dynamo.config.disable
    torch._dynamo.config.disable = True
    yield
    torch._dynamo.config.disable = before


def bnb_quantize(x, blocksize):
    packed, state = bnb_functional.quantize_4bit(x, blocksize=blocksize, quant_type="nf4")
    return packed.reshape(-1), state


def bnb_dequantize_flat(packed, absmax, numel, dtype, blocksize):
    """bitsandbytes' dequantize on the flattened tensor (its 2-D AVX-512 path misreads scales; see below)."""
    state = bnb_functional.QuantState(absmax=absmax, shape=torch.Size([numel]), dtype=dtype, blocksize=blocksize,
                                      code=bnb_functional.get_4bit_type("nf4", device="cpu"), quant_type="nf4")
    return bnb_functional.dequantize_4bit(packed.reshape(-1, 1), state).reshape(-1)


def assert_same_bytes(x, blocksize):
    q = nf4.quantize_nf4(x, blocksize)
    packed, state = bnb_quantize(x, blocksize)
    assert q.packed.dtype == torch.uint8 and q.packed.dim() == 1
    assert q.packed.numel() == math.ceil(x.numel() / 2)
    assert q.absmax.dtype == torch.float32 and q.absmax.numel() == math.ceil(x.numel() / blocksize)
    assert torch.equal(q.packed, packed), f"packed codes differ at {(q.packed != packed).nonzero()[:5].tolist()}"
    assert torch.equal(q.absmax, state.absmax), "absmax differs"
    return q, packed, state


def random_case(gen, dtype, blocksize):
    ndim = int(torch.randint(1, 4, (1,), generator=gen))
    # sizes around the blocksize so that ragged last blocks, odd numel and single blocks all occur
    limit = max(3, int((blocksize * 3) ** (1 / ndim)) + 2)
    shape = tuple(int(s) for s in torch.randint(1, limit, (ndim,), generator=gen))
    scale = 10 ** float(torch.empty(1).uniform_(-4, 4, generator=gen))
    x = torch.randn(shape, generator=gen) * scale
    if torch.rand(1, generator=gen) < 0.3:  # heavy tails, like outlier weights
        x = x * torch.distributions.StudentT(2.0).sample(shape).clamp(-50, 50)
    limit = torch.finfo(dtype).max / 2  # stay finite in fp16
    return x.clamp(-limit, limit).to(dtype)


# --- the codebook -----------------------------------------------------------------------------------

def test_codebook_derivation_matches_the_shipped_table():
    derived = nf4.nf4_codebook()
    assert derived.shape == (16,) and derived.dtype == torch.float32
    assert (derived[1:] > derived[:-1]).all()
    assert (derived > 0).sum() == 8 and (derived < 0).sum() == 7 and (derived == 0).sum() == 1
    assert derived[0] == -1.0 and derived[-1] == 1.0
    # Derived with bitsandbytes' own arithmetic (float32 probabilities, float64 quantiles), the
    # table comes out identical; the max difference is printed by chapter 04.
    assert (derived - nf4.NF4_CODE).abs().max().item() == 0.0
    assert torch.equal(nf4.NF4_CODE, bnb_functional.get_4bit_type("nf4", device="cpu"))


def test_codebook_rejects_bad_offset():
    with pytest.raises(ValueError, match="offset"):
        nf4.nf4_codebook(offset=1.0)


def test_dynamic_code_matches_bitsandbytes():
    assert torch.equal(nf4.dynamic_code(), bnb_functional.create_dynamic_map())


# --- packing ------------------------------------------------------------------------------------------

def test_packing_puts_even_elements_in_the_high_nibble():
    codes = torch.tensor([1, 2, 15, 0, 7, 7], dtype=torch.uint8)
    packed = nf4.pack_nibbles(codes)
    assert packed.tolist() == [0x12, 0xF0, 0x77]
    assert nf4.unpack_nibbles(packed).tolist() == codes.tolist()
    assert nf4.unpack_nibbles(packed, 5).tolist() == codes.tolist()[:5]
    with pytest.raises(ValueError, match="codes"):
        nf4.pack_nibbles(torch.zeros(3, dtype=torch.uint8))


# --- quantization: random cases -----------------------------------------------------------------------

@pytest.mark.parametrize("blocksize", nf4.BNB_BLOCKSIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_quantize_is_byte_exact_on_random_tensors(dtype, blocksize):
    gen = torch.Generator().manual_seed(1000 * DTYPES.index(dtype) + blocksize)
    for _ in range(CASES_PER_PAIR):
        x = random_case(gen, dtype, blocksize)
        q, packed, state = assert_same_bytes(x, blocksize)
        assert q.shape == x.shape and q.dtype == dtype and q.blocksize == blocksize
        # dequantize: equal to bitsandbytes on the flattened tensor, in the original dtype and shape
        ours = nf4.dequantize_nf4(q)
        assert ours.shape == x.shape and ours.dtype == dtype
        theirs = bnb_dequantize_flat(packed, state.absmax, x.numel(), dtype, blocksize)
        assert torch.equal(ours.reshape(-1), theirs)


# --- quantization: adversarial cases ------------------------------------------------------------------

def on_the_boundaries(n, blocksize, gen, nudge):
    """Blocks whose values sit exactly on (or one ulp beside) a decision midpoint after scaling."""
    mids = nf4.nf4_midpoints()
    x = torch.empty(n)
    for start in range(0, n, blocksize):
        stop = min(n, start + blocksize)
        m = float(torch.empty(1).uniform_(0.01, 100.0, generator=gen))
        values = mids[torch.randint(0, 15, (stop - start,), generator=gen)] * m
        if nudge:
            step = torch.randint(-1, 2, values.shape, generator=gen)
            up = torch.nextafter(values, torch.tensor(float("inf")))
            down = torch.nextafter(values, torch.tensor(float("-inf")))
            values = torch.where(step > 0, up, torch.where(step < 0, down, values))
        values[int(torch.randint(0, stop - start, (1,), generator=gen))] = m * (1 if start % 2 else -1)
        x[start:stop] = values
    return x


@pytest.mark.parametrize("blocksize", (32, 64, 256))
@pytest.mark.parametrize("nudge", (False, True), ids=("exact", "one-ulp"))
def test_quantize_is_byte_exact_on_decision_boundaries(blocksize, nudge):
    gen = torch.Generator().manual_seed(blocksize + nudge)
    for n in (blocksize * 40, blocksize * 40 + 17, blocksize * 3 + 1):  # full, ragged, odd
        assert_same_bytes(on_the_boundaries(n, blocksize, gen, nudge), blocksize)


def test_scaled_midpoints_go_to_the_lower_level():
    # absmax 1.0: scaling is exact, so each value is exactly a midpoint
    mids = nf4.nf4_midpoints()
    x = torch.cat([torch.ones(1), mids])
    q = nf4.quantize_nf4(x, 64)
    assert nf4.unpack_nibbles(q.packed, x.numel())[1:].tolist() == list(range(15))
    assert_same_bytes(x, 64)


ADVERSARIAL = {
    "all zeros, full blocks": torch.zeros(128),
    "all zeros, ragged": torch.zeros(65),
    "zero block between others": torch.cat([torch.randn(64), torch.zeros(64), torch.randn(64)]),
    "single element": torch.tensor([-3.5]),
    "single zero": torch.tensor([0.0]),
    "odd numel": torch.randn(127),
    "constant": torch.full((100,), 2.5),
    "negative absmax": torch.cat([torch.tensor([-7.0]), torch.rand(63)]),
    "huge": torch.tensor([3.0e38, -1.0e38, 1.0, -2.9e38] * 40),
    "tiny normal": torch.randn(200) * 1e-37,
    "subnormal": torch.tensor([1e-39, -2e-39, 0.0, 1e-45, -1e-45] * 31),
    "subnormal ragged tail": torch.cat([torch.randn(64), torch.tensor([1e-40, -3e-41, 0.0])]),
    "mixed magnitudes": torch.cat([torch.randn(64) * 1e-30, torch.randn(64) * 1e30, torch.randn(33)]),
    "fp16 extremes": torch.tensor([65504.0, -65504.0, 6e-8, -6e-8, 0.0, 1.0] * 11).half(),
    "fp16 subnormals": (torch.randn(99) * 1e-6).half(),
    "bf16 extremes": torch.tensor([3.0e38, -1e-38, 1e-30, 0.0, -1.0] * 13).bfloat16(),
    "2-D ragged rows": torch.randn(7, 37),
    "3-D": torch.randn(3, 5, 7),
}


@pytest.mark.parametrize("blocksize", (32, 64, 4096))
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_quantize_is_byte_exact_on_adversarial_inputs(name, blocksize):
    x = ADVERSARIAL[name]
    q, packed, state = assert_same_bytes(x, blocksize)
    theirs = bnb_dequantize_flat(packed, state.absmax, x.numel(), x.dtype, blocksize)
    assert torch.equal(nf4.dequantize_nf4(q).reshape(-1), theirs)


def test_zero_blocks_dequantize_to_zero_and_odd_numel_pads_with_the_zero_level():
    x = torch.cat([torch.zeros(64), torch.randn(3)])
    q = nf4.quantize_nf4(x, 64)
    assert (nf4.dequantize_nf4(q)[:64] == 0).all()
    assert q.packed[-1].item() & 0x0F == 7  # index 7 is the exact zero


# --- the tests can fail: plausible wrong rules are caught ----------------------------------------------

def test_ties_upward_would_be_caught():
    x = on_the_boundaries(64 * 20, 64, torch.Generator().manual_seed(0), nudge=False)
    scaled, _ = nf4._scale_blocks(x, 64)
    wrong = nf4.pack_nibbles(torch.searchsorted(nf4.nf4_midpoints(), scaled, right=True))
    assert not torch.equal(wrong, bnb_quantize(x, 64)[0])


def test_dividing_full_blocks_would_be_caught():
    x = on_the_boundaries(64 * 200, 64, torch.Generator().manual_seed(1), nudge=True)
    blocks = x.view(-1, 64)
    divided = (blocks / blocks.abs().amax(1, keepdim=True)).clamp(-1, 1).reshape(-1)
    wrong = nf4.pack_nibbles(nf4.nearest_code(divided))
    assert not torch.equal(wrong, bnb_quantize(x, 64)[0])


# --- dequantize and bitsandbytes' 2-D kernel ----------------------------------------------------------

def test_bitsandbytes_2d_dequantize_is_right_or_the_known_bug():
    """bitsandbytes' AVX-512 CPU kernel indexes scales per row: wrong when the last dim is not a
    multiple of the blocksize. On CPUs without AVX-512 it takes a correct scalar path. Either way
    our result must equal bitsandbytes' on the flattened tensor; the 2-D result may differ only in
    the documented situation."""
    for shape in ((4, 96), (3, 100), (8, 64), (5, 130)):
        x = torch.randn(shape)
        q = nf4.quantize_nf4(x, 64)
        packed, state = bnb_functional.quantize_4bit(x, blocksize=64, quant_type="nf4")
        two_d = bnb_functional.dequantize_4bit(packed, state).reshape(shape)
        ours = nf4.dequantize_nf4(q)
        if not torch.equal(ours, two_d):
            assert shape[-1] % 64 != 0, f"bitsandbytes' 2-D dequantize disagrees for {shape} although rows align"
        flat = bnb_dequantize_flat(packed.reshape(-1), state.absmax, x.numel(), x.dtype, 64)
        assert torch.equal(ours.reshape(-1), flat)


# --- double quantization ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_double_quantization_matches_state2(seed):
    gen = torch.Generator().manual_seed(seed)
    blocksize = nf4.BNB_BLOCKSIZES[seed % 8]
    n = int(torch.randint(1, 150_000, (1,), generator=gen))
    x = torch.randn(n, generator=gen) * (1 + 5 * torch.rand(n, generator=gen))
    _, state = bnb_functional.quantize_4bit(x, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
    dq = nf4.double_quantize(nf4.quantize_nf4(x, blocksize).absmax)
    assert torch.equal(dq.offset, state.offset)
    assert torch.equal(dq.codes, state.absmax)
    assert torch.equal(dq.absmax2, state.state2.absmax)
    theirs = bnb_functional.dequantize_blockwise(state.absmax, state.state2) + state.offset
    assert torch.equal(nf4.double_dequantize(dq), theirs)


def test_double_quantization_single_block_of_scales():
    # one absmax only: centred value 0, second-level absmax 0 -> bitsandbytes writes code 0
    x = torch.randn(50)
    _, state = bnb_functional.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    dq = nf4.double_quantize(nf4.quantize_nf4(x, 64).absmax)
    assert torch.equal(dq.codes, state.absmax) and torch.equal(dq.absmax2, state.state2.absmax)
    assert torch.equal(nf4.double_dequantize(dq), nf4.quantize_nf4(x, 64).absmax)


def test_bitsandbytes_8bit_rule_is_a_lookup_not_the_nearest_level():
    """bitsandbytes' CPU 8-bit quantizer reads levels off a 65,536-point grid: near zero, where the
    dynamic map's levels are closer than the grid spacing, it can miss the nearest level."""
    gen = torch.Generator().manual_seed(0)
    n = 256 * 800
    values = (torch.rand(n, generator=gen) * 2 - 1) * torch.logspace(-6, 0, n)[torch.randperm(n, generator=gen)]
    code = nf4.dynamic_code()
    lut, am = nf4.quantize_blockwise_8bit(values, code, 256, rule="bitsandbytes")
    near, _ = nf4.quantize_blockwise_8bit(values, code, 256, rule="nearest")
    theirs, state = bnb_functional.quantize_blockwise(values, blocksize=256)
    assert torch.equal(lut, theirs) and torch.equal(am, state.absmax)
    assert (near != lut).any()
    scaled = values.view(-1, 256) / am[:, None]
    err_near = (code[near.long()].view(-1, 256) - scaled).abs()
    err_lut = (code[lut.long()].view(-1, 256) - scaled).abs()
    assert (err_near <= err_lut + 1e-7).all()  # nearest is never worse


def test_bits_per_parameter_formula_and_measured_storage():
    assert nf4.bits_per_parameter(64) == 4.5
    assert nf4.bits_per_parameter(64, double_quant=True) == 4 + 8 / 64 + 32 / (64 * 256)
    assert abs(nf4.bits_per_parameter(64, double_quant=True) - 4.127) < 5e-4
    w = torch.randn(1024, 1024)
    q = nf4.quantize_nf4(w, 64)
    assert q.nbytes * 8 / w.numel() == 4.5
    dq = nf4.double_quantize(q.absmax)
    measured = (q.packed.numel() + dq.nbytes) * 8 / w.numel()
    assert abs(measured - nf4.bits_per_parameter(64, double_quant=True)) < 32 / w.numel() + 1e-12  # + the offset
    with pytest.raises(ValueError, match="blocksize"):
        nf4.bits_per_parameter(0)


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, blocksize, match", [
    (torch.arange(10), 64, "x.dtype"),
    (torch.randn(10).double(), 64, "x.dtype"),
    (torch.empty(0), 64, "empty"),
    (torch.tensor([1.0, float("nan")]), 64, "NaN"),
    (torch.tensor([1.0, float("inf")]), 64, "infinity"),
    (torch.randn(10), 0, "blocksize"),
    (torch.randn(10), 64.0, "blocksize"),
    ([1.0, 2.0], 64, "x must be a torch.Tensor"),
])
def test_bad_input_names_the_argument(x, blocksize, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nf4.quantize_nf4(x, blocksize)


def test_dequantize_rejects_wrong_things():
    with pytest.raises(TypeError, match="NF4Tensor"):
        nf4.dequantize_nf4(torch.zeros(4))
    q = nf4.quantize_nf4(torch.randn(100), 64)
    with pytest.raises(ValueError, match="absmax"):
        nf4.dequantize_nf4(q, absmax=torch.ones(5))
    with pytest.raises(ValueError, match="absmax"):
        nf4.double_quantize(torch.ones(3, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_double_quantize_refuses_non_finite_scales(bad):
    """quantize_nf4 refuses NaN/inf; the second level must too, or one bad scale turns every scale into NaN."""
    with pytest.raises(ValueError, match="NaN or infinity"):
        nf4.double_quantize(torch.tensor([1.0, bad, 2.0]))


@pytest.mark.parametrize("blocksize, numel", [(33, 3 * nf4.CPU_CHUNK + 1001), (64, 2 * nf4.CPU_CHUNK + 37),
                                              (4096, nf4.CPU_CHUNK + 4097)])
def test_chunked_dequantize_equals_the_one_pass_formula(blocksize, numel):
    """CPU dequantize runs in cache-sized chunks: chunk seams, odd blocksizes and a ragged last block must
    not change a single value of codebook[code] * absmax (computed here in one pass over unpacked codes)."""
    x = torch.randn(numel, generator=torch.Generator().manual_seed(numel)).to(torch.bfloat16)
    q = nf4.quantize_nf4(x, blocksize)
    codes = nf4.unpack_nibbles(q.packed, numel)
    scales = q.absmax.repeat_interleave(blocksize)[:numel]
    expected = (nf4.NF4_CODE[codes] * scales).to(torch.bfloat16)
    assert torch.equal(nf4.dequantize_nf4(q), expected)


# --- the fast paths: grid lookup, int16 packing, chunks over threads ----------------------------------

def grid_probe_values(code):
    """Every place a lookup grid can go wrong: each midpoint and its float neighbours, each grid-cell edge
    and its neighbours, +-1 and one ulp beyond, zeros, subnormals, and a dense random fill."""
    mids = nf4.nf4_midpoints(code)
    k = 1 << 16  # the finest grid level_index may pick: its edges include every coarser grid's edges
    edges = (torch.arange(0, 2 * k + 1, dtype=torch.float64) / k - 1).float()
    centre = torch.cat([mids, edges, torch.tensor([1.0, -1.0, 0.0, -0.0, 1e-45, -1e-45, 1e-39])])
    up, down = torch.tensor(float("inf")), torch.tensor(float("-inf"))
    values = [centre]
    ups, downs = centre, centre
    for _ in range(3):
        ups, downs = torch.nextafter(ups, up), torch.nextafter(downs, down)
        values += [ups, downs]
    values.append(torch.rand(200_000, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    return torch.cat(values).clamp(-1.0000001, 1.0000001)  # |scaled| never exceeds 1 by more than an ulp


@pytest.mark.parametrize("name", ["nf4", "fp4", "int4"])
def test_level_index_equals_the_binary_search_everywhere(name):
    code = {"nf4": nf4.NF4_CODE, "fp4": nf4.fp4_code(), "int4": nf4.int4_code()}[name]
    code = code.sort().values
    s = grid_probe_values(code)
    assert torch.equal(nf4.level_index(s, code).long(), nf4.nearest_code(s, code))


def close_midpoint_code():
    """A sorted 16-level code with one midpoint 2^-25 below the grid edge 0.4375, where (s + 1) * 16 rounds up."""
    m = 0.4375 - 2.0 ** -25
    code = torch.linspace(-1, 1, 16)
    code[10], code[11] = m - 2.0 ** -6, m + 2.0 ** -6
    assert nf4.nf4_midpoints(code)[10].item() == m
    return code, torch.tensor([m], dtype=torch.float32)


def test_level_index_needs_its_rounding_margin(monkeypatch):
    code, m = close_midpoint_code()
    s = torch.cat([m, torch.nextafter(m, torch.tensor(1.0)), torch.nextafter(m, torch.tensor(-1.0))])
    assert torch.equal(nf4.level_index(s, code).long(), nf4.nearest_code(s, code))
    monkeypatch.setattr(nf4, "GRID_MARGIN", 0.0)  # a grid cut at the exact cell edges misfiles m itself
    nf4._grid_tables.cache_clear(), nf4._grid_tensors.cache_clear()
    try:
        assert not torch.equal(nf4.level_index(s, code).long(), nf4.nearest_code(s, code))
    finally:
        nf4._grid_tables.cache_clear(), nf4._grid_tensors.cache_clear()


def test_level_index_falls_back_when_no_grid_separates_the_midpoints():
    code = torch.linspace(-1, 1, 16)
    code[8] = code[9] = code[7]  # three equal levels: two equal midpoints, which no grid cell can tell apart
    assert nf4._grid_tables(tuple(nf4.nf4_midpoints(code).double().tolist())) is None
    s = grid_probe_values(code)
    assert torch.equal(nf4.level_index(s, code).long(), nf4.nearest_code(s, code))


def test_ties_upward_in_the_grid_would_be_caught():
    s = nf4.nf4_midpoints()
    right = nf4.level_index(s)
    k, low, threshold = nf4._grid_tensors(tuple(nf4.nf4_midpoints().double().tolist()), "cpu")
    cell = s.mul(k).add_(k).int()
    upward = torch.index_select(low, 0, cell) + torch.ge(s, torch.index_select(threshold, 0, cell))
    assert torch.equal(right.long(), torch.arange(15)) and not torch.equal(upward, right)


@pytest.mark.parametrize("threads", [1, 2])
def test_threaded_chunks_are_byte_exact_and_restore_the_thread_count(monkeypatch, threads):
    """With tiny chunks, two threads claim them in whatever order the scheduler picks; the bytes must not
    depend on it, and the caller's thread setting must survive."""
    monkeypatch.setattr(nf4, "CPU_CHUNK", 256)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(threads)
        for blocksize, numel in [(64, 64 * 101 + 13), (128, 128 * 37 + 1), (32, 32 * 64), (4096, 4096 * 3 + 5)]:
            x = (torch.randn(numel, generator=gen) * 3).to(torch.bfloat16)
            q, packed, state = assert_same_bytes(x, blocksize)
            theirs = bnb_dequantize_flat(packed, state.absmax, numel, x.dtype, blocksize)
            assert torch.equal(nf4.dequantize_nf4(q).reshape(-1), theirs)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_a_bad_value_deep_in_a_threaded_run_is_reported(monkeypatch):
    monkeypatch.setattr(nf4, "CPU_CHUNK", 256)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(64 * 200)
        x[64 * 150 + 3] = float("nan")
        with pytest.raises(ValueError, match="NaN or infinity"):
            nf4.quantize_nf4(x, 64)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_non_nf4_codebooks_keep_their_order():
    """FP4's levels are stored in bit-pattern order, not sorted: the fast path must map back."""
    x = torch.randn(64 * 40 + 7)
    code = nf4.fp4_code()
    order = torch.argsort(code, stable=True)
    expected = order[nf4.nearest_code(nf4._scale_blocks(x, 64)[0], code[order])]
    q = nf4.quantize_4bit_with_code(x, code, 64)
    assert torch.equal(nf4.unpack_nibbles(q.packed, x.numel()), expected)
