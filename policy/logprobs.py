"""Per-token log-probabilities of given completion tokens, the quantity every policy loss is built from."""

import torch
import torch.nn.functional as F

from core.generation import position_ids_from_mask


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log p of each next token, entropy) at every position, zeroed where completion_mask is 0.

    input_ids: (B, T) prompt + completion, prompt left-padded to width P, completion right-padded from column P.
    completion_mask: (B, T) 1 on completion tokens (EOS included, padding and anything after EOS excluded).
    Logits are divided by the sampling temperature: log-probs for ratios and KL must be those of the
    distribution the rollout sampled from ("N implementation details of RLHF with PPO").
    Output position t holds log p(input_ids[t] | input_ids[:t]); position 0 is always 0.

    Rows that share a prompt (GRPO's G responses, DPO's chosen and rejected) run that prompt once: its
    key/value cache is repeated for each of its rows and gradients flow back through it, which is exact
    (causal attention: a prompt's states do not depend on what follows). Only completion positions get
    logits, the vocabulary-wide part of a small model's cost.
    """
    if not completion_mask.any():
        zeros = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        return zeros, zeros.clone()
    width = int(completion_mask.any(0).long().argmax())  # P: the first column holding a completion token
    positions = position_ids_from_mask(attention_mask)
    prompts, prompt_of_row = torch.unique(
        torch.cat([input_ids[:, :width], attention_mask[:, :width]], dim=1), dim=0, return_inverse=True
    )  # (N, 2P), (B,)
    if width == 0 or len(prompts) == len(input_ids):  # nothing shared: one plain pass
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            logits_to_keep=input_ids.shape[1] - max(width - 1, 0),
        ).logits  # (B, T - P + 1, V)
    else:
        prompt_ids, prompt_mask = prompts[:, :width], prompts[:, width:]
        prompt = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position_ids_from_mask(prompt_mask),
            use_cache=True,
            logits_to_keep=1,
        )  # logits (N, 1, V): the last prompt position predicts each completion's first token
        cache = prompt.cache
        cache.reorder_cache(prompt_of_row)  # (N, ...) -> (B, ...), differentiable
        completion = model(
            input_ids=input_ids[:, width:],
            attention_mask=attention_mask,
            position_ids=positions[:, width:],
            cache=cache,
            use_cache=False,
        ).logits  # (B, T - P, V)
        logits = torch.cat([prompt.logits[prompt_of_row], completion], dim=1)  # (B, T - P + 1, V)
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
    with torch.no_grad():  # a metric only: no loss takes its gradient, so keep it out of the graph
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)  # (B, T-1)
    mask = completion_mask[:, 1:].to(picked.dtype)
    zeros = picked.new_zeros(picked.shape[0], 1)
    return torch.cat([zeros, picked * mask], dim=1), torch.cat([zeros, entropy * mask], dim=1)


def sequence_logprobs(model, input_ids, attention_mask, completion_mask, temperature: float = 1.0) -> torch.Tensor:
    """Return the log-probability of each completion, summed over its tokens only (prompt and padding masked)."""
    per_token, _ = token_logprobs(model, input_ids, attention_mask, completion_mask, temperature)
    return per_token.sum(-1)  # (B,)
