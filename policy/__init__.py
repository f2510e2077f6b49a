"""Policy optimization: PPO, GRPO and DPO on accelerate, each objective in its own file (`ppo.py`, `grpo.py`, `dpo.py`)."""
