"""Free-text scorer: MiniLM cosine against key points, and what it must refuse to credit.

CALIBRATION holds answers to the bank's free-text items, labelled with the key points each one
really makes (strong, partial, vague, and confidently off the point): a check of the per-key-point
threshold. The pass rule itself is measured on the larger labelled set of tools/eval_freetext.py
(data/freetext/labelled.jsonl plus generated salad, term lists, echoes, off-topic and over-long
answers); the regression test at the end holds it above floors set from that measurement.
"""

import importlib.util
import random
import time
from pathlib import Path

import pytest

from ftlab.quiz import bank, scoring, session

EVAL = Path(__file__).resolve().parents[1] / "tools" / "eval_freetext.py"

# item id -> list of (answer, indices of the key points the answer makes)
CALIBRATION = {
    "ch00-explain-three-ways": [
        ("In full fine-tuning every parameter of the network is trained, so you need memory for all the "
         "gradients and a separate copy of the model for each task. Feature extraction freezes the "
         "pretrained encoder and you only fit a classifier head on top of its embeddings. PEFT like LoRA "
         "keeps the base frozen and trains a few extra low-rank matrices. Which one I use depends on how "
         "much data I have, the domain gap, my GPU budget and how many tasks I need to serve.", [0, 1, 2, 3]),
        ("Feature extraction means the pre-trained model is not updated, we just train a new output layer "
         "on its features. LoRA is a parameter efficient method that adds small trainable matrices while "
         "the original weights stay frozen.", [1, 2]),
        ("They are all ways to make the model better at your task. You train it on your data and it "
         "learns, some are faster than others.", []),
        ("Full fine-tuning is when you write a really long prompt with many examples, feature extraction "
         "is when you extract keywords from the text with regex.", []),
    ],
    "ch00-explain-pipeline": [
        ("First I pick a base model and check how well it does with plain prompting, that is my baseline. "
         "Then I gather and clean the data, format it for the model and keep a held-out eval split aside "
         "before training. I train, say with LoRA, and watch the train and validation loss curves. After "
         "training I evaluate on the task metric and also check general benchmarks for forgetting. Then "
         "I deploy it and monitor how it behaves in production.", [0, 1, 2, 3, 4]),
        ("I would clean up the dataset, convert it to the chat template and split off a test set. Then "
         "fine-tune and look at the loss curves for training and validation.", [1, 2]),
        ("You get a GPU, load the model with transformers, call trainer.train() and push it to the hub.", []),
        ("Machine learning projects need good communication with stakeholders and a clear roadmap "
         "with milestones.", []),
    ],
    "ch00-explain-data-efficiency": [
        ("Because the model already learned general representations of language during pre-training on "
         "an enormous corpus. Fine-tuning just adapts that knowledge to the specific task or output format, "
         "and since we start from good weights only a few gradient steps are needed.", [0, 1, 2]),
        ("The pretrained network already knows grammar and a lot of facts from its huge training set.", [0]),
        ("Because fine-tuning datasets are usually smaller.", []),
        ("Fine-tuning uses a special optimizer that converges in one step.", []),
    ],
    "ch02-explain-token-norm": [
        ("Each micro-batch can have a different number of real target tokens because of padding and the "
         "masked prompt part. If you average the mean loss of each micro-batch, every micro-batch gets the "
         "same weight, so tokens in a small micro-batch count more than tokens in a big one. So the "
         "accumulated gradient is not the same as the gradient of the big batch. To fix it you sum the "
         "per-token losses and divide by the total number of target tokens across the whole optimizer step.",
         [0, 1, 2, 3]),
        ("The problem is that the micro-batches have different token counts due to padding and masking. "
         "You should normalise by the total number of tokens in the whole accumulation step, not per "
         "micro-batch.", [0, 3]),
        ("Gradient accumulation lets you use a bigger batch than fits in memory, you just call backward "
         "several times before stepping.", []),
        ("The pitfall is that accumulation makes training slower because the GPU is idle, so use a "
         "larger learning rate to compensate.", []),
    ],
    "ch02-explain-precision": [
        ("bf16 has 8 exponent bits like fp32, so the range is the same but precision is lower. fp16 has "
         "only 5 exponent bits, so small gradients underflow to zero. Loss scaling multiplies the loss by a "
         "big factor before backward and then unscales the gradients before the optimizer step. The dynamic "
         "scaler skips a step when it sees inf or NaN gradients and reduces the scale.", [0, 1, 2, 3]),
        ("With fp16 the range is small and tiny gradient values become zero. That is why you scale the "
         "loss up before backpropagation and divide the gradients back afterwards.", [1, 2]),
        ("bf16 and fp16 are both half precision formats that make training faster on modern GPUs.", []),
        ("Loss scaling means you weight the loss of each class by its frequency so rare classes matter "
         "more.", []),
    ],
    "ch02-explain-7b-24gb": [
        ("No. Full fine-tuning with AdamW in mixed precision takes about 16 bytes per parameter for the "
         "weights, gradients, fp32 master weights and the two Adam moments. For 7 billion parameters that is "
         "around 112 GB before activations, way more than 24 GB. Instead I would use QLoRA: quantize the "
         "frozen base to 4-bit and train only small LoRA adapters, which are the only parameters with "
         "gradients and optimizer state. I would also enable gradient checkpointing and use a micro-batch "
         "of 1 with gradient accumulation.", [0, 1, 2, 3]),
        ("It does not fit, 7B times 16 bytes is roughly 112 GB. I would use LoRA with the base frozen so "
         "only the adapters are trained.", [1, 2]),
        ("Maybe, if you use a smaller batch size it should work on a 24 GB card.", []),
        ("Yes, a 7B model is about 7 GB so it fits easily with room to spare.", []),
    ],
}


