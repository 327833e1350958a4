"""The interview question banks (quizzes/bank) and drafts (quizzes/drafts), vetted.

- every file parses with `parse_bank`, and `validate` finds no problem (dead `see` links included) in the bank;
- no item id appears twice across banks and drafts;
- the size and mix rules of issue 5 hold for every chapter file that claims to be complete
  (a draft still being written says `complete: false` at its top level);
- cheap consistency checks that catch answer-key slips (a wrong option whose feedback says "Right");
- every numeric answer is recomputed here from the assumptions its prompt states, and by calling the
  `ftlab` function that computes it where one exists (memory estimator, NF4 bits per parameter,
  LoRA parameter count), so a key and the code cannot drift apart;
- (slow) every free-text model answer passes the course's own free-text scorer against its key points.
"""

from __future__ import annotations

import functools
import io
import math
import re
from pathlib import Path

import pytest
import yaml

from ftlab.quiz import stats
from ftlab.quiz.bank import BANK_DIR, REPO, parse_bank, validate

DRAFTS_DIR = REPO / "quizzes" / "drafts"
BANKS = sorted(BANK_DIR.glob("*.yaml"))
DRAFTS = sorted(DRAFTS_DIR.glob("*.yaml"))
FILES = BANKS + DRAFTS
CHAPTERS = [f"{n:02d}" for n in range(11)]


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> tuple:
    return tuple(parse_bank(path))


def _items(path: Path) -> list:
    items, problems = _parsed(path)[:2]
    assert not problems, "\n".join(map(str, problems))
    return items


def _all_items() -> list:
    return [item for path in FILES for item in _items(path)]


@functools.lru_cache(maxsize=None)
def _claims_complete(path: Path) -> bool:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data.get("complete", True) is not False


# --- structure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", FILES, ids=_name)
def test_file_parses_without_problems(path):
    assert _items(path), f"{_name(path)} has no items"


def test_bank_links_resolve():
    problems = validate(BANK_DIR, REPO)
    assert not problems, "quizzes/bank must only hold banks whose links resolve; move the file to quizzes/drafts " \
                         "until its chapter has these headings:\n" + "\n".join(map(str, problems))


def test_bank_files_are_complete():
    unfinished = [_name(p) for p in BANKS if not _claims_complete(p)]
    assert not unfinished, f"only complete banks belong in quizzes/bank: {unfinished}"


def test_no_duplicate_ids_across_banks_and_drafts():
    seen, dups = {}, []
    for path in FILES:
        result = _parsed(path)
        for item_id in result[2] if len(result) > 2 else [i.id for i in result[0]]:  # raw ids where available
            if item_id in seen:
                dups.append(f"{item_id} in {_name(path)} and {seen[item_id]}")
            seen.setdefault(item_id, _name(path))
    assert not dups, "duplicate ids:\n" + "\n".join(dups)


def test_every_chapter_has_exactly_one_file():
    by_chapter = {}
    for path in FILES:
        by_chapter.setdefault(path.name[:2], []).append(_name(path))
    assert sorted(by_chapter) == CHAPTERS, f"chapters with a bank or draft: {sorted(by_chapter)}"
    assert all(len(v) == 1 for v in by_chapter.values()), {k: v for k, v in by_chapter.items() if len(v) > 1}


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_links_point_into_the_files_own_chapter(path):
    notebook = f"chapters/{path.stem}.ipynb"
    for item in _items(path):
        target, anchor = item.see.split("#", 1)
        assert target == notebook, f"{item.id}: links to {target}, expected {notebook}"
        assert re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", anchor), \
            f"{item.id}: anchor {anchor!r} must be a plain heading (words joined by '-', no punctuation)"


# --- size and mix (issue 5) --------------------------------------------------------------------------

@pytest.mark.parametrize("path", [p for p in FILES if _claims_complete(p)], ids=_name)
def test_size_and_mix(path):
    items = _items(path)
    n = len(items)
    minimum = 10 if path.name.startswith("00_") else 30
    assert n >= minimum, f"{n} items, need >= {minimum}"
    per_level = {d: sum(i.difficulty == d for i in items) for d in range(1, 6)}
    assert all(c >= 4 for c in per_level.values()), f"items per difficulty {per_level}, need >= 4 at each level"
    free = sum(i.kind == "free_text" for i in items)
    numeric = sum(i.kind == "numeric" for i in items)
    assert (free + numeric) / n >= 0.20, f"numeric + free-text = {free + numeric}/{n}, need >= 20 %"
    assert free / n >= 0.25, f"free-text = {free}/{n}, need >= 25 %"


