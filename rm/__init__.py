"""Reward models: Bradley-Terry training from K-wise rankings (`rm.train`) and scoring (`rm.score.RewardScorer`)."""