@pytest.fixture(scope="module")
def sims():
    """item id -> [(answer, covered indices, per-key-point cosines)]: MiniLM loads once for the module."""
    items = {i.id: i for i in bank.load_banks()}
    return {iid: [(ans, covered, scoring.similarities(ans, items[iid].key_points)) for ans, covered in answers]
            for iid, answers in CALIBRATION.items()}


def split(sims, chapter=None):
    pos, neg = [], []
    for iid, rows in sims.items():
        if chapter and not iid.startswith(f"ch{chapter}"):
            continue
        for _, covered, s in rows:
            for k, v in enumerate(s):
                (pos if k in covered else neg).append(v)
    return pos, neg


def balanced_accuracy(pos, neg, t):
    return (sum(p >= t for p in pos) / len(pos) + sum(n < t for n in neg) / len(neg)) / 2


def test_calibration_answers_match_bank_items():
    items = {i.id: i for i in bank.load_banks()}
    for iid, answers in CALIBRATION.items():
        assert items[iid].kind == "free_text"
        for _, covered in answers:
            assert all(0 <= k < len(items[iid].key_points) for k in covered)
    assert {iid[:4] for iid in CALIBRATION} == {"ch00", "ch02"}


def test_threshold_is_close_to_the_calibrated_one(sims):
    """THRESHOLD was chosen on whole answers (pass/no-pass on the labelled set's tune items); per key
    point, on these answers, it must still separate made from missing points almost as well as the
    best threshold for them."""
    pos, neg = split(sims)
    threshold, acc = scoring.calibrate(pos, neg)
    shipped = balanced_accuracy(pos, neg, scoring.THRESHOLD)
    print(f"\nkey points: {len(pos)} made, {len(neg)} missing; calibrated threshold {threshold:.3f}, "
          f"balanced accuracy {acc:.3f}; shipped THRESHOLD {scoring.THRESHOLD}: {shipped:.3f}")
    assert abs(threshold - scoring.THRESHOLD) < 0.06
    assert shipped >= 0.88 and acc - shipped < 0.02
    assert sum(pos) / len(pos) - sum(neg) / len(neg) > 0.3  # the two classes are far apart on average