def test_total_across_chapters():
    complete = [p for p in FILES if _claims_complete(p)]
    assert sum(len(_items(p)) for p in complete) >= 310


# --- answer-key consistency ----------------------------------------------------------------------------

_POSITIVE = re.compile(r"^(right|correct|yes|exactly|true)\b", re.I)
_NEGATIVE = re.compile(r"^(no|wrong|false|incorrect|not quite)\b", re.I)


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_choice_items_are_well_formed(path):
    for item in _items(path):
        if item.kind not in ("single", "multi"):
            continue
        assert len(item.choices) >= 3, f"{item.id}: give at least three options"
        feedback = [c.feedback for c in item.choices]
        assert len(set(feedback)) == len(feedback), f"{item.id}: two options share the same feedback"
        correct = {item.answer} if item.kind == "single" else set(item.answer)
        if item.kind == "multi":
            assert correct != {c.id for c in item.choices}, f"{item.id}: every option is correct; add a wrong one"
        for c in item.choices:
            if c.id in correct:
                assert not _NEGATIVE.match(c.feedback), f"{item.id}: keyed option {c.id!r} has negative feedback"
            else:
                assert not _POSITIVE.match(c.feedback), f"{item.id}: wrong option {c.id!r} has feedback that affirms it"


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_every_item_teaches(path):
    for item in _items(path):
        assert len(item.explanation) >= 60, f"{item.id}: the explanation should teach, not just restate the key"
        if item.kind == "free_text":
            assert len(item.model_answer) >= 200, f"{item.id}: model answer too short for an interview answer"
            assert len(set(item.key_points)) == len(item.key_points), f"{item.id}: repeated key point"
            for point in item.key_points:
                assert len(point.split()) >= 5, f"{item.id}: key point {point!r} is not a self-contained idea"
        if item.kind == "numeric":
            assert item.tolerance <= 0.15 * abs(item.value) or item.value == 0, \
                f"{item.id}: tolerance {item.tolerance} is loose for {item.value}"
            assert item.tolerance > 0 or float(item.value).is_integer(), f"{item.id}: non-integer key needs a tolerance"


# --- numeric answers, recomputed ------------------------------------------------------------------------
# Each entry recomputes the key from the assumptions stated in the item's prompt. GB = 1e9 bytes.

