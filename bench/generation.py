"""Benchmark: the generation engine vs plain HF `generate` (dynamic cache), and the annotation sampler.

Every row runs to max_new_tokens on both sides (EOS ignored), so tokens/s compare the same work. Prints, per
batch x new tokens: tokens/s and ms per token step of each, their ratio, and the engine's ms/step as a multiple
of the bandwidth bound (weight bytes / measured device copy bandwidth: a decode step reads every weight once).
Then the annotation sampler: K responses for several prompts, one prompt per call (as before) vs batched calls.

    python bench/generation.py --batches 4 --new-tokens 32                    # CPU, a few minutes
    python bench/generation.py --device cuda --model /tmp/m1b7                  # the GPU table (batch 4/16/64 x 128/256)
"""

import argparse
import json
import logging
import sys
import time
import warnings

import torch

from core.chat import chat_prompt_ids
from core.generation import Engine, sample_prompts
from core.models import load_causal_lm

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain why the sky is blue to a ten-year-old.",
    "Give three tips for learning a new language.",
    "What is the difference between a list and a tuple in Python?",
    "Describe a good breakfast in two sentences.",
    "How do vaccines work?",
    "Suggest a name for a black cat and say why.",
    "Summarize the plot of a heist movie you invent.",
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), a folder or hub id")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: CUDA when present")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--sampler-k", type=int, default=4)
    parser.add_argument("--sampler-prompts", type=int, default=4)
    parser.add_argument("--sampler-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device, megabytes: int = 512) -> float:
    """Return the measured device copy bandwidth in bytes/s (a copy reads and writes every byte)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    synchronize(device)
    return 2 * 5 * source.numel() / (time.perf_counter() - started)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def plain_generate(model, tokenizer, rows: list[list[int]], new_tokens: int) -> None:
    """HF generate as most code calls it: dynamic cache, left-padded batch, sampling at temperature 1."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(row)) + row for row in rows], device=model.device)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=model.device)
    model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def main() -> int:
    args = parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.model, args.device)
    device = model.device
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = copy_bandwidth(device)
    bound_ms = 1000 * weight_bytes / bandwidth
    print(f"device {device} {model.dtype}, threads {torch.get_num_threads()}, model {args.model}")
    print(
        f"weights {weight_bytes / 2**20:.0f} MiB, copy bandwidth {bandwidth / 1e9:.1f} GB/s, bound {bound_ms:.3f} ms/step"
    )
    engine = Engine(model, tokenizer)
    engine.eos_ids = {-1}  # every row runs to max_new_tokens, as in plain_generate
    results = []
    print("batch x tokens | plain tok/s  ms/step | engine tok/s  ms/step | engine/plain | engine / bound")
    for new_tokens in args.new_tokens:
        for batch in args.batches:
            rows = [chat_prompt_ids(tokenizer, PROMPTS[i % len(PROMPTS)]) for i in range(batch)]
            engine.warm_up(max(len(row) for row in rows), new_tokens, (batch,), progress=print)
            engine.generate(rows, min(new_tokens, 4))  # warm both paths' kernels once
            plain_generate(model, tokenizer, rows, min(new_tokens, 4))
            synchronize(device)
            plain = timed(
                lambda rows=rows, n=new_tokens: (plain_generate(model, tokenizer, rows, n), synchronize(device))
            )
            ours = timed(lambda rows=rows, n=new_tokens: (engine.generate(rows, n), synchronize(device)))
            row = {
                "batch": batch, "new_tokens": new_tokens,
                "plain_tokens_per_s": batch * new_tokens / plain, "plain_ms_per_step": 1000 * plain / new_tokens,
                "engine_tokens_per_s": batch * new_tokens / ours, "engine_ms_per_step": 1000 * ours / new_tokens,
            }  # fmt: skip
            row["speedup"] = plain / ours
            if device.type == "cpu":  # the CUDA layout run eagerly (static cache, bucketed): is it faster here?
                static = Engine(model, tokenizer, compiled=True)
                static.eos_ids = {-1}
                row["static_cache_ms_per_step"] = (
                    1000 * timed(lambda r=rows, n=new_tokens, e=static: e.generate(r, n)) / new_tokens
                )
            row["engine_over_bound"] = row["engine_ms_per_step"] / bound_ms
            results.append(row)
            print(
                f"{batch:5d} x {new_tokens:4d}  | {row['plain_tokens_per_s']:10.0f} {row['plain_ms_per_step']:8.2f} | "
                f"{row['engine_tokens_per_s']:11.0f} {row['engine_ms_per_step']:8.2f} | {row['speedup']:11.2f}x | "
                f"{row['engine_over_bound']:8.1f}x"
                + (
                    f" | static cache on CPU {row['static_cache_ms_per_step']:.2f} ms/step"
                    if device.type == "cpu"
                    else ""
                )
            )

    # The annotation sampler: K responses to each of several prompts; one prompt per call vs all in one call.
    prompts, k, new_tokens = PROMPTS[: args.sampler_prompts], args.sampler_k, args.sampler_tokens
    one_by_one = timed(lambda: [sample_prompts(engine, [p], k, 1.0, 1.0, new_tokens) for p in prompts])
    batched = timed(lambda: sample_prompts(engine, prompts, k, 1.0, 1.0, new_tokens))
    tokens = len(prompts) * k * new_tokens
    sampler = {"one_prompt_per_call_tokens_per_s": tokens / one_by_one, "batched_tokens_per_s": tokens / batched}
    print(
        f"sampler, {len(prompts)} prompts x K={k} x {new_tokens} tokens: one prompt per call "
        f"{sampler['one_prompt_per_call_tokens_per_s']:.0f} tokens/s, all in one call "
        f"{sampler['batched_tokens_per_s']:.0f} tokens/s ({one_by_one / batched:.2f}x)"
    )
    print(json.dumps({"generation": results, "sampler": sampler}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
