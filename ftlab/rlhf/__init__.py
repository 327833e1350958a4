"""RLHF from scratch: reward.py (Bradley-Terry reward models, chapter 07); PPO and DPO live beside it (chapter 08)."""
