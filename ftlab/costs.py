"""A back-of-the-envelope cost model for prompting vs RAG vs fine-tuning (chapter 10).

    gpu = GPUS["L4"]
    hours = training_gpu_hours(n_params=7e9, tokens=2e6, epochs=3, gpu=gpu, method="lora", recompute=True)
    lat = latency(n_params=7e9, prompt_tokens=600, output_tokens=150, gpu=gpu)
    table = monthly_costs(Workload(requests_per_day=5_000, input_tokens=400, output_tokens=150, labelling_hours=40))

Every number is an assumption the learner can change: GPU spec-sheet peaks and hourly prices, API
token prices, utilisation, people's time. The formulas are the standard first-order ones an interviewer expects:

  training FLOPs      ~ 6 N D  (forward 2ND + backward 4ND); LoRA skips the weight gradients: ~ 4 N D;
                        gradient checkpointing recomputes the forward pass: + 2 N D (8 N D and 6 N D)
  prefill seconds     ~ max(2 N P / (peak FLOP/s * u_c), weight bytes / (bandwidth * u_b))   (roofline)
  decode seconds/tok  ~ weight bytes / (bandwidth * u_b)     (memory-bound at batch 1; batching shares it)
  storage             = parameters * bytes per parameter      (GB = 1e9 bytes, as storage is billed)

Units: GPU memory in GiB (2**30 bytes, what the card and `memory.estimate_memory` report), storage in GB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ftlab.checks import number


def _positive(name: str, value, allow_zero: bool = False) -> float:
    """`value` as a finite float, > 0 (or >= 0 with `allow_zero`)."""
    return number(name, value, low=0) if allow_zero else number(name, value, above=0)


@dataclass(frozen=True)
class GPU:
    """Spec-sheet peaks and an hourly rental price. `tensor_tflops` is the dense 16-bit tensor-core peak in the
    `precision` the card has: bf16 on Ampere and later, fp16 on the T4 (Turing has no bf16 tensor cores, so a
    bf16 model there runs far below this figure). `memory_gib`: the card's memory, whose "16 GB" is 16 GiB."""

    name: str
    memory_gib: float
    tensor_tflops: float
    bandwidth_gbs: float
    usd_per_hour: float
    precision: str = "bf16"


# Approximate spec-sheet figures (dense, no sparsity) and illustrative on-demand prices; check your provider.
GPUS = {
    "T4": GPU("T4", 16, 65, 320, 0.35, precision="fp16"),
    "L4": GPU("L4", 24, 121, 300, 0.80),
    "A10G": GPU("A10G", 24, 70, 600, 1.00),
    "RTX 4090": GPU("RTX 4090", 24, 165, 1008, 0.70),
    "A100 80GB": GPU("A100 80GB", 80, 312, 2039, 1.80),
    "H100 SXM": GPU("H100 SXM", 80, 989, 3350, 3.00),
}


@dataclass(frozen=True)
class Prices:
    """What things cost, in US dollars. Illustrative defaults: replace them with your own quotes."""

    api_input_per_mtok: float = 0.50  # hosted model, per million input tokens
    api_output_per_mtok: float = 1.50  # per million output tokens
    embed_per_mtok: float = 0.02  # hosted embedding model, per million tokens
    storage_gb_month: float = 0.023  # object storage
    engineer_hour: float = 60.0  # people's time: writing, labelling and checking training data (one-off)


def training_flops(n_params: float, tokens: float, epochs: float = 1, method: str = "full",
                   recompute: bool = False) -> float:
    """~6 N D for full fine-tuning; ~4 N D for LoRA/QLoRA (no weight gradients for the frozen base).

    recompute=True (gradient checkpointing) runs each layer's forward pass again during the backward pass:
    + 2 N D, so 8 N D and 6 N D. QLoRA's dequantisation of the base weights costs time on top (not counted).
    """
    n, d, e = _positive("n_params", n_params), _positive("tokens", tokens), _positive("epochs", epochs)
    per = {"full": 6.0, "lora": 4.0, "qlora": 4.0}
    if method not in per:
        raise ValueError(f"method must be one of {', '.join(per)}, got {method!r}")
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute must be True or False (gradient checkpointing on or off), got {recompute!r}")
    return (per[method] + (2.0 if recompute else 0.0)) * n * d * e


def training_gpu_hours(n_params: float, tokens: float, epochs: float = 1, *, gpu: GPU, method: str = "full",
                       utilisation: float = 0.35, recompute: bool = False) -> float:
    """GPU hours = FLOPs / (peak FLOP/s * utilisation) / 3600. 30-50 % utilisation (MFU) is typical."""
    u = _positive("utilisation", utilisation)
    if u > 1:
        raise ValueError(f"utilisation is a fraction of peak, at most 1, got {utilisation!r}")
    return training_flops(n_params, tokens, epochs, method, recompute) / (gpu.tensor_tflops * 1e12 * u) / 3600


