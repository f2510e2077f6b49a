"""The one generation engine: annotation sampling, the playground, blind comparisons and PPO/GRPO rollouts all
sample through `Engine.generate`.

- Batched across prompts: the rows of many prompts go into one `generate` call, prompts left-padded.
- CPU (eager, dynamic cache): prompts that repeat (K answers to one prompt, GRPO's G) are prefilled once and
  their key/value cache is shared by their rows. Measured faster here than a static cache (bench/generation.py).
- CUDA (compiled): a static key/value cache with compiled decoding (CUDA graphs), launch overhead being the cost
  of a decode step there. Shapes are bucketed so compiles stay few: rows padded up to a bucket size, prompt
  width up to a multiple, `max_new_tokens` fixed by the caller per run.
- Sampling reads only what the caller asks for: the model's own generation defaults (repetition_penalty,
  min_p, ...) are hidden, so rollouts sample from softmax(logits / T), the distribution their log-probs describe.
- Weights are read at each call: LoRA adapters stay unmerged (merging into bf16 base weights every step would
  drift them) and the compiled graph reads the live parameters, which optimizers update in place.
"""

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
from transformers import GenerationConfig

from core.batching import left_pad
from core.chat import chat_prompt_ids, cut_at_eos, eos_token_ids

CPU_MAX_NEW_TOKENS, GPU_MAX_NEW_TOKENS = 128, 256
CPU_MAX_NEW_TOKENS_REASON = (
    "on a CPU the default model writes about 40 tokens/s for 4 responses, so 128 new tokens keep an item near "
    "15 s to sample and two annotators at 30 s per item never wait; 256 would double that"
)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # compiled path: a batch is padded up to one of these
PROMPT_MULTIPLE = 64  # compiled path: prompt width padded up to a multiple of this


def default_batch_rows() -> int:
    """Return how many sequences the annotation sampler puts in one call when the settings leave it open.

    Measured on this project's 2-core CPU, default model, K=4 x 48 tokens: 1, 2 and 4 prompts per call gave 19, 37
    and 50 tokens/s, the 4-prompt call taking 1.5x as long as a 1-prompt one: 16 rows. A GPU takes 64 as easily.
    """
    return 64 if torch.cuda.is_available() else 16


def default_max_new_tokens() -> int:
    """Return the annotation sampler's response length when the settings leave it open: shorter on a CPU."""
    return GPU_MAX_NEW_TOKENS if torch.cuda.is_available() else CPU_MAX_NEW_TOKENS


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


@dataclass
class Generated:
    """One `generate` call's rows: left-padded prompts, then completions cut after their first EOS."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P)
    completion_ids: torch.Tensor  # (B, C) pad after the first EOS
    completion_mask: torch.Tensor  # (B, C) 1 up to and including the first EOS
    has_eos: torch.Tensor  # (B,) False: cut by max_new_tokens
    logprobs: torch.Tensor | None = None  # (B, C) log p of each sampled token under the sampling distribution

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Return positions counting from the first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_ids: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mask, has_eos): mask is 1 up to and including the first EOS of each row, 0 after it.

    A row with no EOS keeps every token (it was cut by max_new_tokens, no padding follows its last token).
    """
    is_eos = torch.isin(completion_ids, torch.tensor(sorted(eos_ids), device=completion_ids.device))  # (B, C)
    has_eos = is_eos.any(-1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(-1), completion_ids.shape[1] - 1)  # (B,)
    positions = torch.arange(completion_ids.shape[1], device=completion_ids.device)
    mask = (positions.unsqueeze(0) <= first_eos.unsqueeze(1)).long()  # (B, C)
    return mask, has_eos


def bucket(count: int, buckets: tuple[int, ...] = ROW_BUCKETS) -> int:
    """Return the smallest bucket that holds `count` (a multiple of the largest past it)."""
    for size in buckets:
        if count <= size:
            return size
    return math.ceil(count / buckets[-1]) * buckets[-1]


