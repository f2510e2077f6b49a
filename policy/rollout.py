"""Rollouts: sample responses to a batch of prompts, score them, and keep what every policy loss needs.

Layout of every (B, T) tensor: the prompt left-padded to width P, then the completion right-padded.
The completion mask is 1 from the first response token up to and including the first EOS, and 0 on padding
and anything after the EOS (RLHF_NOTES: pad != EOS, EOS stays visible so the policy learns to stop).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from core.batching import left_pad
from core.chat import chat_prompt_ids
from core.generation import Engine
from policy.logprobs import PromptSharing, token_logprobs
from policy.lora import reference_mode
from policy.reward_mix import as_reward_mix


@dataclass
class Rollout:
    """One batch of sampled responses with their masks, log-probs and rewards; row b answers prompts[b]."""

    input_ids: torch.Tensor  # (B, T) prompt (left-padded) + completion (right-padded)
    attention_mask: torch.Tensor  # (B, T) 1 on real prompt tokens and on the completion up to its EOS
    completion_mask: torch.Tensor  # (B, T) 1 on response tokens, EOS included
    old_logprobs: torch.Tensor | None  # (B, T) log p_policy(token) at sampling time, 0 off the completion
    ref_logprobs: torch.Tensor | None  # (B, T) log p_reference(token), None when no KL term needs it
    rewards: torch.Tensor  # (B,) score per response, missing-EOS penalty applied
    group_ids: torch.Tensor  # (B,) index of the prompt each response answers
    prompts: list  # text, or a conversation's messages
    texts: list[str]  # decoded responses, cut at EOS
    has_eos: torch.Tensor  # (B,) bool: the response ended with EOS rather than max_new_tokens
    prompt_width: int  # P: completion tokens start at column P
    reward_components: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B,) raw, unweighted
    columns: list[dict] = field(default_factory=list)  # each row's prompt columns (answer, ...), per response

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)  # (B,)

    def rows(self, index: torch.Tensor) -> "Rollout":
        """Return the sub-batch of the given rows (a minibatch); per-row lists follow the tensors."""
        pick = index.tolist()

        def take(tensor):
            return None if tensor is None else tensor[index]

        return Rollout(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            completion_mask=self.completion_mask[index],
            old_logprobs=take(self.old_logprobs),
            ref_logprobs=take(self.ref_logprobs),
            rewards=self.rewards[index],
            group_ids=self.group_ids[index],
            prompts=[self.prompts[i] for i in pick],
            texts=[self.texts[i] for i in pick],
            has_eos=self.has_eos[index],
            prompt_width=self.prompt_width,
            reward_components={name: scores[index] for name, scores in self.reward_components.items()},
            columns=[self.columns[i] for i in pick] if self.columns else [],
        )


RewardFn = Callable[[list[str], list[str]], "list[float] | torch.Tensor"]


def score_responses(reward_fn: RewardFn, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """Return the rewards as a float tensor on CPU, refusing a wrong count or non-finite values."""
    scores = reward_fn(prompts, responses)
    scores = torch.as_tensor(scores.tolist() if torch.is_tensor(scores) else list(scores), dtype=torch.float32)
    if scores.shape != (len(responses),):
        raise ValueError(f"the reward returned shape {tuple(scores.shape)} for {len(responses)} responses")
    if not torch.isfinite(scores).all():
        raise ValueError("the reward returned NaN or infinite values")
    return scores


def prompt_rows(tokenizer, prompts: list, max_prompt_tokens: int) -> list[list[int]]:
    """Return the chat-templated token ids of each prompt (text or a conversation) within `max_prompt_tokens`.

    A long conversation loses its oldest whole turns; one whose last user turn alone does not fit raises
    `core.chat.PromptTooLong` (the pre-launch check refuses such prompts by id before a run starts).
    """
    return [chat_prompt_ids(tokenizer, prompt, max_prompt_tokens) for prompt in prompts]


def left_pad_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int, device) -> tuple[torch.Tensor, ...]:
    """Return (input_ids, attention_mask) of the chat-templated prompts, left-padded, on `device`."""
    rows = prompt_rows(tokenizer, prompts, max_prompt_tokens)
    return tuple(tensor.to(device) for tensor in left_pad(rows, tokenizer.pad_token_id))


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    max_prompt_tokens: int,
    lockstep=False,
):
    """Return (input_ids, attention_mask, completion_mask, has_eos, prompt_width) for one sampled response per prompt.

    Sampling is from the full distribution at `temperature` (no top-k/top-p), so the log-probs the losses use
    are those of the distribution that produced the tokens. Call it on the unwrapped model under DDP.
    `lockstep`: every process runs the same forward passes (`Sharding.lockstep`).
    """
    engine = Engine(model, tokenizer, lockstep=lockstep)
    generated = engine.generate(prompt_rows(tokenizer, prompts, max_prompt_tokens), max_new_tokens, temperature)
    input_ids = torch.cat([generated.prompt_ids, generated.completion_ids], dim=1)
    attention_mask = torch.cat([generated.prompt_mask, generated.completion_mask], dim=1)
    full_completion_mask = torch.cat([torch.zeros_like(generated.prompt_mask), generated.completion_mask], dim=1)
    return input_ids, attention_mask, full_completion_mask, generated.has_eos, generated.prompt_ids.shape[1]


def lockstep_sharing(prompt_width: int, lockstep: bool) -> PromptSharing | None:
    """Return the prompt sharing a rollout's forward passes use: found from the data (None), or in lockstep one
    plain pass, so that every process runs the same passes whatever prompts it drew."""
    return PromptSharing(prompt_width) if lockstep else None


def decode_completions(tokenizer, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
    """Return each response's text without special tokens (the EOS is not part of what a reward model reads)."""
    return [
        tokenizer.decode(row[mask.bool()].tolist(), skip_special_tokens=True).strip()
        for row, mask in zip(input_ids, completion_mask, strict=True)
    ]