def test_threshold_transfers_between_chapters(sims):
    """Calibrate on one chapter's answers, measure on the other's."""
    for fit, held_out in (("00", "02"), ("02", "00")):
        threshold, _ = scoring.calibrate(*split(sims, fit))
        acc = balanced_accuracy(*split(sims, held_out), threshold)
        print(f"\ncalibrated on ch{fit}: threshold {threshold:.3f}, held-out ch{held_out} balanced accuracy {acc:.3f}")
        assert acc >= 0.85


def test_strong_answers_pass_and_vague_or_wrong_ones_fail(sims):
    """The unambiguous rows: the strong answer (first) passes with every point, the vague and the
    wrong ones (last two) fail. The partial ones (second) sit at the pass line; they must make a point."""
    items = {i.id: i for i in bank.load_banks()}
    for iid, rows in sims.items():
        item = items[iid]
        results = [scoring.score(answer, item.key_points, prompt=item.prompt) for answer, _, _ in rows]
        assert results[0].passed and results[0].score >= 0.75, (iid, results[0].similarity)
        assert results[1].hits, (iid, results[1].similarity)
        assert not any(r.passed for r in results[2:]), (iid, [r.similarity for r in results[2:]])
        assert results[0].score > max(r.score for r in results[2:])


def test_hits_and_misses_name_the_key_points(sims):
    item = next(i for i in bank.load_banks() if i.id == "ch02-explain-7b-24gb")
    result = scoring.score("It does not fit, 7B times 16 bytes is roughly 112 GB.", item.key_points)
    # The negated clause ("does not fit") is set apart from the claim that makes the point.
    assert item.key_points[1] in result.hits
    assert item.key_points[3] in result.misses
    assert len(result.similarity) == len(item.key_points) and 0 < result.score < 1
    assert scoring.score("   ", item.key_points).score == 0


def test_embedding_is_mean_pooled_and_normalised(sims):
    import torch

    v = scoring.embed(["gradient accumulation", "a longer sentence about mixed precision training"])
    assert v.shape == (2, 384)
    assert torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-5)
    model, tok = scoring._encoder()
    batch = tok(["gradient accumulation"], return_tensors="pt").to(model.device)
    with torch.no_grad():
        mean = model(**batch).last_hidden_state[0].mean(0)  # one sentence, no padding: plain mean
    assert torch.allclose(v[0], torch.nn.functional.normalize(mean.cpu(), dim=0), atol=1e-5)
    # Padding must not change an embedding: the short sentence alone vs batched with a long one.
    scoring._cache.clear()
    assert torch.allclose(scoring.embed(["gradient accumulation"])[0], v[0], atol=1e-5)


def test_calibrate_picks_the_middle_of_the_gap():
    assert scoring.calibrate([0.8, 0.9], [0.1, 0.2]) == (pytest.approx(0.5), 1.0)
    threshold, acc = scoring.calibrate([0.6, 0.7, 0.3], [0.2, 0.4])
    assert acc == pytest.approx((2 / 3 + 1) / 2) and 0.4 < threshold <= 0.6


# --- what must not pass, what must, and the labelled-set regression ------------------------------

