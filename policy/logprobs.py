"""Per-token log-probabilities of given completion tokens, the quantity every policy loss is built from."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.generation import position_ids_from_mask
from core.models import checkpointing


@dataclass
class PromptSharing:
    """Where a batch's completions start and which rows share a prompt: what `token_logprobs` needs to know.

    A collator knows it when it builds the batch; `find_prompt_sharing` reads it off the masks instead, at the
    cost of host reads (a GPU synchronisation each).
    """

    width: int  # P: every completion token sits at column P or later
    prompt_rows: torch.Tensor | None = None  # (N,) one row holding each distinct prompt; None: run one plain pass
    prompt_of_row: torch.Tensor | None = None  # (B,) which of the N prompts each row continues


def find_prompt_sharing(input_ids, attention_mask, completion_mask) -> PromptSharing:
    """Return the prompt sharing of a batch whose prompts are left-padded to a common width: rows with equal prompts share."""
    width = int(completion_mask.any(0).long().argmax())  # P: the first column holding a completion token
    if width == 0:
        return PromptSharing(0)
    prompts, prompt_of_row = torch.unique(
        torch.cat([input_ids[:, :width], attention_mask[:, :width]], dim=1), dim=0, return_inverse=True
    )  # (N, 2P), (B,)
    if len(prompts) == len(input_ids):  # nothing shared
        return PromptSharing(width)
    rows = torch.arange(len(input_ids), device=input_ids.device)
    first_row = torch.full((len(prompts),), len(input_ids), device=input_ids.device)
    first_row = first_row.scatter_reduce(0, prompt_of_row, rows, reduce="amin")  # (N,) a row holding each prompt
    return PromptSharing(width, first_row, prompt_of_row)


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    sharing: PromptSharing | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log p of each next token, entropy) at every position, zeroed where completion_mask is 0.

    input_ids: (B, T) prompt + completion; every completion token at column `sharing.width` or later.
    completion_mask: (B, T) 1 on completion tokens (EOS included, padding and anything after EOS excluded).
    Logits are divided by the sampling temperature: log-probs for ratios and KL must be those of the
    distribution the rollout sampled from ("N implementation details of RLHF with PPO").
    Output position t holds log p(input_ids[t] | input_ids[:t]); position 0 is always 0.
    `sharing`: see `completion_logits`.
    """
    if sharing is None and not completion_mask.any():
        zeros = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        return zeros, zeros.clone()
    logits = completion_logits(model, input_ids, attention_mask, completion_mask, sharing)  # (B, T - P + 1, V)
    skipped = input_ids.shape[1] - logits.shape[1]
    per_token, entropy = logprobs_from_logits(logits, input_ids[:, skipped:], completion_mask[:, skipped:], temperature)
    zeros = per_token.new_zeros(per_token.shape[0], skipped)
    return torch.cat([zeros, per_token], dim=1), torch.cat([zeros, entropy], dim=1)


def completion_logits(model, input_ids, attention_mask, completion_mask, sharing: PromptSharing | None = None):
    """Return the logits of the last T - P + 1 positions, those that predict completion tokens: (B, T - P + 1, V).

    `sharing`: given by a collator that knows it; None finds it from the masks (prompts left-padded to a common
    width, completions right-padded from it), which reads values back from the device.

    Rows that share a prompt (GRPO's G responses, DPO's chosen and rejected) run that prompt once: its
    key/value cache is repeated for each of its rows and gradients flow back through it, which is exact
    (causal attention: a prompt's states do not depend on what follows). Only completion positions get
    logits, the vocabulary-wide part of a small model's cost.
    """
    sharing = sharing or find_prompt_sharing(input_ids, attention_mask, completion_mask)
    width = sharing.width
    positions = position_ids_from_mask(attention_mask)
    # A checkpointed layer keeps no key/value cache while gradients flow, so a shared prompt could not pass its
    # states on: such a model runs every row whole (each row holds its own prompt in either layout).
    recomputes = model.training and torch.is_grad_enabled() and checkpointing(model)
    if sharing.prompt_rows is None or recomputes:  # nothing shared: one plain pass
        return model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            logits_to_keep=input_ids.shape[1] - max(width - 1, 0),
        ).logits  # (B, T - P + 1, V)
    prompt_mask = attention_mask[sharing.prompt_rows, :width]  # (N, P)
    prompt = model(
        input_ids=input_ids[sharing.prompt_rows, :width],
        attention_mask=prompt_mask,
        position_ids=position_ids_from_mask(prompt_mask),
        use_cache=True,
        logits_to_keep=1,
    )  # logits (N, 1, V): the last prompt position predicts each completion's first token
    cache = prompt.cache
    cache.reorder_cache(sharing.prompt_of_row)  # (N, ...) -> (B, ...), differentiable
    completion = model(
        input_ids=input_ids[:, width:],
        attention_mask=attention_mask,
        position_ids=positions[:, width:],
        cache=cache,
        use_cache=False,
    ).logits  # (B, T - P, V)
    return torch.cat([prompt.logits[sharing.prompt_of_row], completion], dim=1)  # (B, T - P + 1, V)


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


def sequence_logprobs(
    model, input_ids, attention_mask, completion_mask, temperature: float = 1.0, sharing: PromptSharing | None = None
) -> torch.Tensor:
    """Return the log-probability of each completion, summed over its tokens only (prompt and padding masked).

    log p(token) = logit(token) − logsumexp(logits): no entropy and no vocabulary-wide log-softmax kept, so fewer
    and smaller kernels than `token_logprobs`.
    """
    logits = completion_logits(model, input_ids, attention_mask, completion_mask, sharing)  # (B, K, V)
    logits = logits[:, :-1].float() / temperature  # (B, K - 1, V): predicts the last K - 1 tokens
    targets = input_ids[:, input_ids.shape[1] - logits.shape[1] :]  # (B, K - 1)
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    mask = completion_mask[:, completion_mask.shape[1] - logits.shape[1] :].to(picked.dtype)
    return (picked * mask).sum(-1)  # (B,)


def answer_logprobs(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Return log p of each completion token, flattened row by row: (N,) for the batch's N completion tokens.

    The LM head runs only on the N positions that predict a completion token (hidden states selected by a mask
    before the projection: transformers' boolean `logits_to_keep`), so neither prompt columns nor padding get
    vocabulary-wide logits, and log p = −cross-entropy is one fused log-softmax and pick, with no entropy.
    Any layout works (left- or right-padded, answers starting anywhere); a token at column 0 has no prediction.
    """
    predicts = torch.zeros_like(completion_mask, dtype=torch.bool)  # (B, T): position t predicts token t + 1
    predicts[:, :-1] = completion_mask[:, 1:].bool()
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=predicts,
    ).logits  # (N, V)
    targets = input_ids[:, 1:][predicts[:, :-1]]  # (N,) the same positions, one column on, in the same order
    return -F.cross_entropy(logits.float(), targets, reduction="none")
