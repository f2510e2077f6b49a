"""Per-token log-probabilities of given completion tokens, the quantity every policy loss is built from."""

import torch
import torch.nn.functional as F


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Return positions counting from the first real token, so left padding does not shift them."""
    positions = attention_mask.long().cumsum(-1) - 1  # (B, T)
    return positions.clamp(min=0)


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log p of each next token, entropy) at every position, zeroed where completion_mask is 0.

    input_ids: (B, T) prompt + completion, prompt left-padded, completion right-padded.
    completion_mask: (B, T) 1 on completion tokens (EOS included, padding and anything after EOS excluded).
    Logits are divided by the sampling temperature: log-probs for ratios and KL must be those of the
    distribution the rollout sampled from ("N implementation details of RLHF with PPO").
    Output position t holds log p(input_ids[t] | input_ids[:t]); position 0 is always 0.
    """
    # Logits only from the column before the first completion token: the vocabulary projection of the prompt
    # columns is wasted work (a large share of a small model's cost with a 49k vocabulary).
    first_completion = int(completion_mask.any(0).long().argmax()) if completion_mask.any() else 1
    keep = input_ids.shape[1] - max(first_completion - 1, 0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=keep,
    ).logits  # (B, keep, V)
    skipped = input_ids.shape[1] - logits.shape[1]
    per_token, entropy = logprobs_from_logits(logits, input_ids[:, skipped:], completion_mask[:, skipped:], temperature)
    zeros = per_token.new_zeros(per_token.shape[0], skipped)
    return torch.cat([zeros, per_token], dim=1), torch.cat([zeros, entropy], dim=1)


def logprobs_from_logits(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `token_logprobs`'s (log-probs, entropy) from logits already computed (PPO reads values from the same pass)."""
    logits = logits[:, :-1].float() / temperature  # (B, T-1, V): predicts tokens 1..T-1
    log_softmax = F.log_softmax(logits, dim=-1)
    picked = torch.gather(log_softmax, -1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)  # (B, T-1)
    mask = completion_mask[:, 1:].to(picked.dtype)
    zeros = picked.new_zeros(picked.shape[0], 1)
    return torch.cat([zeros, picked * mask], dim=1), torch.cat([zeros, entropy * mask], dim=1)


def sequence_logprobs(model, input_ids, attention_mask, completion_mask, temperature: float = 1.0) -> torch.Tensor:
    """Return the log-probability of each completion, summed over its tokens only (prompt and padding masked)."""
    per_token, _ = token_logprobs(model, input_ids, attention_mask, completion_mask, temperature)
    return per_token.sum(-1)  # (B,)
