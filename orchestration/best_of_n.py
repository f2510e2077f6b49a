"""Best-of-N: sample N responses per prompt, keep the one a reward model scores highest.

The kept responses form an SFT set (rejection-sampling fine-tuning, as in Llama 2, Touvron et al. 2023, §3.2.3),
written in TRL's `messages` format so `train-sft --sft-file` (or TRL's SFTTrainer) takes it as is.
"""

import math
from dataclasses import dataclass
from pathlib import Path

from core.generation import Engine, sample_prompts
from data.export import sft_table, write_table


@dataclass
class BestOfN:
    """One prompt's N samples, each with its reward, and which was kept (None when every sample is empty)."""

    prompt_id: int | None
    prompt: str | list[dict]
    responses: list[str]
    rewards: list[float]

    @property
    def best(self) -> int | None:
        return pick_best(self.responses, self.rewards)

    @property
    def kept(self) -> str | None:
        return None if self.best is None else self.responses[self.best]


def pick_best(responses: list[str], rewards: list[float]) -> int | None:
    """Return the index of the highest-reward non-empty response (the first of equals), or None if all are empty."""
    candidates = [i for i, text in enumerate(responses) if text.strip() and not math.isnan(rewards[i])]
    return max(candidates, key=lambda i: (rewards[i], -i)) if candidates else None


def best_of_n(
    model, tokenizer, scorer, prompts: list[tuple[int | None, object]], n: int, temperature: float = 0.8,
    top_p: float = 1.0, max_new_tokens: int = 128, seed: int | None = None, prompts_per_call: int = 1, progress=None,
) -> list[BestOfN]:  # fmt: skip
    """Return, for each (prompt id, prompt), N sampled responses scored by `scorer` (a RewardScorer)."""
    if n < 2:
        raise ValueError(f"best-of-N needs N >= 2 samples per prompt, got {n}")
    if not temperature > 0:
        raise ValueError(f"best-of-N samples: temperature must be > 0, got {temperature}")
    engine, results = Engine(model, tokenizer), []
    for start in range(0, len(prompts), prompts_per_call):
        chunk = prompts[start : start + prompts_per_call]
        found = sample_prompts(engine, [prompt for _, prompt in chunk], n, temperature, top_p, max_new_tokens, seed)
        for (prompt_id, prompt), samples in zip(chunk, found, strict=True):
            texts = [sample.text for sample in samples]
            rewards = scorer.score([prompt] * n, texts).tolist()
            results.append(BestOfN(prompt_id, prompt, texts, rewards))
            if progress:
                progress(len(results))
    return results


def write_sft_set(results: list[BestOfN], path: str | Path, fmt: str | None = None) -> int:
    """Write each prompt's kept response as an SFT set in TRL's messages format; return the rows written."""
    rows = [
        {
            "prompt_id": result.prompt_id,
            "prompt": result.prompt,
            "completion": result.kept,
            "source": f"best-of-{len(result.responses)}",
        }  # fmt: skip
        for result in results
        if result.kept is not None
    ]
    return write_table(sft_table(rows), path, fmt)