GB = 1e9


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _gae(rewards, values, gamma, lam):
    """Advantages by the GAE recursion, value 0 after the last step."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        running = rewards[t] + gamma * next_value - values[t] + gamma * lam * running
        advantages[t] = running
    return advantages


def _lora_shapes_7b(modules_per_layer: int, layers: int = 32, d: int = 4096):
    return [(d, d)] * (modules_per_layer * layers)


RECOMPUTE = {
    # chapter 00
    "ch00-linear-probe-params": lambda: 768 * 3 + 3,
    "ch00-lora-layer-params": lambda: 8 * (4096 + 4096),
    "ch00-storage-many-tasks": lambda: 50 * 7e9 * 2 / GB,
    "ch00-lora-share-7b": lambda: 100 * 32 * 2 * 16 * (4096 + 4096) / 6.74e9,
    # chapter 01
    "ch01-head-params": lambda: 384 * 2 + 2,
    "ch01-forgetting-drop": lambda: 90 - 72,
    "ch01-steps-per-run": lambda: 3 * math.ceil(10_000 / 32),
    "ch01-unfreeze-epoch": lambda: 1 + 6,
    "ch01-schedule-value": lambda: 2 * (1 - (500 - 100) / (1000 - 100)),
    # chapter 02
    "ch02-token-weighted-loss": lambda: (100 * 2.0 + 300 * 1.0) / (100 + 300),
    "ch02-ddp-effective-batch": lambda: 4 * 8 * 2,
    "ch02-bytes-per-param": lambda: 2 + 2 + 4 + 4 + 4,
    "ch02-7b-full-ft-memory": lambda: 7e9 * 16 / GB,
    "ch02-7b-bf16-weights": lambda: 7e9 * 2 / GB,
    "ch02-checkpointed-activations": lambda: 32 * 4 * 2048 * 4096 * 2 / GB,
    "ch02-zero3-per-gpu": lambda: 7e9 * 16 / 8 / GB,
    # chapter 03
    "ch03-scaling-value": lambda: 32 / 8,
    "ch03-up-proj-params": lambda: 16 * (4096 + 11008),
    "ch03-break-even-rank": lambda: 4096 * 4096 / (4096 + 4096),
    "ch03-rslora-value": lambda: 16 / math.sqrt(64),
    "ch03-adapter-size": lambda: 4_194_304 * 2 / 1e6,
    "ch03-all-linear-7b": lambda: 32 * 8 * (4 * (4096 + 4096) + 3 * (4096 + 11008)) / 1e6,
    "ch03-adapter-storage-100": lambda: (7e9 * 2 + 100 * 4_194_304 * 2) / GB,
    # chapter 05 (adapter = down + up projection with biases)
    "ch05-bottleneck-size": lambda: 768 / 16,
    "ch05-adapter-params": lambda: 2 * 768 * 48 + 48 + 768,
    "ch05-prompt-params": lambda: 20 * 4096,
    "ch05-minilm-houlsby": lambda: 6 * 2 * (2 * 384 * (384 // 16) + 384 // 16 + 384),
    "ch05-prefix-params": lambda: 32 * 2 * 20 * 4096 / 1e6,
    "ch05-ia3-params": lambda: 32 * (4096 + 4096 + 11008),
    # chapter 06
    "ch06-perplexity": lambda: math.exp(2.0),
    "ch06-target-count": lambda: 20 + 1,
    "ch06-padding-waste": lambda: 100 * (4 * 400 - (100 + 200 + 300 + 400)) / (4 * 400),
    "ch06-packing-speedup": lambda: 1 / (1 - 0.375),
    "ch06-packed-sequences": lambda: math.ceil(10_000 * 300 / 2048),
    # chapter 07 (Bradley-Terry: P = sigmoid(r_c - r_r), loss = -log P)
    "ch07-bt-probability": lambda: _sigmoid(2.5 - 0.5),
    "ch07-bt-loss-value": lambda: -math.log(_sigmoid(1.5 - 0.5)),
    "ch07-loss-at-init": lambda: -math.log(_sigmoid(0.0)),
    "ch07-grad-at-zero": lambda: 1 - _sigmoid(0.0),
    "ch07-k-responses": lambda: math.comb(9, 2),
    # chapter 08
    "ch08-dpo-init-loss": lambda: -math.log(_sigmoid(0.0)),
    "ch08-shaped-reward-sum": lambda: 1.0 - 0.1 * (0.3 + 0.1 - 0.2),
    "ch08-dpo-loss-value": lambda: -math.log(_sigmoid(0.1 * ((-10 - -11) - (-15 - -14)))),
    "ch08-clip-positive": lambda: min(1.5 * 2, min(max(1.5, 0.8), 1.2) * 2),
    "ch08-clip-negative": lambda: min(0.5 * -2, min(max(0.5, 0.8), 1.2) * -2),
    "ch08-gae-hand": lambda: _gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=1.0, lam=0.95)[0],
    # chapter 09
    "ch09-f1-value": lambda: 2 * 0.8 * 0.5 / (0.8 + 0.5),
    "ch09-win-rate": lambda: 100 * (60 + 0.5 * 10) / 100,
    "ch09-temperature-mixing": lambda: 100 ** 0.5 / (900 ** 0.5 + 100 ** 0.5),
    "ch09-std-error": lambda: 100 * math.sqrt(0.8 * 0.2 / 200),
    "ch09-kappa": lambda: (0.7 - 0.5) / (1 - 0.5),
    # chapter 10 (prices as stated in the prompts)
    "ch10-token-fertility": lambda: 3.2 / 1.3,
    "ch10-prompt-cost": lambda: 1_000_000 * 2000 / 1e6 * 0.50,
    "ch10-break-even": lambda: 5000 / 900,
    "ch10-train-cost": lambda: 3 * 50e6 / 2500 / 3600 * 2,
    "ch10-rag-token-cost": lambda: 1_000_000 * 5 * 300 / 1e6 * 0.50,
    # chapter 04 (NF4 levels 0.0796 / 0.1609 as stated in the prompt; bits = codes + amortised scales)
    "ch04-nf4-bytes-7b": lambda: 7e9 * 0.5 / GB,
    "ch04-bits-single": lambda: 4 + 32 / 64,
    "ch04-blocks-count": lambda: 4096 * 4096 / 64,
    "ch04-dequant-value": lambda: (0.1609 if 0.05 / 0.4 > (0.0796 + 0.1609) / 2 else 0.0796) * 0.4,
    "ch04-double-quant-bits": lambda: 4 + 8 / 64 + 32 / (64 * 256),
    "ch04-dq-saving-65b": lambda: (4.5 - (4 + 8 / 64 + 32 / (64 * 256))) * 65e9 / 8 / GB,
    "ch04-qlora-7b-states": lambda: (7e9 * 0.5 + 7e9 * (1 / 64 + 4 / (64 * 256)) + 159_907_840 * 16) / GB,
}


def _costs():
    costs = pytest.importorskip("ftlab.costs")
    if not hasattr(costs, "api_cost"):
        pytest.skip("ftlab.costs.api_cost has not landed")
    return costs


def _train():
    return pytest.importorskip("ftlab.train")


def _first_epoch_all_blocks_train(n_blocks: int) -> int:
    """With one unfreezing stage per epoch (head only in epoch 1), the first epoch in which the head and all
    blocks train, by ftlab.transfer.unfrozen_groups (groups: head, blocks top-down, embeddings)."""
    transfer = pytest.importorskip("ftlab.transfer")
    n_groups = 1 + n_blocks + 1
    return next(epoch for epoch in range(1, 100)
                if transfer.unfrozen_groups(epoch - 1, steps_per_stage=1, n_groups=n_groups) >= 1 + n_blocks)


def _estimate(**kw):
    train = pytest.importorskip("ftlab.train")
    if not hasattr(train, "estimate_memory"):
        pytest.skip("ftlab.train.estimate_memory has not landed")
    return train.estimate_memory(**kw)


def _nf4_bits(**kw):
    nf4 = pytest.importorskip("ftlab.quant.nf4")
    return nf4.bits_per_parameter(**kw)


def _lora_count(shapes, r):
    lora = pytest.importorskip("ftlab.tuners.lora")
    return lora.lora_param_count(shapes, r)


def _nf4_roundtrip(values, blocksize=64):
    nf4 = pytest.importorskip("ftlab.quant.nf4")
    import torch

    x = torch.zeros(blocksize)
    x[: len(values)] = torch.tensor(values)
    return nf4.dequantize_nf4(nf4.quantize_nf4(x, blocksize=blocksize))


def _lora_scaling(r, alpha, use_rslora=False):
    lora = pytest.importorskip("ftlab.tuners.lora")
    import torch

    return lora.LoRALinear(torch.nn.Linear(8, 8), r=r, alpha=alpha, use_rslora=use_rslora).scaling


@functools.lru_cache(maxsize=None)
def _lora_on_llama2_7b(target_modules, r):
    """Trainable parameters after ftlab's add_lora on a Llama-2-7B-shaped model built on the meta device."""
    lora = pytest.importorskip("ftlab.tuners.lora")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         vocab_size=32000)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    lora.add_lora(model, target_modules if isinstance(target_modules, str) else list(target_modules), r=r, alpha=2 * r)
    return lora.count_trainable(model)


