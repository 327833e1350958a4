import pytest
import torch

from ftlab import data, models
from ftlab.data import ChatCollator, encode_chat, encode_conversation
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


def test_collator_all_tokens_ablation_targets_every_real_token(tok):
    rows = data.load("instructions", "train", n=3)
    reply = ChatCollator(tok, 64)(rows)
    every = ChatCollator(tok, 64, reply_only=False)(rows)
    assert torch.equal(every["input_ids"], reply["input_ids"])
    real = every["attention_mask"] == 1
    assert torch.equal(every["labels"][real], every["input_ids"][real])
    assert (every["labels"][~real] == IGNORE_INDEX).all()
    with pytest.raises(TypeError, match="reply_only"):
        ChatCollator(tok, 64, reply_only="no")


def _two_turns():
    return [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"},
            {"role": "user", "content": "Now double it."}, {"role": "assistant", "content": "10"}]


def test_every_assistant_turn_is_a_target_and_nothing_else(tok):
    f = encode_conversation(tok, _two_turns())
    assert f["input_ids"] == tok.apply_chat_template(_two_turns(), tokenize=True, return_dict=True)["input_ids"]
    targets = [t for t, y in zip(f["input_ids"], f["labels"]) if y != IGNORE_INDEX]
    assert [y for y in f["labels"] if y != IGNORE_INDEX] == targets
    assert tok.decode(targets) == "5<|im_end|>\n10<|im_end|>\n"


def test_one_turn_conversation_is_encode_chat(tok):
    messages = [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]
    assert encode_conversation(tok, messages) == encode_chat(tok, "Add 2 and 3.", "5")
    assert encode_conversation(tok, messages, max_length=5) == encode_chat(tok, "Add 2 and 3.", "5", max_length=5)


def test_conversation_errors_name_the_message(tok):
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        encode_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "assistant"}])
    # a template that drops earlier assistant turns once a later one exists (as some reasoning templates do)
    forgetful = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}<|im_start|>{{ m['role'] }}\n"
                 "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    old, tok.chat_template = tok.chat_template, forgetful
    try:
        with pytest.raises(ValueError, match=r"messages\[1\]"):
            encode_conversation(tok, _two_turns())
    finally:
        tok.chat_template = old