def latency(n_params: float, prompt_tokens: float, output_tokens: float, *, gpu: GPU, bytes_per_param: float = 2,
            compute_utilisation: float = 0.5, bandwidth_utilisation: float = 0.7) -> dict[str, float]:
    """Seconds for one request at batch size 1: prefill + decode, each bounded by the slower of arithmetic and
    reading the weights (the roofline).

    Prefill processes the whole prompt in parallel: 2 N P FLOPs, but it also reads every weight once, so a short
    prompt on a low-bandwidth card waits on memory: max(2 N P / (FLOP/s u_c), N b / (bandwidth u_b)). Each
    decoded token must read every weight once: N b bytes at the memory bandwidth. KV-cache reads and kernel
    launch overheads are ignored (they add to both on long contexts, and dominate for very small models).
    """
    n = _positive("n_params", n_params)
    p, o = _positive("prompt_tokens", prompt_tokens, True), _positive("output_tokens", output_tokens, True)
    b = _positive("bytes_per_param", bytes_per_param)
    cu = _positive("compute_utilisation", compute_utilisation)
    bu = _positive("bandwidth_utilisation", bandwidth_utilisation)
    per_token = n * b / (gpu.bandwidth_gbs * 1e9 * bu)  # one read of every weight
    prefill = max(2 * n * p / (gpu.tensor_tflops * 1e12 * cu), per_token) if p else 0.0
    return {"prefill_s": prefill, "per_token_s": per_token, "decode_s": per_token * o,
            "total_s": prefill + per_token * o}


def storage_gb(n_params: float, bytes_per_param: float = 2) -> float:
    """Gigabytes (1e9 bytes) to store n_params at bytes_per_param (2 for bf16, 0.5 for 4-bit)."""
    return _positive("n_params", n_params, True) * _positive("bytes_per_param", bytes_per_param) / 1e9


@dataclass(frozen=True)
class Workload:
    """A task in production. Token counts are per request; `instructions` is the task description that
    prompting and RAG send with every request and a fine-tuned model no longer needs."""

    requests_per_day: float
    input_tokens: int = 200  # the user's input
    output_tokens: int = 150
    instructions: int = 300  # system prompt / task description
    few_shot_tokens: int = 800  # prompting: worked examples in every request
    retrieved_tokens: int = 1000  # RAG: passages added to every request
    corpus_tokens: float = 5e6  # RAG: the documents to embed (re-embedded once per month here)
    train_tokens: float = 2e6  # fine-tuning: tokens in the training set
    labelling_hours: float = 0.0  # fine-tuning: people's hours to write, label and check that set (one-off)
    epochs: float = 3
    days: float = 30

    def __post_init__(self):
        _positive("requests_per_day", self.requests_per_day, True)
        for name in ("input_tokens", "output_tokens", "instructions", "few_shot_tokens", "retrieved_tokens",
                     "corpus_tokens", "train_tokens", "labelling_hours"):
            _positive(name, getattr(self, name), True)
        _positive("epochs", self.epochs)
        _positive("days", self.days)


@dataclass(frozen=True)
class SelfHosted:
    """A model you fine-tune and serve yourself."""

    n_params: float = 1e9
    gpu: GPU = field(default_factory=lambda: GPUS["L4"])
    method: str = "lora"
    concurrency: int = 16  # requests decoded together in one batch (continuous batching)
    min_gpus: int = 1  # kept running even when idle
    bytes_per_param: float = 2
    adapter_params: float = 0.0  # LoRA: the trained parameters (storage per task)
    recompute: bool = False  # gradient checkpointing during training (what lets a large model fit)


def api_cost(requests: float, input_tokens: float, output_tokens: float, prices: Prices) -> float:
    """Dollars for `requests` calls to a hosted model."""
    return requests * (input_tokens * prices.api_input_per_mtok + output_tokens * prices.api_output_per_mtok) / 1e6


def serving_gpu_hours(requests: float, prompt_tokens: float, output_tokens: float, model: SelfHosted) -> float:
    """Busy GPU hours to serve `requests`: each request's prefill on its own, its decode shared with
    `concurrency` - 1 others. Batching amortises decoding (memory-bound: one read of the weights serves every
    row of the batch) but not prefill, whose arithmetic grows with the rows. The always-on floor (`min_gpus`)
    is applied by `monthly_costs`, not here."""
    lat = latency(model.n_params, prompt_tokens, output_tokens, gpu=model.gpu, bytes_per_param=model.bytes_per_param)
    return requests * (lat["prefill_s"] + lat["decode_s"] / max(1, model.concurrency)) / 3600


