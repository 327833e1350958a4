"""Free-text scorer: MiniLM cosine against key points, calibrated on written good and bad answers.

CALIBRATION holds answers to the bank's free-text items, labelled with the key points each one
really makes (strong, partial, vague, and confidently off the point). A made point is a positive,
a missing one a negative. The tests recompute the threshold, check it on held-out answers, and
check that answers making at least half the points pass and the others fail.
"""

import pytest

from ftlab.quiz import bank, scoring

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


def test_threshold_is_the_calibrated_one(sims):
    pos, neg = split(sims)
    threshold, acc = scoring.calibrate(pos, neg)
    print(f"\nkey points: {len(pos)} made, {len(neg)} missing; calibrated threshold {threshold:.3f}, "
          f"balanced accuracy {acc:.3f}; shipped THRESHOLD {scoring.THRESHOLD}: "
          f"{balanced_accuracy(pos, neg, scoring.THRESHOLD):.3f}")
    assert abs(threshold - scoring.THRESHOLD) < 0.03
    assert balanced_accuracy(pos, neg, scoring.THRESHOLD) >= 0.88
    assert sum(pos) / len(pos) - sum(neg) / len(neg) > 0.3  # the two classes are far apart on average


def test_threshold_transfers_between_chapters(sims):
    """Calibrate on one chapter's answers, measure on the other's."""
    for fit, held_out in (("00", "02"), ("02", "00")):
        threshold, _ = scoring.calibrate(*split(sims, fit))
        acc = balanced_accuracy(*split(sims, held_out), threshold)
        print(f"\ncalibrated on ch{fit}: threshold {threshold:.3f}, held-out ch{held_out} balanced accuracy {acc:.3f}")
        assert acc >= 0.85


def test_answers_that_make_half_the_points_pass_and_others_fail(sims):
    items = {i.id: i for i in bank.load_banks()}
    for iid, rows in sims.items():
        scores = []
        for answer, covered, _ in rows:
            result = scoring.score(answer, items[iid].key_points)
            good = len(covered) / len(items[iid].key_points) >= scoring.PASS
            assert (result.score >= scoring.PASS) == good, (iid, answer[:60], result.similarity)
            scores.append(result.score)
        assert scores[0] == 1.0  # the strong answer makes every point
        assert scores[0] > max(scores[2:])  # and beats the vague and the wrong one


def test_hits_and_misses_name_the_key_points(sims):
    item = next(i for i in bank.load_banks() if i.id == "ch02-explain-7b-24gb")
    result = scoring.score("It does not fit, 7B times 16 bytes is roughly 112 GB.", item.key_points)
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
