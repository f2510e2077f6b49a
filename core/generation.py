"""Sample K responses to a prompt in one batched `generate`, with the chat template, cut at the first EOS."""

from dataclasses import asdict, dataclass

import torch

from core.chat import chat_prompt_ids, cut_at_eos, eos_token_ids


@dataclass
class SamplingParams:
    """How responses are sampled; stored beside every response so a ranking can be traced to its settings."""

    k: int = 4  # responses per prompt, 2..8
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int | None = None  # None: a fresh random draw each time

    def __post_init__(self):
        if not 2 <= self.k <= 8:
            raise ValueError(f"k (responses per prompt) must be between 2 and 8, got {self.k}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.max_new_tokens >= 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sample:
    text: str
    finish_reason: str  # 'eos' when the model stopped, 'length' when max_new_tokens cut it
    num_tokens: int


@torch.no_grad()
def sample(
    model, tokenizer, prompt: str, k: int, temperature: float, top_p: float, max_new_tokens: int, seed: int | None
) -> list[Sample]:
    """Return k sampled responses to one prompt from a single batched `generate` call (the prompt runs once)."""
    if seed is not None:
        torch.manual_seed(seed)
    input_ids = torch.tensor([chat_prompt_ids(tokenizer, prompt)], device=model.device)  # (1, P)
    eos_ids = eos_token_ids(model, tokenizer)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        num_return_sequences=k,
        eos_token_id=sorted(eos_ids),
        pad_token_id=tokenizer.pad_token_id,
    )  # (K, P + T)
    samples = []
    for row in output[:, input_ids.shape[1] :].tolist():
        completion, reason = cut_at_eos(row, eos_ids, tokenizer.pad_token_id)
        text = tokenizer.decode(completion, skip_special_tokens=True).strip()
        samples.append(Sample(text=text, finish_reason=reason, num_tokens=len(completion)))
    return samples


def sample_responses(model, tokenizer, prompt: str, params: SamplingParams) -> list[Sample]:
    """Return `params.k` responses for one annotation item, sampled as the settings say."""
    return sample(
        model, tokenizer, prompt, params.k, params.temperature, params.top_p, params.max_new_tokens, params.seed
    )
