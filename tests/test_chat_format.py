import pytest

from ftlab import data, models
from ftlab.data import ChatCollator, encode_chat
from ftlab.losses import IGNORE_INDEX


@pytest.fixture(scope="module")
def tok():
    return models.load("tiny-llama")[1]

def test_only_the_reply_is_labelled(tok):
    f = encode_chat(tok, "Add 2 and 3.", "5")
    prompt = encode_chat(tok, "Add 2 and 3.")["input_ids"]
    n = len(prompt)
    assert f["input_ids"][:n] == prompt and f["labels"][:n] == [IGNORE_INDEX] * n
    reply = tok.decode(f["labels"][n:])
    assert reply.startswith("5<|im_end|>"), reply
    assert f["labels"][n:] == f["input_ids"][n:]

def test_prompt_only_has_no_targets(tok):
    f = encode_chat(tok, "hi")
    assert set(f["labels"]) == {IGNORE_INDEX}
    assert tok.decode(f["input_ids"]).endswith("<|im_start|>assistant\n")

def test_max_length_cuts_from_the_right(tok):
    f = encode_chat(tok, "Add 2 and 3.", "5", max_length=4)
    assert len(f["input_ids"]) == len(f["labels"]) == 4

def test_missing_template_is_named(tok):
    bare = models.load("tiny-bert")[1]
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        encode_chat(bare, "hi", "there")

def test_collator_masks_prompt_and_padding(tok):
    rows = data.load("instructions", "train", n=3)
    batch = ChatCollator(tok, 64)(rows)
    for i, r in enumerate(rows):
        f = encode_chat(tok, r["prompt"], r["response"], 64)
        n = len(f["input_ids"])
        assert batch["labels"][i, :n].tolist() == f["labels"]
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all() and batch["attention_mask"][i, n:].sum() == 0