# The same keys, computed by the course's own code.
RECOMPUTE_WITH_FTLAB = {
    "ch00-lora-layer-params": lambda: _lora_count([(4096, 4096)], 8),
    "ch00-lora-share-7b": lambda: 100 * _lora_count(_lora_shapes_7b(2), 16) / 6.74e9,
    "ch01-schedule-value": lambda: 2 * _train().lr_factor(500, warmup=100, total=1000, schedule="linear"),
    "ch01-unfreeze-epoch": lambda: _first_epoch_all_blocks_train(n_blocks=6),
    "ch02-checkpointed-activations": lambda: (
        _estimate(n_params=0, dtype="bf16", batch=4, seq_len=2048, n_layers=32, hidden=4096, grad_checkpointing=True)
        .activations
        - _estimate(n_params=0, dtype="bf16", batch=4, seq_len=2048, n_layers=1, hidden=4096).activations) / GB,
    "ch02-zero3-per-gpu": lambda: _estimate(n_params=7e9, method="full", dtype="bf16").total / 8 / GB,
    "ch00-storage-many-tasks": lambda: 50 * _costs().storage_gb(7e9, bytes_per_param=2),
    "ch02-bytes-per-param": lambda: _estimate(n_params=1, method="full", optimizer="adamw", dtype="bf16").total,
    "ch02-7b-full-ft-memory": lambda: _estimate(n_params=7e9, method="full", dtype="bf16").total / GB,
    "ch02-7b-bf16-weights": lambda: _estimate(n_params=7e9, method="lora", dtype="bf16").weights / GB,
    "ch03-scaling-value": lambda: _lora_scaling(8, 32),
    "ch03-rslora-value": lambda: _lora_scaling(64, 16, use_rslora=True),
    "ch03-up-proj-params": lambda: _lora_count([(11008, 4096)], 16),
    "ch03-all-linear-7b": lambda: _lora_on_llama2_7b("all-linear", 8) / 1e6,
    "ch03-adapter-size": lambda: _lora_on_llama2_7b(("q_proj", "v_proj"), 8) * 2 / 1e6,
    "ch04-bits-single": lambda: _nf4_bits(blocksize=64, double_quant=False),
    "ch04-double-quant-bits": lambda: _nf4_bits(blocksize=64, double_quant=True, dq_blocksize=256),
    "ch04-dq-saving-65b": lambda: (_nf4_bits(blocksize=64) - _nf4_bits(blocksize=64, double_quant=True))
    * 65e9 / 8 / GB,
    "ch04-dequant-value": lambda: _nf4_roundtrip([0.4, 0.05])[1].item(),  # absmax 0.4, weight 0.05
    "ch04-nf4-bytes-7b": lambda: _estimate(n_params=7e9, method="qlora").weights / GB,
    "ch04-qlora-7b-states": lambda: _estimate(n_params=7e9, method="qlora", optimizer="paged_adamw",
                                              lora_params=_lora_on_llama2_7b("all-linear", 64),
                                              double_quant=True, nf4_blocksize=64).total / GB,
    "ch10-prompt-cost": lambda: _costs().api_cost(1_000_000, 2000, 0, _costs().Prices(api_input_per_mtok=0.50)),
    "ch10-rag-token-cost": lambda: _costs().api_cost(1_000_000, 5 * 300, 0, _costs().Prices(api_input_per_mtok=0.50)),
}


