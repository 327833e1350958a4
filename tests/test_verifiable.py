"""The checkable reward of chapter 08: its verdicts, its layout as a reward model, TRL's view of it."""

import pytest
import torch

from ftlab import data, models
from ftlab.rlhf import ppo, verifiable


@pytest.fixture(scope="module", params=["tiny-llama", "smollm2-135m"])
def tok(request):
    return models.load(request.param)[1]


def test_verdicts(tok):
    rule = verifiable.KeywordReward(tok)
    texts = ["A great film.", "Dull and slow.", "It is a film.", "Great, but the hinge is broken.",
             "Wonderful!", "", "not great"]
    assert rule.verdicts(texts).tolist() == [1.0, -1.0, 0.0, -1.0, 1.0, 0.0, 1.0]  # the last: the rule's blind spot


def test_flags_are_running_and_ignore_padding(tok):
    rule = verifiable.KeywordReward(tok, positive=["great"], negative=["awful"])
    ids = tok.encode("so great and then awful", add_special_tokens=False)
    great_end = len(tok.encode("so great", add_special_tokens=False)) - 1
    flags = rule.flags(torch.tensor([ids])).last_hidden_state[0]
    assert flags[:great_end, 0].sum() == 0 and flags[great_end:, 0].eq(1).all()  # on from the word's last token
    assert flags[-1, 1] == 1 and flags[:-len(tok.encode(" awful", add_special_tokens=False)), 1].sum() == 0
    mask = torch.ones(1, len(ids), dtype=torch.long)
    mask[0, -1] = 0  # the last token of " awful" hidden as padding: the word is no longer there
    assert rule.flags(torch.tensor([ids]), attention_mask=mask).last_hidden_state[0, -1, 1] == 0


def test_scores_equal_trl_get_reward(tok):
    from trl.experimental.utils import get_reward

    rule = verifiable.KeywordReward(tok)
    tok.padding_side = "left"
    prompts = [data.encode_chat(tok, r["prompt"])["input_ids"] for r in data.load("reviews", "train", n=4)]
    queries = data.left_pad(prompts, tok.pad_token_id)
    replies = ["A great and charming film.", "Awful, I hated it.", "It exists.", "Great hinge but slow."]
    response = data.left_pad([tok.encode(r, add_special_tokens=False)[::-1] for r in replies], tok.pad_token_id).flip(1)
    query_responses = torch.cat([queries, response], 1)  # right-padded responses after left-padded prompts
    ours = ppo.sequence_scores(rule, query_responses, tok.pad_token_id, queries.shape[1])
    _, theirs, _ = get_reward(rule, query_responses, tok.pad_token_id, queries.shape[1])
    assert torch.equal(ours, theirs)
    assert ours.tolist() == [1.0, -1.0, 0.0, -1.0]
    assert rule.verdicts([tok.decode(q, skip_special_tokens=True) for q in prompts]).eq(0).all()  # prompts are neutral


def test_bad_words_are_named(tok):
    with pytest.raises(ValueError, match="'very good'"):
        verifiable.KeywordReward(tok, positive=["very good"])
    with pytest.raises(ValueError, match="3"):
        verifiable.KeywordReward(tok, negative=[3])
    with pytest.raises(ValueError, match=r"\['fine'\]"):
        verifiable.KeywordReward(tok, positive=["fine"], negative=["Fine"])
