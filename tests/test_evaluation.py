"""ftlab.evaluation: metrics against sklearn or hand-computed cases, judges, contamination, the bias probe."""

import math
from types import SimpleNamespace

import pytest
import torch
from sklearn import metrics as skm

from ftlab import data, evaluation as ev, models

PREDS = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
LABELS = [1, 0, 0, 1, 0, 1, 1, 0, 0, 1]


def test_classification_metrics_match_sklearn():
    assert ev.accuracy(PREDS, LABELS) == pytest.approx(skm.accuracy_score(LABELS, PREDS))
    prf = ev.precision_recall_f1(PREDS, LABELS)
    assert prf["precision"] == pytest.approx(skm.precision_score(LABELS, PREDS))
    assert prf["recall"] == pytest.approx(skm.recall_score(LABELS, PREDS))
    assert prf["f1"] == pytest.approx(skm.f1_score(LABELS, PREDS))
    assert ev.macro_f1(PREDS, LABELS) == pytest.approx(skm.f1_score(LABELS, PREDS, average="macro"))
    assert ev.cohen_kappa(PREDS, LABELS) == pytest.approx(skm.cohen_kappa_score(PREDS, LABELS))


def test_metrics_on_random_multiclass_match_sklearn():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        preds, labels = torch.randint(4, (50,), generator=g), torch.randint(4, (50,), generator=g)
        assert ev.macro_f1(preds, labels) == pytest.approx(skm.f1_score(labels, preds, average="macro"))
        assert ev.cohen_kappa(preds, labels) == pytest.approx(skm.cohen_kappa_score(preds, labels))


def test_constant_predictor_on_imbalanced_data():
    labels = [0] * 95 + [1] * 5
    preds = [0] * 100
    assert ev.accuracy(preds, labels) == 0.95
    assert ev.f1(preds, labels) == 0.0  # never finds a positive: precision's denominator is 0, reported as 0
    assert ev.macro_f1(preds, labels) == pytest.approx((2 * 0.95 / 1.95 + 0) / 2)


def test_f1_hand_case_from_the_quiz():
    # precision 0.8, recall 0.5: 4 true positives, 1 false positive, 4 false negatives
    preds = [1] * 5 + [0] * 4 + [0]
    labels = [1] * 4 + [0] + [1] * 4 + [0]
    prf = ev.precision_recall_f1(preds, labels)
    assert (prf["precision"], prf["recall"]) == (0.8, 0.5)
    assert prf["f1"] == pytest.approx(2 * 0.4 / 1.3)


@pytest.mark.parametrize("preds, labels, word", [([1, 0], [1], "labels"), ([], [], "preds"),
                                                  ([0.5, 1.0], [0, 1], "preds"), ([[1]], [[1]], "preds")])
def test_bad_labels_name_the_argument(preds, labels, word):
    with pytest.raises(ValueError, match=word):
        ev.accuracy(preds, labels)


def test_exact_match_and_contains():
    assert ev.exact_match("  Apple, Kiwi, Pear. ", "apple, kiwi, pear")
    assert not ev.exact_match("42 apples", "42")
    assert ev.contains_answer("The answer is 42.", "42")
    assert not ev.contains_answer("The answer is 420.", "42")
    assert not ev.contains_answer("It costs 42.5 dollars.", "42")
    assert ev.contains_answer("That is 3500 m in total.", "3500 m")
    with pytest.raises(ValueError, match="answer"):
        ev.contains_answer("anything", " . ")


def test_win_rate_counts_ties_as_half():
    assert ev.win_rate(["win"] * 60 + ["loss"] * 30 + ["tie"] * 10) == 0.65
    with pytest.raises(ValueError, match="outcomes"):
        ev.win_rate(["win", "draw"])
    with pytest.raises(ValueError, match="outcomes"):
        ev.win_rate([])


def test_combine_orders_and_position_bias():
    # pair 0: a wins in both orders; pair 1: b wins in both; pair 2: the first slot always wins
    ab, ba = [True, False, True], [False, True, True]
    assert ev.combine_orders(ab, ba) == ["win", "loss", "tie"]
    bias = ev.position_bias(ab, ba)
    assert bias["first_slot_win_rate"] == pytest.approx(4 / 6)
    assert bias["flip_rate"] == pytest.approx(1 / 3)
    always_first = ev.position_bias([True] * 4, [True] * 4)
    assert always_first == {"first_slot_win_rate": 1.0, "flip_rate": 1.0}
    with pytest.raises(ValueError, match="first_wins_ba"):
        ev.combine_orders([True], [])


