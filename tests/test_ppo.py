"""ftlab.rlhf.ppo: GAE against a hand-computed case, the clipped losses, the KL-shaped reward, and one
PPO update against TRL 1.12's PPOTrainer on the same rollout (tiny model)."""

import copy
import math

import pytest
import torch

from ftlab import compare, data, models
from ftlab.rlhf import ppo
from ftlab.tuners import lora


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    # gamma = 0.9, lambda = 0.5:
    #   delta_2 = 1 + 0 - 0.7 = 0.3                 A_2 = 0.3
    #   delta_1 = 0 + 0.9 * 0.7 - 0.6 = 0.03        A_1 = 0.03 + 0.45 * 0.3 = 0.165
    #   delta_0 = 0 + 0.9 * 0.6 - 0.5 = 0.04        A_0 = 0.04 + 0.45 * 0.165 = 0.11425
    advantages, returns = ppo.gae(rewards, values, gamma=0.9, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.11425, 0.165, 0.3]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, torch.tensor([[0.61425, 0.765, 1.0]]), atol=1e-6, rtol=0)


def test_gae_lambda_one_is_reward_to_go_minus_value():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    advantages, returns = ppo.gae(rewards, values, gamma=1.0, lam=1.0)
    reward_to_go = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(advantages, reward_to_go - values)
    torch.testing.assert_close(returns, reward_to_go)


def test_gae_lambda_zero_is_one_step_td():
    rewards, values = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.25]])
    advantages, _ = ppo.gae(rewards, values, gamma=0.5, lam=0.0)
    torch.testing.assert_close(advantages, torch.tensor([[1.0 + 0.5 * 0.25 - 0.5, 2.0 - 0.25]]))


def test_clipped_policy_loss_cases():
    mask = torch.ones(1, 3, dtype=torch.bool)
    ratio = torch.tensor([[1.5, 0.5, 0.5]])
    advantages = torch.tensor([[2.0, 2.0, -1.0]])
    new = ratio.log().requires_grad_()
    loss, clipfrac, _, _ = ppo.clipped_policy_loss(new, torch.zeros(1, 3), advantages, mask, cliprange=0.2)
    # objective per token: min(3, 1.2 * 2) = 2.4;  min(1, 0.8 * 2) = 1.0;  min(-0.5, -0.8) = -0.8
    assert loss.item() == pytest.approx(-(2.4 + 1.0 - 0.8) / 3, abs=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 3)
    loss.backward()
    # A clipped token gives no gradient; an unclipped one gives -A * rho / n.
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, -2.0 * 0.5 / 3, 0.0]]))


def test_clipped_value_loss_takes_the_worse_of_the_two():
    mask = torch.ones(1, 2, dtype=torch.bool)
    new, old, returns = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    loss, clipfrac = ppo.clipped_value_loss(new, old, returns, mask, cliprange_value=0.2)
    # token 0: unclipped (1-1)^2 = 0, clipped (0.2-1)^2 = 0.64 -> 0.64;  token 1: both 0.81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_kl_shaped_reward_sum_and_placement():
    logprobs = torch.tensor([[0.3, 0.1, -0.2, ppo.INVALID_LOGPROB]])
    ref = torch.tensor([[0.0, 0.0, 0.0, ppo.INVALID_LOGPROB]])
    rewards, kl, non_score = ppo.kl_shaped_rewards(logprobs, ref, torch.tensor([1.0]), torch.tensor([2]), kl_coef=0.1)
    assert rewards.sum().item() == pytest.approx(0.98)
    torch.testing.assert_close(rewards, torch.tensor([[-0.03, -0.01, 0.02, 1.0]]))  # score one past the last token
    full, _, _ = ppo.kl_shaped_rewards(logprobs[:, :3], ref[:, :3], torch.tensor([1.0]), torch.tensor([2]), kl_coef=0.1)
    assert full[0, 2].item() == pytest.approx(1.02)  # no room after the last token: the score lands on it
    k3 = ppo.kl_penalty(torch.tensor([0.3]), torch.tensor([0.0]), "k3")
    assert k3.item() == pytest.approx(math.exp(-0.3) - 1 + 0.3)
    with pytest.raises(ValueError, match="estimator"):
        ppo.kl_penalty(logprobs, ref, "k2")


