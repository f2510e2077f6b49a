"""Benchmark: GRPO with verifiable rewards on arithmetic word problems, held-out format compliance and accuracy
before and after a short CPU run, and what computing the rewards adds to a step.

    python bench/arithmetic_problems.py                     # the problems (already in bench/data)
    python bench/verifiable.py                              # the default model, ~6 minutes of training on a CPU
    python bench/verifiable.py --steps 0 --heldout 8        # the base model alone, on 8 problems (a quick look)

Held-out problems are answered greedily (one answer each, deterministic) by the base model and by the trained
policy; each is scored by `policy.rewards:format_answer_line` (reasoning, then a last line "Answer: <number>") and
`policy.rewards:exact_answer` (that number equals the reference). Proportions carry their count and a 95% Wilson
interval. The run optimizes format + exact answer (weights 1 and 1); the reward's time is measured inside the run
(the mix is timed at each call) and reported as a share of the step time.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.generation import Engine  # noqa: E402
from core.models import load_tokenizer, resolve_model  # noqa: E402
from core.runs import read_metrics  # noqa: E402
from core.stats import wilson_interval  # noqa: E402
from data.importers import read_prompts_with_columns  # noqa: E402
from policy.config import GRPOConfig  # noqa: E402
from policy.grpo import train_grpo  # noqa: E402
from policy.reward_mix import RewardMix, build_mix  # noqa: E402
from policy.reward_specs import parse_rewards  # noqa: E402
from policy.rewards import exact_answer, format_answer_line  # noqa: E402
from policy.rollout import prompt_rows  # noqa: E402

DATA = Path(__file__).parent / "data"
REWARDS = "policy.rewards:format_answer_line=1.0,policy.rewards:exact_answer=1.0"


class TimedMix(RewardMix):
    """A reward mix that adds up the seconds spent scoring (what the rewards cost a step)."""

    seconds = 0.0
    calls = 0

    def score(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().score(*args, **kwargs)
        finally:
            TimedMix.seconds += time.perf_counter() - started
            TimedMix.calls += 1


def answer_all(model_dir: str, prompts: list[str], max_new_tokens: int, batch: int) -> list[str]:
    """Return the greedy answer of the model to every prompt, `batch` prompts per generation call."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(model_dir), dtype=torch.float32).eval()
    engine, answers = Engine(model, tokenizer), []
    for start in range(0, len(prompts), batch):
        rows = prompt_rows(tokenizer, prompts[start : start + batch], 512)
        generated = engine.generate(rows, max_new_tokens, greedy=True)
        for ids, mask in zip(generated.completion_ids, generated.completion_mask, strict=True):
            answers.append(tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True).strip())
    return answers


def proportion(successes: int, n: int) -> dict:
    low, high = wilson_interval(successes, n)
    return {
        "successes": successes,
        "n": n,
        "rate": successes / n if n else 0.0,
        "ci95": [round(low, 3), round(high, 3)],
    }


def evaluate(model_dir: str, prompts: list[str], columns: list[dict], args) -> dict:
    if not prompts:  # --heldout 0: time the rewards inside a run, nothing else
        return {}
    started = time.perf_counter()
    answers = answer_all(model_dir, prompts, args.max_new_tokens, args.eval_batch)
    formatted = format_answer_line(prompts, answers)
    exact = exact_answer(prompts, answers, answer=[row["answer"] for row in columns])
    return {
        "format": proportion(int(sum(formatted)), len(prompts)),
        "exact": proportion(int(sum(exact)), len(prompts)),
        "seconds": round(time.perf_counter() - started, 1),
        "examples": answers[:3],
    }


def train(args, output_dir: Path) -> tuple[Path, dict]:
    config = GRPOConfig(
        model=args.model, prompts_file=str(DATA / "arithmetic-train.jsonl"), output_dir=str(output_dir),
        rewards=REWARDS, steps=args.steps, batch_prompts=args.batch_prompts, num_generations=args.num_generations,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, learning_rate=args.learning_rate,
        lora_rank=16, lora_alpha=32, device="cpu", seed=0,
    )  # fmt: skip
    mix = build_mix(parse_rewards(REWARDS), None, None)
    timed = TimedMix(mix.components)
    started = time.perf_counter()
    run_dir = train_grpo(config, reward=timed)
    seconds = time.perf_counter() - started
    records = read_metrics(run_dir)
    step_times = [record["charts/step_time_s"] for record in records[1:]]  # the first step includes warm-up
    reward_per_step = TimedMix.seconds / max(TimedMix.calls, 1)
    return run_dir, {
        "steps": args.steps,
        "train_seconds": round(seconds, 1),
        "step_time_s_median": round(statistics.median(step_times), 2) if step_times else None,
        "reward_time_s_per_step": round(reward_per_step, 5),
        "reward_share_of_step": round(reward_per_step / statistics.median(step_times), 5) if step_times else None,
        "first_last_rewards": [
            {key: round(record[key], 3) for key in record if key.startswith("rewards/") and key.endswith("/mean")}
            for record in (records[0], records[-1])
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=12, help="GRPO steps (0: evaluate the base model only)")
    parser.add_argument("--heldout", type=int, default=100, help="held-out problems to evaluate on (0: none)")
    parser.add_argument("--batch-prompts", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--eval-batch", type=int, default=25)
    parser.add_argument("--output-dir", default="runs/bench-verifiable")
    parser.add_argument("--output", help="also write the numbers to this JSON file")
    parser.add_argument("--base-from", help="the base model's numbers from an earlier --output file (same problems)")
    args = parser.parse_args()
    torch.manual_seed(0)
    prompts, columns = read_prompts_with_columns(DATA / "arithmetic-heldout.jsonl")
    prompts, columns = prompts[: args.heldout], columns[: args.heldout]
    base = json.loads(Path(args.base_from).read_text())["base"] if args.base_from else None
    results = {"settings": vars(args), "base": base or evaluate(args.model, prompts, columns, args)}
    print(json.dumps({"base": results["base"]}, indent=2), flush=True)
    if args.steps:
        run_dir, results["training"] = train(args, Path(args.output_dir))
        print(json.dumps({"training": results["training"]}, indent=2), flush=True)
        results["trained"] = evaluate(str(run_dir), prompts, columns, args)
        print(json.dumps({"trained": results["trained"]}, indent=2), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