def test_llm_judge_is_antisymmetric_in_the_letters():
    lm, tok = models.load("tiny-llama")
    score = ev.llm_judge(lm, tok, "What is 2 + 2?", "4", "5")
    assert math.isfinite(score)
    # the same prompt with the answers swapped is a different input, so only finiteness and determinism hold
    assert ev.llm_judge(lm, tok, "What is 2 + 2?", "4", "5") == score


def test_perplexity_is_exp_of_mean_token_nll():
    lm, tok = models.load("tiny-llama")
    rows = [{"text": "The river runs past the old mill."}]
    collate = data.CausalLMCollator(tok, 64)
    batch = collate(rows)
    with torch.no_grad():
        hf_loss = lm(**batch).loss.item()  # transformers: mean NLL over the shifted targets of one sequence
    assert ev.perplexity(lm, rows, collate) == pytest.approx(math.exp(hf_loss), rel=1e-5)
    # an untrained model over a vocabulary of V tokens is close to uniform: perplexity near V
    assert 0.5 * len(tok) < ev.perplexity(lm, rows, collate) < 2 * len(tok)


def test_ngram_overlap():
    train = ["the battery drains before lunch and the hinge creaks", "a gripping film"]
    test = ["honestly the battery drains before lunch and the hinge creaks a lot", "a gripping story", "gripping"]
    assert ev.ngram_overlap(train, test, n=8) == [True, False, False]
    assert ev.ngram_overlap(train, test, n=2) == [True, True, False]
    assert ev.ngrams("A b, c!", 2) == {("a", "b"), ("b", "c")}
    with pytest.raises(ValueError, match="n must"):
        ev.ngrams("text", 0)


def test_course_splits_share_no_exact_text_but_share_ngrams():
    train = [r["text"] for r in data.load("sentiment", "train")]
    test = [r["text"] for r in data.load("sentiment", "test", n=100)]
    assert not set(train) & set(test)
    assert sum(ev.ngram_overlap(train, test, n=4)) > 0  # templated text: short n-grams recur


def test_bias_gap_paired_statistics():
    p_a = [0.9, 0.8, 0.7, 0.6]
    p_b = [0.8, 0.8, 0.5, 0.6]
    d = torch.tensor([0.1, 0.0, 0.2, 0.0], dtype=torch.float64)
    out = ev.bias_gap(p_a, p_b)
    assert out["gap"] == pytest.approx(0.075)
    assert out["se"] == pytest.approx((d.std() / 2).item())
    assert ev.bias_gap(p_a, p_a) == {"gap": 0.0, "se": 0.0}
    with pytest.raises(ValueError, match="p_a and p_b"):
        ev.bias_gap([0.1, 0.2], [0.1])


def test_group_probabilities_average_over_names():
    templates = ["{group} liked it.", "{group} hated it."]
    names = ["Ann", "Bo"]
    score = lambda texts: torch.tensor([len(t) for t in texts], dtype=torch.float)  # noqa: E731
    p = ev.group_probabilities(score, templates, names)
    assert p.tolist() == [(len("Ann liked it.") + len("Bo liked it.")) / 2,
                          (len("Ann hated it.") + len("Bo hated it.")) / 2]
    with pytest.raises(ValueError, match="slot"):
        ev.fill(["no slot here"], names)


def test_positive_probability_of_a_classifier():
    model, tok = models.load("tiny-bert", task="classification")
    p = ev.positive_probability(model, tok, ["Ann liked it.", "Bo hated the phone."] * 3, batch_size=4)
    assert p.shape == (6,) and torch.all((p > 0) & (p < 1))
    assert torch.allclose(p[:2], p[2:4])


def test_with_name_skews_names_by_label():
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}] * 5
    out = ev.with_name(rows, {1: ["Ann"], 0: ["Bo"]})
    assert all(r["text"].startswith("Ann wrote:") == (r["label"] == 1) for r in out)
    with pytest.raises(ValueError, match="names_by_label"):
        ev.with_name(rows, {1: ["Ann"]})


def test_mixing_weights_and_mix():
    assert ev.mixing_weights([900, 100], temperature=2) == pytest.approx([0.75, 0.25])
    assert ev.mixing_weights([900, 100]) == pytest.approx([0.9, 0.1])
    assert ev.mixing_weights([900, 100], temperature=1e6) == pytest.approx([0.5, 0.5], abs=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        ev.mixing_weights([1, 2], temperature=0)
    with pytest.raises(ValueError, match="sizes"):
        ev.mixing_weights([])
    tasks = {"a": [{"x": i} for i in range(900)], "b": [{"x": i} for i in range(100)]}
    rows = ev.mix(tasks, 4000, temperature=2)
    share_b = sum(r["task"] == "b" for r in rows) / len(rows)
    assert abs(share_b - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 4000)  # within 4 standard errors


def test_interference():
    assert ev.interference({"a": 0.8, "b": 0.7}, {"a": 0.75, "b": 0.9}) == pytest.approx({"a": 0.05, "b": -0.2})
    with pytest.raises(ValueError, match="joint and separate"):
        ev.interference({"a": 1.0}, {"b": 1.0})


def test_mean_interval_matches_the_normal_approximation():
    hits = [1] * 140 + [0] * 60  # 70 % of 200 items
    ci = ev.mean_interval(hits, n_resamples=4000)
    assert ci.difference == pytest.approx(0.7)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 200)  # 6.4 points: the binomial interval the bootstrap should reproduce
    assert ci.low == pytest.approx(0.7 - half, abs=0.01) and ci.high == pytest.approx(0.7 + half, abs=0.01)
    assert ev.mean_interval([1, 1, 1]).low == 1.0  # no variation, no width
    with pytest.raises(ValueError, match="scores"):
        ev.mean_interval([])


