"""RLHF from scratch: reward.py (Bradley-Terry reward models, chapter 07) and judge.py (gold judges and
best-of-N, chapters 07 and 08); for chapter 08 ppo.py, dpo.py (and its family), grpo.py (GRPO and RLOO),
verifiable.py (a rule-based reward with a number to check the policy against) and frontier.py (a policy
scored by its proxy and by a gold judge: over-optimisation and the reward-KL frontier)."""