def monthly_costs(work: Workload, prices: Prices = Prices(), model: SelfHosted = SelfHosted()) -> dict[str, dict]:
    """One-off and monthly dollars, tokens per request and latency for three approaches.

    prompting: hosted API; every request carries instructions + few-shot examples + input.
    rag: hosted API; every request carries instructions + retrieved passages + input; the corpus is embedded.
    fine-tuning: a self-hosted `model`, trained once on `train_tokens`, served with a short prompt (input only);
    its one-off cost is the training run plus `labelling_hours` of people's time at `prices.engineer_hour`.
    Latency of the hosted options is not modelled from first principles (it is the provider's); the
    self-hosted latency uses `latency` at batch size 1.
    """
    requests = work.requests_per_day * work.days
    out: dict[str, dict] = {}
    for name, extra in (("prompting", work.few_shot_tokens), ("rag", work.retrieved_tokens)):
        tokens_in = work.instructions + extra + work.input_tokens
        monthly = api_cost(requests, tokens_in, work.output_tokens, prices)
        one_off = 0.0
        storage = 0.0
        if name == "rag":
            monthly += (work.corpus_tokens + requests * work.input_tokens) * prices.embed_per_mtok / 1e6
            storage = work.corpus_tokens / 256 * 384 * 4 / 1e9  # one 384-d fp32 vector per 256-token chunk
            monthly += storage * prices.storage_gb_month
        out[name] = {"one_off_usd": one_off, "monthly_usd": monthly, "input_tokens_per_request": tokens_in,
                     "gpu_hours_month": 0.0, "storage_gb": storage}
    train_h = training_gpu_hours(model.n_params, work.train_tokens, work.epochs, gpu=model.gpu, method=model.method,
                                 recompute=model.recompute)
    people = work.labelling_hours * prices.engineer_hour
    serve_h = serving_gpu_hours(requests, work.input_tokens, work.output_tokens, model)
    serve_h = max(serve_h, model.min_gpus * 24 * work.days)
    stored = model.adapter_params if model.method != "full" and model.adapter_params else model.n_params
    gb = storage_gb(stored, model.bytes_per_param)
    lat = latency(model.n_params, work.input_tokens, work.output_tokens, gpu=model.gpu,
                  bytes_per_param=model.bytes_per_param)
    out["fine-tuning"] = {"one_off_usd": train_h * model.gpu.usd_per_hour + people, "people_usd": people,
                          "training_gpu_hours": train_h,
                          "monthly_usd": serve_h * model.gpu.usd_per_hour + gb * prices.storage_gb_month,
                          "input_tokens_per_request": work.input_tokens, "gpu_hours_month": serve_h,
                          "storage_gb": gb, "latency_s": lat["total_s"]}
    return out


def break_even_requests_per_day(work: Workload, approach: str = "prompting", prices: Prices = Prices(),
                                model: SelfHosted = SelfHosted(), months: float = 1) -> float:
    """Requests per day above which the fine-tuned, self-hosted model costs less than `approach` over `months`
    (training cost included once). Found by bisection; inf if it never does below 1e9 requests per day."""
    if approach not in ("prompting", "rag"):
        raise ValueError(f"approach must be 'prompting' or 'rag', got {approach!r}")
    _positive("months", months)

    def gap(rpd: float) -> float:
        c = monthly_costs(replace(work, requests_per_day=rpd), prices, model)
        ft = c["fine-tuning"]["one_off_usd"] + months * c["fine-tuning"]["monthly_usd"]
        return months * c[approach]["monthly_usd"] - ft

    lo, hi = 0.0, 1e9
    if gap(hi) <= 0:
        return math.inf
    if gap(lo) > 0:
        return 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if gap(mid) > 0 else (mid, hi)
    return hi


# --- a production checklist the learner fills for a scenario ---------------------------------------------

CHECKLIST = {
    "reliability": ["a held-out evaluation set that gates every release", "fallback when the model fails or times out",
                    "output validation (schema, allowed labels)"],
    "scalability": ["expected peak requests per second", "batching / autoscaling plan", "GPU memory headroom measured"],
    "performance": ["latency target (p50 and p95)", "tokens per request measured, not guessed"],
    "cost": ["cost per 1,000 requests computed", "break-even against the hosted alternative"],
    "security": ["training data scanned and scrubbed for PII", "retrieved text treated as untrusted (prompt injection)",
                 "no secrets or other customers' data reachable from the prompt (data leakage)"],
    "monitoring": ["input drift metric with an alert threshold", "quality sampled and labelled on live traffic",
                   "a rollback path to the previous model or adapter"],
}


def review_checklist(answers: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """The checklist items still missing an answer: {concern: [item, ...]} (an empty dict when complete).

    `answers` maps concern -> item -> the learner's note; an empty or whitespace-only note counts as missing.
    """
    if not isinstance(answers, dict):
        raise TypeError(f"answers must be a dict of concern -> {{item: note}}, got {type(answers).__name__}")
    unknown = sorted(set(answers) - set(CHECKLIST))
    if unknown:
        raise ValueError(f"answers has unknown concerns {unknown}; the concerns are {list(CHECKLIST)}")
    missing = {}
    for concern, items in CHECKLIST.items():
        notes = answers.get(concern, {})
        if not isinstance(notes, dict):
            raise TypeError(f"answers[{concern!r}] must be a dict of item -> note, got {type(notes).__name__}")
        extra = sorted(set(notes) - set(items))
        if extra:
            raise ValueError(f"answers[{concern!r}] has unknown items {extra}; its items are {items}")
        gaps = [i for i in items if not str(notes.get(i, "")).strip()]
        if gaps:
            missing[concern] = gaps
    return missing