# --- multiple choice: a bigram model over letters, where every log-likelihood is a sum of known terms ---------

LETTERS = "abcdefghijklmnopqrstuvwxyz "


class LetterTokenizer:
    """One token per character of LETTERS."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [LETTERS.index(ch) for ch in text]}


class Bigram(torch.nn.Module):
    """logits[t] = log P[x_t]: the next letter depends on the current one only, with probabilities P."""

    def __init__(self, probs):
        super().__init__()
        self.log_p = torch.nn.Parameter(probs.log())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.log_p[input_ids])


def bigram_with(rules):
    """Uniform next-letter probabilities except for rules {(current, next): p} (the rest of the row shares 1 - p)."""
    v = len(LETTERS)
    probs = torch.full((v, v), 1 / v, dtype=torch.float64)
    for (cur, nxt), p in rules.items():
        i, j = LETTERS.index(cur), LETTERS.index(nxt)
        probs[i] = (1 - p) / (v - 1)
        probs[i, j] = p
    return Bigram(probs.float())


def test_loglikelihood_is_the_sum_over_continuation_tokens_by_hand():
    model, tok = bigram_with({("b", "b"): 0.9}), LetterTokenizer()
    u = 1 / len(LETTERS)
    # log p(" bbb" | "q") = log P(q -> space) + log P(space -> b) + 2 log P(b -> b); the context's own tokens don't
    # count, so log p("c" | "qb") is log P(b -> c) alone
    expected = [2 * math.log(u) + 2 * math.log(0.9), 2 * math.log(u), math.log(0.1 / 26)]
    got = ev.loglikelihoods(model, tok, [("q", " bbb"), ("zq", " a"), ("qb", "c")], batch_size=2)
    assert got == pytest.approx(expected, rel=1e-5)
    # a trailing space of the context is scored as part of the continuation (lm-eval-harness's split)
    assert ev.loglikelihoods(model, tok, [("q ", "bbb")]) == pytest.approx(got[:1], rel=1e-6)


def test_choose_by_sum_and_per_byte_disagree_on_long_options():
    model, tok = bigram_with({("b", "b"): 0.9}), LetterTokenizer()
    items = [("q", ["a", "bbb"]), ("q", ["bbb", "a", "c"])]
    # sums: " a" = 2 log(1/27) = -6.59 beats " bbb" = -6.80; per byte: -3.30 against -1.70, so "bbb" wins
    assert ev.choose(model, tok, items) == {"acc": [0, 1], "acc_norm": [1, 0]}
    with pytest.raises(ValueError, match=r"items\[0\]"):
        ev.choose(model, tok, [("q", ["a"])])
    with pytest.raises(ValueError, match="non-empty"):
        ev.loglikelihoods(model, tok, [("", " a")])


def test_loglikelihoods_match_transformers_loss_on_a_real_tokenizer():
    lm, tok = models.load("tiny-llama")
    pairs = [("Question: What is 2 + 2?\nAnswer:", " 4"), ("Question: Sort b, a.\nAnswer:", " a, b, and then c"),
             ("Pick one:", " blanket")]
    ours = ev.loglikelihoods(lm, tok, pairs, batch_size=3)  # one padded batch
    for (context, continuation), value in zip(pairs, ours):
        c = tok(context, add_special_tokens=False)["input_ids"]
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        labels = torch.tensor([[-100] * len(c) + whole[len(c):]])
        with torch.no_grad():  # transformers: mean cross-entropy over the unmasked shifted targets, one unpadded row
            loss = lm(input_ids=torch.tensor([whole]), labels=labels).loss.item()
        assert value == pytest.approx(-loss * (len(whole) - len(c)), rel=1e-4)
    assert ev.loglikelihoods(lm, tok, [("Answer: ", "4")]) == pytest.approx(
        ev.loglikelihoods(lm, tok, [("Answer:", " 4")]), rel=1e-6)
