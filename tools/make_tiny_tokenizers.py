"""Train the two small tokenizers of the `ci` profile's tiny models on the course data.

A 49k-token vocabulary makes a tiny model slow (the embedding is 97 % of its parameters and
the output softmax dominates a step), so tiny-llama and tiny-bert get 1,024-token vocabularies
trained on the train splits of the datasets in CORPUS. The result is committed under
ftlab/assets/; rerun this after those datasets change:

    python tools/make_tiny_tokenizers.py            # write
    python tools/make_tiny_tokenizers.py --check    # exit 1 if the committed files are stale
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "ftlab" / "assets"
VOCAB_SIZE = 1024
# The same turn markup as SmolLM2 (ChatML), without its default system prompt.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# Named, not globbed: a dataset added later (reviews/ reuses sentiment's templates) leaves the
# tokenizers, and so every `ci` model, unchanged.
CORPUS = ("general", "instructions", "preferences", "sentiment")


def corpus() -> list[str]:
    files = [ROOT / "data" / name / "train.jsonl" for name in CORPUS]
    missing = [str(f.relative_to(ROOT)) for f in files if not f.exists()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: generate the data first (python tools/make_data.py)")
    texts = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            texts += [v for v in json.loads(line).values() if isinstance(v, str) and " " in v]
    return texts


def llama_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>", chat_template=CHATML)


def bert_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials,
                                                             show_progress=False))
    # The trainer numbers its alphabet in hash-set order, which changes from run to run. WordPiece
    # only asks "is this piece in the vocabulary?", so renumbering (specials, then sorted) is safe
    # and makes the file reproducible.
    learned = sorted(set(tok.get_vocab()) - set(specials))
    tok.model = models.WordPiece({t: i for i, t in enumerate(specials + learned)}, unk_token="[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def write(out: Path) -> None:
    texts = corpus()
    llama_tokenizer(texts).save_pretrained(out / "tiny-llama-tokenizer")
    bert_tokenizer(texts).save_pretrained(out / "tiny-bert-tokenizer")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare a fresh build with the committed files")
    if not ap.parse_args().check:
        write(ASSETS)
        print(f"wrote {ASSETS}/tiny-llama-tokenizer and tiny-bert-tokenizer")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        d = "tiny-llama-tokenizer"  # BPE training is deterministic: byte for byte
        cmp = filecmp.dircmp(Path(tmp) / d, ASSETS / d)
        stale = [f"{d}/{f}" for f in cmp.diff_files + cmp.left_only]
        # WordPiece training breaks ties between equally frequent pieces in hash order, so a rebuild
        # may swap a few of the rarest pieces; anything beyond 1 % of the vocabulary means stale data.
        fresh, committed = (set(json.loads((root / "tiny-bert-tokenizer" / "tokenizer.json").read_text())
                                ["model"]["vocab"]) for root in (Path(tmp), ASSETS))
        if len(fresh ^ committed) > VOCAB_SIZE // 100:
            stale.append(f"tiny-bert-tokenizer/tokenizer.json ({len(fresh ^ committed)} pieces differ)")
    if stale:
        print("stale tokenizer files (run python tools/make_tiny_tokenizers.py):", *stale)
        return 1
    print("tiny tokenizers are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
