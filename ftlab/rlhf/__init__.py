"""RLHF from scratch: reward.py (Bradley-Terry reward models, chapter 07) and judge.py (gold judges and
best-of-N, chapter 07); ppo.py, dpo.py and
verifiable.py (a rule-based reward with a number to check the policy against) for chapter 08."""
