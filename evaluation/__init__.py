"""Judging policies from people's blind votes: win rates and a Bradley-Terry leaderboard."""
