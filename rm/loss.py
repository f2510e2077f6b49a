"""The Bradley-Terry loss of one ranking of K responses, from its K scalar rewards (InstructGPT batching)."""

import torch
import torch.nn.functional as F


def comparison_pairs(tie_groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (better, worse) index tensors of the ranking's ordered comparisons; tied responses make none.

    `tie_groups[i]` is the rank of response i's tie group, 0 = best, so i beats j exactly when its group is lower.
    A strict ranking of K responses gives K(K-1)/2 comparisons.
    """
    better, worse = torch.nonzero(tie_groups[:, None] < tie_groups[None, :], as_tuple=True)
    return better, worse


# loss = mean over comparisons (b, w) of [ -log σ(r_b − r_w − m) + c·(r_b + r_w)² ]
def ranking_loss(
    rewards: torch.Tensor, tie_groups: torch.Tensor, margin: float = 0.0, center_coefficient: float = 0.0
) -> torch.Tensor:
    """Return the Bradley-Terry loss of one ranking: the mean of its pairwise losses, so each ranking weighs one.

    For K=2 this is TRL's RewardTrainer loss, including its centering term c·mean((r_chosen + r_rejected)²)
    (Eisenstein et al. 2023), which keeps rewards near zero.
    """
    better, worse = comparison_pairs(tie_groups)
    if better.numel() == 0:
        raise ValueError("a ranking whose responses all tie has no comparison to learn from")
    r_better, r_worse = rewards[better], rewards[worse]
    loss = -F.logsigmoid(r_better - r_worse - margin).mean()
    if center_coefficient:
        loss = loss + center_coefficient * ((r_better + r_worse) ** 2).mean()
    return loss


def batch_loss(
    rewards: list[torch.Tensor], tie_groups: list[torch.Tensor], margin: float = 0.0, center_coefficient: float = 0.0
) -> torch.Tensor:
    """Return the mean of the rankings' losses: a K=8 ranking weighs as much as a K=2 one, not 28 times more."""
    losses = [ranking_loss(r, g, margin, center_coefficient) for r, g in zip(rewards, tie_groups, strict=True)]
    return torch.stack(losses).mean()


def correct_comparisons(rewards: torch.Tensor, tie_groups: torch.Tensor) -> tuple[int, int]:
    """Return (comparisons the rewards order correctly, comparisons) of one ranking, for pairwise accuracy."""
    better, worse = comparison_pairs(tie_groups)
    return int((rewards[better] > rewards[worse]).sum()), better.numel()
