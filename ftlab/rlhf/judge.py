"""Gold judges and best-of-N: over-optimisation of a proxy reward, seen without any RL (chapter 07; chapter 08).

    replies = sample_replies(policy, tok, prompts, n=8)          # [prompt][sample], sampled at temperature 1
    proxy = torch.stack([rm.score([p] * 8, r) for p, r in zip(prompts, replies)])          # [P, 8]
    gold = answer_hits(rows, replies)                            # [P, 8]: 1 where a reply states the answer
    best_of_n(proxy, gold, 4)                                    # expected gold of the proxy's pick among 4
    best_of_n_kl(4)                                              # log 4 - 3/4 nats from the sampling policy

A proxy reward model is trained on a few pairs; a gold judge is an independent measure of what the proxy
stands for. Best-of-N picks, among N samples, the one the proxy scores highest: the harder the selection (the
larger N), the more the pick exploits whatever the proxy overrates, and the further gold can fall behind.
Gao, Schulman & Hilton (2022) measure optimisation pressure by the KL of the best-of-N policy from the
sampling policy, log N - (N - 1)/N; Beirami et al. (2024) show this formula is an upper bound on that KL.

The gold judges here: `answer_hits`, a checkable rule for prompts with a known answer (data/instructions),
and `SentimentJudge`, a bag-of-words classifier fitted on data/sentiment (labelled texts, not pairs) for
the review task of chapter 08.
"""

from __future__ import annotations

import math

import torch

from ftlab import data, evaluation
from ftlab.checks import number, positive_int
from ftlab.runtime import eval_mode


def answer_hits(rows: list[dict], replies: list[list[str]]) -> torch.Tensor:
    """[P, K] float: 1 where replies[p][k] states rows[p]["answer"] (case-sensitive, as chapter 06 scores)."""
    if len(rows) != len(replies):
        raise ValueError(f"rows has {len(rows)} items but replies has {len(replies)}: one list of samples per row")
    if len({len(r) for r in replies}) > 1:
        counts = sorted({len(r) for r in replies})
        raise ValueError(f"replies must hold the same number of samples per row, got {counts}")
    return torch.tensor([[float(evaluation.contains_answer(reply, row["answer"], case_sensitive=True))
                          for reply in samples] for row, samples in zip(rows, replies)])


@torch.no_grad()
def sample_replies(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int = 32, temperature: float = 1.0,
                   seed: int = 0, batch_size: int = 8) -> list[list[str]]:
    """n replies per prompt, sampled from the full distribution at `temperature` (no top-k, no top-p), in the
    chat template, decoded without special tokens. The same seed and batch_size give the same samples (the
    draws follow the batches); the caller's random stream is left as it was."""
    from transformers import GenerationConfig

    n, max_new_tokens = positive_int("n", n), positive_int("max_new_tokens", max_new_tokens)
    temperature = number("temperature", temperature, above=0)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=0,
                              top_p=1.0, num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    device = next(model.parameters()).device
    replies = []
    with eval_mode(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            encoded = [data.encode_chat(tokenizer, p)["input_ids"] for p in prompts[start:start + batch_size]]
            ids = data.left_pad(encoded, tokenizer.pad_token_id).to(device)
            mask = data.left_pad([[1] * len(x) for x in encoded], 0).to(device)
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            texts = [t.strip() for t in tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]
            replies += [texts[i:i + n] for i in range(0, len(texts), n)]  # generate keeps a prompt's samples together
    return replies


def best_of_n(proxy: torch.Tensor, gold: torch.Tensor, n: int) -> torch.Tensor:
    """[P]: for each prompt, the expected gold value of the sample the proxy ranks first among n drawn without
    replacement from its K samples (each of the C(K, n) subsets equally likely; ties broken by sample order).

    Sorted by proxy score, the sample ranked j-th (j = 0 the best) is the pick exactly when it is drawn and the
    j samples above it are not: probability C(K - 1 - j, n - 1) / C(K, n). Averaging over all subsets this way
    uses every sample, so the curve is far less noisy than taking the first n samples once.
    """
    if proxy.dim() != 2 or proxy.shape != gold.shape:
        raise ValueError(f"proxy {tuple(proxy.shape)} and gold {tuple(gold.shape)} must both be [prompts, samples]")
    k = proxy.shape[1]
    n = positive_int("n", n)
    if n > k:
        raise ValueError(f"n={n}, but there are only {k} samples per prompt")
    order = torch.sort(proxy.double(), dim=1, descending=True, stable=True).indices
    weights = torch.tensor([math.comb(k - 1 - j, n - 1) / math.comb(k, n) for j in range(k)], dtype=torch.float64)
    return (gold.double().gather(1, order) * weights).sum(1)


def best_of_n_kl(n: int) -> float:
    """log n - (n - 1)/n: the KL (nats) from the sampling policy to its best-of-n policy, as Gao et al. (2022)
    use it (an upper bound, Beirami et al. 2024); 0 for n = 1."""
    n = positive_int("n", n)
    return math.log(n) - (n - 1) / n


class SentimentJudge:
    """P(positive) of a text from a bag-of-words logistic regression (words and word pairs, tf-idf) fitted on
    data/sentiment's labelled reviews: a gold judge for chapter 08's review task that shares neither data nor
    features with a reward model fitted on review pairs. `SentimentJudge.fit()` takes about a second."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    @classmethod
    def fit(cls, rows: list[dict] | None = None, c: float = 10.0) -> "SentimentJudge":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        rows = data.load("sentiment", "train") if rows is None else rows
        if len({r["label"] for r in rows}) != 2:
            raise ValueError("rows must hold both labels (0 = negative, 1 = positive) to fit a sentiment judge")
        pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                 LogisticRegression(C=number("c", c, above=0), max_iter=2000))
        pipeline.fit([r["text"] for r in rows], [r["label"] for r in rows])
        return cls(pipeline)

    def positive(self, texts: list[str]) -> torch.Tensor:
        """[N] float: the judge's probability that each text is a positive review."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one string")
        if not texts:
            return torch.zeros(0)
        return torch.tensor(self.pipeline.predict_proba(list(texts))[:, 1], dtype=torch.float32)