def _eval_tool():
    spec = importlib.util.spec_from_file_location("eval_freetext", EVAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def labelled():
    """(eval tool, items by id, hand-written rows by id)."""
    tool = _eval_tool()
    return tool, {i.id: i for i in bank.load_banks()}, {r["id"]: r for r in tool.load_labelled()}


ATTACKED = ["ch00-explain-three-ways", "ch02-explain-resume-design", "ch03-explain-lora", "ch05-explain-adapters",
            "ch07-explain-bt", "ch10-explain-rag-vs-ft"]


@pytest.mark.parametrize("iid", ATTACKED)
def test_salad_term_lists_and_echoes_get_no_pass(labelled, iid):
    tool, items, _ = labelled
    item = items[iid]
    for category, text in tool.attacks(item, "unused", "unused", random.Random(iid)):
        if category in ("off-topic", "too-long"):
            continue
        result = scoring.score(text, item.key_points, prompt=item.prompt)
        assert not result.passed, (category, text[:80], result.similarity)
        if category.startswith("salad"):
            assert result.set_aside, category  # said in the feedback, not silently scored low


def test_the_reviewers_salad_and_negation_get_no_pass():
    """R3 and R4 of the reliability review, as its repro script builds them."""
    items = {i.id: i for i in bank.load_banks()}
    item = items["ch02-explain-resume-design"]
    vocab = sorted({w.strip(".,;()").lower() for k in item.key_points for w in k.split() if len(w) > 3})
    r = random.Random(1)
    for n in (6, 25):
        salad = " ".join(" ".join(r.choice(vocab) for _ in range(10)).capitalize() + "." for _ in range(n))
        assert scoring.score(salad, item.key_points, prompt=item.prompt).score == 0
    lora = items["ch03-explain-lora"]
    negated = ("LoRA does not freeze the pre-trained weights and learns a full-rank update for every matrix. "
               "The update is not a product of thin matrices; the rank is huge. Almost all parameters are trained, "
               "so gradients and optimizer state need a lot of memory. The update can never be merged into the "
               "base weights, so inference always costs extra. Each task needs a full copy of the model, so tasks "
               "cannot share a base model.")
    result = scoring.score(negated, lora.key_points, prompt=lora.prompt)
    # "a lot of memory" for "little memory" is an antonym, not a negation: that hit stays.
    assert not result.passed and len(result.hits) <= 2, result.similarity


def test_a_negation_cancels_the_hit_it_would_make():
    kp = ["LoRA freezes the pre-trained weights and learns a low-rank update for selected weight matrices."]
    assert scoring.score("LoRA freezes the pretrained weights and learns a low-rank update.", kp).hits == kp
    assert scoring.score("LoRA does not freeze the pretrained weights and learns a low-rank update.", kp).hits == []
    assert scoring.negated("It can't be merged") and scoring.negated("It is never merged")
    assert not scoring.negated("Knots and nothingness")  # whole words only


def test_keyword_lists_and_the_pasted_prompt_get_no_credit():
    """Issue 19, item 6: listing the key terms, or pasting the prompt back, earns nothing."""
    item = {i.id: i for i in bank.load_banks()}["ch03-explain-lora"]
    for text in ("LoRA, low-rank update, frozen pre-trained weights, thin matrices B and A, rank r, merged, "
                 "adapter file",
                 "LoRA\nlow-rank\nfrozen weights\noptimizer state memory\nmerge into base weights\nsmall adapter file",
                 item.prompt, f"{item.prompt} {item.prompt}"):
        result = scoring.score(text, item.key_points, prompt=item.prompt)
        assert not result.passed and not result.hits, (text[:60], result.similarity)


def test_fluency_rules_on_sentences():
    assert scoring.fluent("Gradient checkpointing stores only some activations and recomputes the rest.")
    assert scoring.fluent("LoRA trains the matrices B and A with a small rank.")  # "A with": a name, not the article
    assert not scoring.fluent("Checkpoints gradient activations memory recompute backward forward segment.")
    assert not scoring.fluent("The of activations is stores the backward.")
    assert scoring.fluent("Templates contain special tokens.", terse=True) and scoring.fluent("No.")
    assert not scoring.fluent("Zero random gradient learn.")  # in a longer answer, four terms are a list
    assert not scoring.fluent("low-rank adapters")  # a line of a list
    assert scoring.fluent("I keep one base model and load the small adapters beside it, a few megabytes each.")
    assert scoring.echoes("What is LoRA, and why is it so widely used?", "Interview question: what is LoRA, in plain "
                          "words, and why is it so widely used?")
    assert not scoring.echoes("LoRA is used because it trains little.", "What is LoRA and why is it so widely used?")


@pytest.mark.parametrize("row_id", ["ft-002", "ft-053", "ft-064", "ft-032", "ft-109", "ft-129", "ft-149"])
def test_short_correct_answers_pass(labelled, row_id):
    _, items, rows = labelled
    row = rows[row_id]
    item = items[row["item"]]
    assert row["category"] == "short" and len(scoring.sentences(row["text"])) <= 2
    assert scoring.score(row["text"], item.key_points, prompt=item.prompt).passed, row["text"]


def test_over_long_answers_are_refused_unscored_and_fast(monkeypatch):
    item = {i.id: i for i in bank.load_banks()}["ch03-explain-lora"]
    monkeypatch.setattr(scoring, "embed", lambda texts: pytest.fail("an over-long answer must not be embedded"))
    long_answers = [item.model_answer + " " + "x" * scoring.MAX_CHARS,  # too many characters
                    " ".join(["LoRA is small."] * (scoring.MAX_SENTENCES + 1)),  # too many sentences
                    "LoRA freezes the weights. " * 4000]  # 100 kB
    for text in long_answers:
        start = time.perf_counter()
        result = scoring.score(text, item.key_points, prompt=item.prompt)
        assert time.perf_counter() - start < 0.5
        assert result.too_long and not result.passed and result.hits == [] and result.score == 0
    fb = session.grade(item, long_answers[0])
    assert fb.headline.startswith(f"Too long to score: keep it under {scoring.MAX_CHARS:,} characters")
    assert not fb.correct and fb.needs_rating and fb.misses == list(item.key_points)


def test_grade_headline_reports_coverage(labelled):
    _, items, rows = labelled
    item = items["ch03-explain-init"]
    fb = session.grade(item, rows["ft-053"]["text"])
    assert fb.headline.startswith(f"Key points covered: {len(fb.hits)} of {len(item.key_points)}.")
    assert fb.correct and fb.score == len(fb.hits) / len(item.key_points)
    salad = session.grade(item, "Zero random gradient learn. Start model noise weights. "
                                "Both random zero adapter learn.")
    assert not salad.correct and "not scored" in salad.headline and salad.hits == []


@pytest.mark.slow
def test_labelled_set_precision_and_recall_stay_above_floors(labelled):
    """Measured by tools/eval_freetext.py when the constants were set: precision 0.849 / recall 0.925
    over all 398 answers, 0.714 / 0.909 on the 11 held-out items; after the banks' 2026-12-06 edits and with
    one attack generator per item, 0.813 / 0.910 and 0.741 / 0.909. Floors sit a little below.
    Word salad from an item's own key-point words passes for 3 of the 33 items (a known weakness of the
    embedding scorer: the salad's words are the key points' words); the cap keeps it from growing."""
    tool, items, _ = labelled
    results = tool.measure(tool.build_set(tool.load_labelled(), items), items, scoring.score)
    print("\n" + tool.report(results))
    precision, recall, _, _ = tool.precision_recall(results)
    assert precision >= 0.8 and recall >= 0.9
    held = [r for r in results if r["split"] == "held-out"]
    precision, recall, _, _ = tool.precision_recall(held)
    assert precision >= 0.68 and recall >= 0.85
    for category in ("keywords", "echo", "too-long", "off-topic", "partial"):
        assert not [r["id"] for r in results if r["category"] == category and r["passed"]], category
    for category, most in (("salad", 3), ("negation", 2), ("echo-twice", 2), ("salad-all-words", 2),
                           ("misconception", 9)):
        assert sum(r["passed"] for r in results if r["category"] == category) <= most, category
    assert max(r["seconds"] for r in results) < 5  # a scored answer is at most 12 sentences
