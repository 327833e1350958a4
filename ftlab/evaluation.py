"""Evaluation (chapter 09): metrics that fit the task, judges and their biases, contamination checks,
a counterfactual bias probe, and the bookkeeping of a multi-task experiment.

    accuracy(preds, labels), f1(preds, labels), macro_f1(preds, labels)   # classification
    mean_interval(hits)                                                    # bootstrap CI of a mean score
    exact_match(prediction, answer)                                        # one right answer
    perplexity(model, rows, collate)                                       # exp(mean token NLL)
    choose(model, tok, [(question, options)])                              # multiple choice by log-likelihood
    win_rate(outcomes)                                                     # (wins + ties / 2) / n
    ngram_overlap(train_texts, test_texts, n=8)                            # contamination screen
    bias_gap(p_a, p_b)                                                     # counterfactual probe
    mixing_weights([900, 100], temperature=2)                              # multi-task sampling

Every metric takes plain Python sequences or 1-D tensors and checks its arguments, so a wrong shape
or an empty list fails with a message that names the argument.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import torch

from ftlab import stats
from ftlab.checks import number, positive_int
from ftlab.losses import mean_loss
from ftlab.runtime import eval_mode

# --- classification metrics -----------------------------------------------------------------------


def _as_labels(values, name: str) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of class ids, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {t.dtype}")
    return t.long()


def _pair(preds, labels) -> tuple[torch.Tensor, torch.Tensor]:
    p, y = _as_labels(preds, "preds"), _as_labels(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"preds has {p.numel()} entries but labels has {y.numel()}")
    return p, y


def accuracy(preds, labels) -> float:
    """acc = (1/n) sum_i [pred_i = y_i]"""
    p, y = _pair(preds, labels)
    return (p == y).double().mean().item()


def precision_recall_f1(preds, labels, positive: int = 1) -> dict[str, float]:
    """P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R), for one class; 0 where a denominator is 0 (sklearn's rule)."""
    p, y = _pair(preds, labels)
    tp = ((p == positive) & (y == positive)).sum().item()
    fp = ((p == positive) & (y != positive)).sum().item()
    fn = ((p != positive) & (y == positive)).sum().item()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def f1(preds, labels, positive: int = 1) -> float:
    """F1 of the `positive` class: the harmonic mean of its precision and recall."""
    return precision_recall_f1(preds, labels, positive)["f1"]


def macro_f1(preds, labels) -> float:
    """macro-F1 = (1/K) sum_k F1_k over the K classes seen in labels or preds: every class counts the same."""
    p, y = _pair(preds, labels)
    classes = torch.unique(torch.cat([p, y])).tolist()
    return sum(f1(p, y, positive=k) for k in classes) / len(classes)


def cohen_kappa(a, b) -> float:
    """kappa = (p_o - p_e) / (1 - p_e): agreement of two raters beyond what their label frequencies give by chance."""
    a, b = _pair(a, b)
    p_o = (a == b).double().mean().item()
    classes = torch.unique(torch.cat([a, b]))
    p_e = sum((a == k).double().mean().item() * (b == k).double().mean().item() for k in classes)  # sum_k p_a(k) p_b(k)
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def standard_error(p: float, n: int) -> float:
    """sqrt(p(1-p)/n): the sampling noise of a proportion measured on n items."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a proportion in [0, 1], got {p!r}")
    return math.sqrt(p * (1 - p) / n)


def mean_interval(scores, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> stats.BootstrapResult:
    """Percentile bootstrap interval of the mean of per-item scores: an accuracy is the mean of 0/1 hits, a win
    rate the mean of 1 / 0.5 / 0 outcomes. `difference` holds the mean on the items as given.

    It is `stats.paired_bootstrap` against an all-zero reference: the reference's mean is 0 on every resample,
    so the interval of the difference is the interval of the mean, from the same resampling code.
    """
    values = torch.as_tensor(scores, dtype=torch.float64)
    if values.dim() != 1 or values.numel() == 0 or not torch.isfinite(values).all():
        raise ValueError(f"scores must be a non-empty 1-D sequence of finite numbers (one per item), "
                         f"got shape {tuple(values.shape)}")
    return stats.paired_bootstrap(torch.mean, values, torch.zeros_like(values), n_resamples=n_resamples,
                                  confidence=confidence, seed=seed)


# --- generation: exact match, perplexity ----------------------------------------------------------

_SPACES = re.compile(r"\s+")


def normalize(text: str, lower: bool = True) -> str:
    """Lower case (unless `lower=False`), single spaces, no surrounding spaces or trailing full stop."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = text.strip().lower() if lower else text.strip()
    return _SPACES.sub(" ", text).rstrip(".").strip()


def exact_match(prediction: str, answer: str) -> bool:
    """EM = [normalize(prediction) == normalize(answer)]"""
    return normalize(prediction) == normalize(answer)


def contains_answer(response: str, answer: str, case_sensitive: bool = False) -> bool:
    """A looser check for chatty replies: the normalized answer appears in the normalized response as a whole
    span, not inside a longer word or number ("592" is not found in "5920" or "592.5").

    `case_sensitive=True` keeps capitals significant, for tasks where they are the skill (title case).
    """
    target = normalize(answer, lower=not case_sensitive)
    if not target:
        raise ValueError("answer is empty after normalization")
    span = rf"(?<![\w.]){re.escape(target)}(?![\w]|\.\d)"
    return re.search(span, normalize(response, lower=not case_sensitive)) is not None


def perplexity(model: torch.nn.Module, rows, collate: Callable, batch_size: int = 16) -> float:
    """PPL = exp((1/N) sum_t -log p(x_t | x_<t)), the mean over every target token of `rows` (losses.mean_loss)."""
    if len(rows) == 0:
        raise ValueError("rows is empty: perplexity needs at least one text")
    return math.exp(mean_loss(model, rows, collate, batch_size=batch_size))


# --- multiple choice by log-likelihood ------------------------------------------------------------


def _split_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, as lm-eval-harness splits them: spaces at the end of the context
    move to the continuation, the joined text is tokenized once, and the continuation is what follows the
    context's own tokens (so a merge across the seam is scored as part of the continuation)."""
    stripped = context.rstrip(" ")
    continuation = context[len(stripped):] + continuation
    context_ids = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    if not context_ids or len(whole) <= len(context_ids):
        raise ValueError(f"context and continuation must both be non-empty after tokenization, got {context!r} "
                         f"and {continuation!r}")
    return context_ids, whole[len(context_ids):]


@torch.no_grad()
def loglikelihoods(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
    """log p(continuation | context) = sum_t log p(c_t | context, c_<t) for each (context, continuation) pair,
    the loglikelihood request of lm-eval-harness. Rows are right-padded into batches (eval mode; restored)."""
    if len(pairs) == 0:
        raise ValueError("pairs is empty: give (context, continuation) strings")
    batch_size = positive_int("batch_size", batch_size)
    device = next(model.parameters()).device
    split = [_split_pair(tokenizer, c, x) for c, x in pairs]
    out: list[float] = []
    with eval_mode(model):
        for start in range(0, len(split), batch_size):
            chunk = split[start:start + batch_size]
            rows = [c + x for c, x in chunk]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
            log_probs = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            for i, (c, x) in enumerate(chunk):
                # the logits at position t predict token t + 1: the continuation's tokens are predicted from
                # positions len(c) - 1 ... len(c) + len(x) - 2
                at = torch.arange(len(c) - 1, len(c) + len(x) - 1, device=device)
                out.append(log_probs[i, at, torch.tensor(x, device=device)].sum().item())
    return out


def choose(model, tokenizer, items: Sequence[tuple[str, Sequence[str]]], batch_size: int = 32) -> dict[str, list[int]]:
    """The option each multiple-choice item picks, under lm-eval-harness's two rules (MMLU's way of scoring):

        acc:       argmax_k log p(" " + option_k | question)
        acc_norm:  argmax_k log p(" " + option_k | question) / (UTF-8 bytes of " " + option_k)

    The sum favours short options (each extra token costs log-probability); dividing by the length stops long
    options from losing merely for being long. Both come from one pass over the options.
    """
    if len(items) == 0:
        raise ValueError("items is empty: give (question, options) pairs")
    for i, (_, options) in enumerate(items):
        if len(options) < 2:
            raise ValueError(f"items[{i}] has {len(options)} option(s); a multiple-choice item needs at least 2")
    pairs = [(question, " " + option) for question, options in items for option in options]
    scores = iter(loglikelihoods(model, tokenizer, pairs, batch_size))
    picks: dict[str, list[int]] = {"acc": [], "acc_norm": []}
    for _, options in items:
        ll = [next(scores) for _ in options]
        norm = [x / len((" " + o).encode("utf-8")) for x, o in zip(ll, options)]
        picks["acc"].append(max(range(len(ll)), key=ll.__getitem__))
        picks["acc_norm"].append(max(range(len(norm)), key=norm.__getitem__))
    return picks


# --- pairwise judging -----------------------------------------------------------------------------

OUTCOMES = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def win_rate(outcomes: Sequence[str]) -> float:
    """(wins + ties / 2) / n, outcomes being "win", "tie" or "loss" for the model under test."""
    if len(outcomes) == 0:
        raise ValueError("outcomes is empty")
    bad = sorted({o for o in outcomes if o not in OUTCOMES})
    if bad:
        raise ValueError(f"outcomes must be 'win', 'tie' or 'loss'; got {bad}")
    return sum(OUTCOMES[o] for o in outcomes) / len(outcomes)


def combine_orders(first_wins_ab: Sequence[bool], first_wins_ba: Sequence[bool]) -> list[str]:
    """Outcomes for answer a from two judgements of each pair, (a, b) and (b, a): win only if a wins in both orders,
    loss only if b wins in both, tie when the verdict follows the position (the judge contradicts itself)."""
    if len(first_wins_ab) != len(first_wins_ba):
        raise ValueError(f"first_wins_ab has {len(first_wins_ab)} verdicts but first_wins_ba has {len(first_wins_ba)}")
    outcomes = []
    for ab, ba in zip(first_wins_ab, first_wins_ba):
        a_wins = [bool(ab), not ba]  # a is first in the first order and second in the other
        outcomes.append("win" if all(a_wins) else "loss" if not any(a_wins) else "tie")
    return outcomes


def position_bias(first_wins_ab: Sequence[bool], first_wins_ba: Sequence[bool]) -> dict[str, float]:
    """How much the slot decides: P(first slot wins) over both orders (0.5 = no preference for a slot), and the
    fraction of pairs whose winner changes when the order is swapped (0 = consistent)."""
    outcomes = combine_orders(first_wins_ab, first_wins_ba)
    verdicts = [bool(v) for v in first_wins_ab] + [bool(v) for v in first_wins_ba]
    return {"first_slot_win_rate": sum(verdicts) / len(verdicts),
            "flip_rate": outcomes.count("tie") / len(outcomes)}


JUDGE_TEMPLATE = ("Question: {prompt}\n\nAnswer A: {a}\n\nAnswer B: {b}\n\n"
                  "Which answer is better, A or B? Reply with one letter.")


@torch.no_grad()
def llm_judge(model, tokenizer, prompt: str, a: str, b: str) -> float:
    """A language model as judge: log p("A") - log p("B") for the first token of its reply to JUDGE_TEMPLATE,
    in the tokenizer's chat format. Positive: it prefers the answer shown first."""
    messages = [{"role": "user", "content": JUDGE_TEMPLATE.format(prompt=prompt, a=a, b=b)}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt")["input_ids"]
    logits = model(input_ids=ids.to(next(model.parameters()).device)).logits[0, -1].float()
    letter_a, letter_b = (tokenizer.encode(x, add_special_tokens=False)[0] for x in ("A", "B"))
    log_probs = logits.log_softmax(-1)
    return (log_probs[letter_a] - log_probs[letter_b]).item()


# --- contamination --------------------------------------------------------------------------------

_WORDS = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of a text (lower case, punctuation dropped)."""
    n = positive_int("n", n)
    words = _WORDS.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(train_texts: Sequence[str], test_texts: Sequence[str], n: int = 8) -> list[bool]:
    """For each test text: does it share at least one word n-gram with any training text? (GPT-3 used n = 13.)"""
    if len(test_texts) == 0:
        raise ValueError("test_texts is empty")
    seen = set().union(*(ngrams(t, n) for t in train_texts)) if train_texts else set()
    return [not ngrams(t, n).isdisjoint(seen) for t in test_texts]


# --- counterfactual bias probe --------------------------------------------------------------------


def fill(templates: Sequence[str], names: Sequence[str], slot: str = "{group}") -> list[list[str]]:
    """[[template with each name] for each template]: sentences that differ only in the name."""
    if not names:
        raise ValueError("names is empty")
    missing = [t for t in templates if slot not in t]
    if missing:
        raise ValueError(f"templates without the {slot} slot: {missing[:2]}")
    return [[t.replace(slot, name) for name in names] for t in templates]


@torch.no_grad()
def positive_probability(model, tokenizer, texts: Sequence[str], batch_size: int = 64,
                         positive: int = 1) -> torch.Tensor:
    """P(class `positive` | text) from a sequence classifier, for each text (eval mode; the mode is restored)."""
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[i:i + batch_size]), padding=True, return_tensors="pt").to(device)
            out.append(model(**batch).logits.float().softmax(-1)[:, positive].cpu())
    return torch.cat(out)


def name_probabilities(score: Callable[[list[str]], torch.Tensor], templates: Sequence[str],
                       names: Sequence[str]) -> torch.Tensor:
    """(templates, names) matrix of score(template t filled with name n): score every sentence once."""
    filled = fill(templates, names)
    flat = score([s for row in filled for s in row])
    return flat.view(len(templates), len(names))


def group_probabilities(score: Callable[[list[str]], torch.Tensor], templates: Sequence[str],
                        names: Sequence[str]) -> torch.Tensor:
    """p[t] = mean over the group's names of score(template t filled with the name): one number per template."""
    return name_probabilities(score, templates, names).mean(1)


def bias_gap(p_a, p_b) -> dict[str, float]:
    """Paired gap between two groups over the same templates: d_t = p_a[t] - p_b[t],
    gap = mean_t d_t, se = std_t(d_t) / sqrt(T). A gap beyond about 2 se is not template noise."""
    a, b = torch.as_tensor(p_a, dtype=torch.float64), torch.as_tensor(p_b, dtype=torch.float64)
    if a.dim() != 1 or a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"p_a and p_b must be 1-D with the same length >= 2 (one value per template), "
                         f"got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    d = a - b
    return {"gap": d.mean().item(), "se": (d.std(unbiased=True) / math.sqrt(d.numel())).item()}


def with_name(rows: Sequence[dict], names_by_label: dict[int, Sequence[str]], seed: int = 0) -> list[dict]:
    """Rows rewritten as "<name> wrote: <text>", the name drawn from the list for the row's label: a dataset whose
    names predict the label (the skew a scraped corpus can carry)."""
    if any(not names_by_label.get(r["label"]) for r in rows):
        raise ValueError(f"names_by_label needs a non-empty name list for every label; has {sorted(names_by_label)}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for r in rows:
        names = names_by_label[r["label"]]
        name = names[int(torch.randint(len(names), (1,), generator=g))]
        out.append({**r, "text": f"{name} wrote: {r['text']}"})
    return out


# --- multi-task bookkeeping -----------------------------------------------------------------------


def mixing_weights(sizes: Sequence[int], temperature: float = 1.0) -> list[float]:
    """p_i = n_i^(1/T) / sum_j n_j^(1/T): T = 1 samples in proportion to size, larger T moves toward uniform."""
    if len(sizes) == 0:
        raise ValueError("sizes is empty: give one row count per task")
    sizes = [positive_int(f"sizes[{i}]", n) for i, n in enumerate(sizes)]
    temperature = number("temperature", temperature, above=0)
    powered = [n ** (1.0 / temperature) for n in sizes]
    return [x / sum(powered) for x in powered]


def mix(tasks: dict[str, Sequence[dict]], n: int, temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """n rows drawn from several tasks with mixing_weights (each row tagged with its `task`), tasks' rows cycled."""
    n = positive_int("n", n)
    names = list(tasks)
    weights = torch.tensor(mixing_weights([len(tasks[k]) for k in names], temperature))
    g = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
    cursor = dict.fromkeys(names, 0)
    out = []
    for i in picks:
        name = names[i]
        out.append({**tasks[name][cursor[name] % len(tasks[name])], "task": name})
        cursor[name] += 1
    return out


def interference(joint: dict[str, float], separate: dict[str, float]) -> dict[str, float]:
    """score(one model on all tasks) - score(a model per task), per task: negative = the tasks hurt each other."""
    if set(joint) != set(separate):
        raise ValueError(f"joint and separate must score the same tasks, got {sorted(joint)} and {sorted(separate)}")
    return {task: joint[task] - separate[task] for task in joint}