def test_helpers_match_trl():
    from trl.experimental.ppo.ppo_trainer import masked_whiten, truncate_response
    from trl.experimental.utils import first_true_indices

    torch.manual_seed(0)
    bools = torch.rand(4, 7) > 0.7
    assert torch.equal(ppo.first_true_index(bools), first_true_indices(bools))
    responses = torch.randint(3, 9, (4, 7))
    assert torch.equal(ppo.truncate_after_stop(responses, 5, 0), truncate_response(5, 0, responses))
    values, mask = torch.randn(4, 7), torch.rand(4, 7) > 0.3
    assert torch.equal(ppo.masked_whiten(values, mask), masked_whiten(values, mask))
    assert torch.equal(ppo.masked_whiten(values, mask, False), masked_whiten(values, mask, False))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="kl_coef"):
        ppo.PPOConfig(kl_coef=-1)
    with pytest.raises(ValueError, match="response_length"):
        ppo.PPOConfig(response_length=0)
    with pytest.raises(ValueError, match="stop_id"):
        ppo.rollout(None, None, None, torch.ones(2, 3, dtype=torch.long), pad_id=0, stop_id=0, cfg=ppo.PPOConfig())
    with pytest.raises(ValueError, match="queries"):
        ppo.rollout(None, None, None, torch.ones(3, dtype=torch.long), pad_id=0, stop_id=2, cfg=ppo.PPOConfig())


def _tiny_models():
    base, tok = models.load("tiny-llama")
    reward_model, _ = models.load("tiny-llama", task="classification", num_labels=1, seed=1)
    value_model = copy.deepcopy(reward_model)
    lora.add_lora(value_model, ["q_proj", "v_proj"], r=4, alpha=8, trainable=["score"])
    policy, peft_policy = compare.peft.lora_pair(base, ["q_proj", "v_proj"], r=4, alpha=8, b_std=0.05)
    return tok, policy, peft_policy, value_model, reward_model


def test_one_update_equals_trl_ppotrainer(tmp_path):
    tok, policy, peft_policy, value_model, reward_model = _tiny_models()
    tok.padding_side = "left"
    cfg = ppo.PPOConfig(response_length=8, num_ppo_epochs=1, kl_coef=0.05, missing_eos_penalty=1.0)
    prompts = [data.encode_chat(tok, r["prompt"])["input_ids"] for r in data.load("preferences", "train", n=8)]
    torch.manual_seed(0)
    query_responses, gen_logits = ppo.generate(policy, data.left_pad(prompts, tok.pad_token_id), tok.pad_token_id,
                                               tok.eos_token_id, cfg)
    result = compare.trl.ppo_parity(cfg, policy, peft_policy, value_model, reward_model, tok, prompts,
                                    query_responses, gen_logits, lr=0.5, output_dir=str(tmp_path))

    tensors = result["tensors"]
    for name in ("rollout log-probs", "reference log-probs", "values", "scores"):
        assert tensors[name] == 0, name
    assert tensors["GAE advantages (raw)"] <= 1e-6
    assert tensors["advantages (whitened)"] <= 1e-5
    for key in ("objective/kl", "objective/non_score_reward", "objective/scores", "objective/rlhf_reward",
                "loss/policy_avg", "loss/value_avg"):
        ours, theirs = result["scalars"][key]
        assert ours == pytest.approx(theirs, abs=1e-6), key
    assert result["moved"] > 1e-3  # the step really changed the weights, so equal weights after it mean equal gradients
    assert result["weights_max_abs"] <= 1e-6