@functools.lru_cache(maxsize=None)
def _numeric_items() -> dict:
    return {item.id: item for item in _all_items() if item.kind == "numeric"}


def test_every_numeric_item_is_recomputed():
    missing = sorted(set(_numeric_items()) - set(RECOMPUTE))
    assert not missing, f"add a recomputation to RECOMPUTE for: {missing}"
    stale = sorted(set(RECOMPUTE) - set(_numeric_items()))
    assert not stale, f"RECOMPUTE names items that no longer exist or are not numeric: {stale}"


def _agrees(item, computed: float) -> bool:
    # The key may be rounded for display, but never by more than a quarter of its tolerance.
    return math.isclose(item.value, computed, rel_tol=1e-9, abs_tol=max(1e-9, item.tolerance / 4))


@pytest.mark.parametrize("item_id", sorted(RECOMPUTE))
def test_numeric_key_matches_its_assumptions(item_id):
    item = _numeric_items()[item_id]
    computed = float(RECOMPUTE[item_id]())
    assert _agrees(item, computed), f"{item_id}: key {item.value} +- {item.tolerance}, recomputed {computed}"


@pytest.mark.parametrize("item_id", sorted(RECOMPUTE_WITH_FTLAB))
def test_numeric_key_matches_ftlab(item_id):
    item = _numeric_items()[item_id]
    computed = float(RECOMPUTE_WITH_FTLAB[item_id]())
    assert _agrees(item, computed), f"{item_id}: key {item.value} +- {item.tolerance}, ftlab computes {computed}"


# --- stats -----------------------------------------------------------------------------------------------

def test_stats_counts_every_item_once_per_chapter():
    out = io.StringIO()
    chapters = stats.print_stats(include_drafts=True, file=out)
    assert sum(c.total.items for c in chapters.values()) == len(_all_items())
    for c in chapters.values():
        assert sum(c.total.difficulty.values()) == sum(c.total.kind.values()) == c.total.items
        assert sum(t.items for t in c.topics.values()) >= c.total.items  # an item may carry several topics
    text = out.getvalue()
    assert "chapter 00 (total)" in text and "all chapters" in text
    with pytest.raises(TypeError, match="paths"):
        stats.collect(BANK_DIR)


# --- free-text answers against the scorer (loads MiniLM) -----------------------------------------------

@pytest.mark.slow
def test_model_answers_pass_the_free_text_scorer():
    from ftlab.quiz import scoring

    failing = []
    for item in _all_items():
        if item.kind != "free_text":
            continue
        result = scoring.score(item.model_answer, list(item.key_points))
        if result.score < scoring.PASS:
            failing.append(f"{item.id}: {result.score:.2f}, missed {result.misses}")
    assert not failing, "model answers the scorer would mark wrong:\n" + "\n".join(failing)
