"""Generalized Advantage Estimation (Schulman et al. 2016) over the tokens of a batch of responses."""

import torch


# δ_t = r_t + γ V_{t+1} − V_t,   Â_t = δ_t + γλ Â_{t+1},   R_t = Â_t + V_t
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages, returns), both (B, C) and 0 off the mask.

    rewards, values, mask: (B, C), one column per response token, each row's valid tokens a prefix (right padding).
    The value after a response's last token is 0: the episode ends there. Masking rewards and values first makes
    padding contribute δ = 0, so what lies after the EOS never reaches an advantage.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    lastgaelam = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        nextvalues = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages[:, t] = lastgaelam
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return values scaled to mean 0, variance 1 over the valid tokens only (padding would skew both)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(variance + eps) * mask.to(values.dtype)