@torch.no_grad()
def collect_rollout(
    policy,
    tokenizer,
    prompts: list[str],
    reward_fn: RewardFn,
    *,
    reference=None,
    responses_per_prompt: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    max_prompt_tokens: int = 512,
    missing_eos_penalty: float | None = None,
    need_old_logprobs: bool = True,
    need_ref_logprobs: bool = True,
    lockstep: bool = False,
    columns: list[dict] | None = None,
) -> Rollout:
    """Sample `responses_per_prompt` responses per prompt, score them, and compute the log-probs asked for.

    `policy` is the plain model (under DDP: accelerator.unwrap_model(model)): nothing here needs gradients.
    With LoRA, `reference` None means "the policy with its adapter off". `reward_fn`: a `RewardMix` (total and
    components), a scorer or a (prompts, responses) callable; `columns`: each prompt's columns, which reward
    functions receive as keywords.
    """
    repeated = [prompt for prompt in prompts for _ in range(responses_per_prompt)]
    repeated_columns = [row for row in (columns or [{}] * len(prompts)) for _ in range(responses_per_prompt)]
    group_ids = torch.arange(len(prompts)).repeat_interleave(responses_per_prompt)
    input_ids, attention_mask, completion_mask, has_eos, prompt_width = generate(
        policy, tokenizer, repeated, max_new_tokens, temperature, max_prompt_tokens, lockstep
    )
    texts = decode_completions(tokenizer, input_ids, completion_mask)
    rewards, components = as_reward_mix(reward_fn).score(repeated, texts, repeated_columns, (~has_eos).tolist())
    if missing_eos_penalty is not None:
        rewards = rewards - missing_eos_penalty * (~has_eos).float().cpu()
    old_logprobs = ref_logprobs = None
    sharing = lockstep_sharing(prompt_width, lockstep)
    if need_old_logprobs:
        old_logprobs, _ = token_logprobs(policy, input_ids, attention_mask, completion_mask, temperature, sharing)
    if need_ref_logprobs:
        with reference_mode(policy, reference) as reference_model:
            ref_logprobs, _ = token_logprobs(
                reference_model, input_ids, attention_mask, completion_mask, temperature, sharing
            )
    return Rollout(
        input_ids=input_ids,
        attention_mask=attention_mask,
        completion_mask=completion_mask,
        old_logprobs=old_logprobs,
        ref_logprobs=ref_logprobs,
        rewards=rewards.to(input_ids.device),
        group_ids=group_ids.to(input_ids.device),
        prompts=repeated,
        texts=texts,
        has_eos=has_eos,
        prompt_width=prompt_width,
        reward_components={name: scores.to(input_ids.device) for name, scores in components.items()},
        columns=repeated_columns,
    )