@contextlib.contextmanager
def plain_generation_defaults(model):
    """Hide the model's own generation defaults while sampling.

    transformers fills every setting our GenerationConfig leaves unset from `model.generation_config`, so a
    model shipped with repetition_penalty or min_p would sample from a distribution other than the one asked
    for (for rollouts: other than softmax(logits / T), which the losses' log-probs describe).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel (peft is slow to import)
    saved = base.generation_config
    base.generation_config = GenerationConfig(
        bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id, pad_token_id=saved.pad_token_id
    )
    try:
        yield
    finally:
        base.generation_config = saved


def shared_prompt_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """Return a key/value cache of every row's prompt but its last token, each distinct prompt computed once.

    `generate` with G copies of a prompt would run the prompt G times; with this cache it runs once and
    `generate` starts from the last prompt token. None when no prompt repeats (nothing to share).
    """
    rows, row_prompt = torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0, return_inverse=True)
    width = prompt_ids.shape[1]
    if len(rows) == len(prompt_ids) or width < 2:
        return None
    ids, mask = rows[:, : width - 1], rows[:, width : 2 * width - 1]
    prefill = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True, logits_to_keep=1
    )
    cache = prefill.cache
    cache.reorder_cache(row_prompt)  # (distinct prompts, ...) -> (rows, ...)
    return cache


class Engine:
    """Generate from a causal LM (plain or LoRA-wrapped): eager on CPU, static cache + compiled decoding on CUDA."""

    def __init__(self, model, tokenizer, compiled: bool | None = None, lockstep: bool = False):
        self.model = model
        self.lockstep = lockstep  # every process runs the same forward passes (`Sharding.lockstep`)
        self.tokenizer = tokenizer
        self.compiled = model.device.type == "cuda" if compiled is None else compiled
        self.eos_ids = eos_token_ids(model, tokenizer)

    @torch.no_grad()
    def generate(
        self,
        prompt_rows: list[list[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
        logprobs: bool = False,
    ) -> Generated:
        """Return one completion per row of prompt token ids, all rows in one call; no top-k, top-p as given.

        With `logprobs`, also each sampled token's log-probability under the distribution it was drawn from
        (softmax of logits / temperature, after top-p).
        """
        model, pad_id = self.model, self.tokenizer.pad_token_id
        rows = len(prompt_rows)
        if self.compiled:  # bucketed shapes: extra rows repeat the first prompt and are dropped after
            prompt_rows = prompt_rows + [prompt_rows[0]] * (bucket(rows) - rows)
            width = math.ceil(max(len(row) for row in prompt_rows) / PROMPT_MULTIPLE) * PROMPT_MULTIPLE
        else:
            width = None
        prompt_ids, prompt_mask = (tensor.to(model.device) for tensor in left_pad(prompt_rows, pad_id, width))
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_k=None if greedy else 0,
            top_p=None if greedy else top_p,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=pad_id,
            cache_implementation="static" if self.compiled else None,
            output_scores=logprobs,
            return_dict_in_generate=True,
        )
        was_training = model.training
        model.eval()
        # In lockstep, whether equal prompts share a prefill must not depend on the data: one forward more or less
        # on one process stops all of them.
        shared = not (self.compiled or self.lockstep)
        cache = shared_prompt_cache(model, prompt_ids, prompt_mask) if shared else None
        with plain_generation_defaults(model):
            output = model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                cache=cache,
                generation_config=config,
                synced_gpus=self.lockstep,
            )
        sequences = output.sequences  # (B, P + C)
        model.train(was_training)
        prompt_ids, prompt_mask, sequences = prompt_ids[:rows], prompt_mask[:rows], sequences[:rows]
        completion_ids = sequences[:, prompt_ids.shape[1] :]
        completion_mask, has_eos = completion_mask_from_ids(completion_ids, self.eos_ids)
        token_logprobs = None
        if logprobs:  # scores are the processed logits each token was drawn from: (C, B, V) -> (B, C)
            scores = torch.stack(output.scores, dim=1)[:rows].float()
            token_logprobs = scores.log_softmax(-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
            token_logprobs = token_logprobs * completion_mask
        completion_ids = torch.where(completion_mask.bool(), completion_ids, pad_id)  # nothing readable after EOS
        return Generated(prompt_ids, prompt_mask, completion_ids, completion_mask, has_eos, token_logprobs)

    def warm_up(self, max_prompt_tokens: int, max_new_tokens: int, row_counts: tuple[int, ...], progress=None) -> None:
        """Compile once per row bucket before a run needs it (CUDA), reporting each with `progress(message)`."""
        if not self.compiled:
            return
        buckets = sorted({bucket(count) for count in row_counts})
        for number, size in enumerate(buckets, start=1):
            if progress:
                progress(f"compiling generation for {size} rows ({number} of {len(buckets)})")
            self.generate([[self.tokenizer.pad_token_id] * max_prompt_tokens] * size, max_new_tokens)

    def samples(self, generated: Generated) -> list[Sample]:
        """Return each row's completion as text (EOS cut off) with why it ended and its token count."""
        found = []
        for row in generated.completion_ids.tolist():
            completion, reason = cut_at_eos(row, self.eos_ids, self.tokenizer.pad_token_id)
            text = self.tokenizer.decode(completion, skip_special_tokens=True).strip()
            found.append(Sample(text=text, finish_reason=reason, num_tokens=len(completion)))
        return found


def sample_prompts(
    engine: Engine, prompts: list[str], k: int, temperature: float, top_p: float, max_new_tokens: int, seed=None
) -> list[list[Sample]]:
    """Return k sampled responses for each prompt, every prompt's rows in one batched call."""
    if seed is not None:
        torch.manual_seed(seed)
    rows = [chat_prompt_ids(engine.tokenizer, prompt) for prompt in prompts for _ in range(k)]
    found = engine.samples(engine.generate(rows, max_new_tokens, temperature, top_p))
    return [found[start : start + k] for start in range(0, len(found), k)]


def sample(
    model, tokenizer, prompt: str, k: int, temperature: float, top_p: float, max_new_tokens: int, seed: int | None
) -> list[Sample]:
    """Return k sampled responses to one prompt (the prompt runs once, shared by the k rows)."""
    return sample_prompts(Engine(model, tokenizer), [prompt], k, temperature, top_p, max_new_tokens, seed)[0]


def sample_responses(model, tokenizer, prompt: str, params: SamplingParams) -> list[Sample]:
    """Return `params.k` responses for one annotation item, sampled as the settings say."""
    return sample(
        model, tokenizer, prompt, params.k, params.temperature, params.top_p, params.max_new_tokens, params.seed
    )
