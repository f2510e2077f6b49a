"""Benchmark: the pre-launch memory estimate against the measured peak of real runs.

Each case runs one trainer (reward model, SFT, DPO, GRPO, PPO) for a few steps on the default model in a fresh
process, with inputs of exactly the length asked for, and measures its peak: resident memory above what the
process held after its imports (CPU), or `torch.cuda.max_memory_allocated` (GPU). The estimate is the one the
Train page and `rlhf-studio` check before queueing a run (`orchestration.preflight.estimate_run`), for the same
config and shapes. Target: every estimate within ±25% of its peak, none below it by more than 10%. Each case runs
on mimalloc, as `rlhf-studio`'s commands do (`core.allocator`); `--allocator glibc` runs it on glibc handing freed
memory back from the start.

    python bench/memory.py                                  # the grid on the CPU (~20-30 minutes on 2 cores)
    python bench/memory.py --trainers rm --lengths 512 --batches 8 --steps 3   # one case: the HH-sized run
    python bench/memory.py --precision fp32                 # float32 where the default is bf16
    python bench/memory.py --device cuda                    # on a GPU
"""

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.allocator import ALLOCATOR_ENV, MMAP_THRESHOLD, MMAP_THRESHOLD_ENV, with_mimalloc  # noqa: E402

TRAINERS = ("rm", "sft", "dpo", "grpo", "ppo")
NEW_TOKENS = 32  # GRPO and PPO: sampled tokens per response; the rest of the length is the prompt
GENERATIONS = 4  # GRPO's group size
WORDS = "the quiet river ran past old stone walls while children counted boats and sang about distant hills".split()


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def text_of(tokenizer, tokens: int, seed: int) -> str:
    """Return text of exactly `tokens` tokens (plain words, decoded from the ids kept)."""
    words = [WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(tokens * 2)]
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def hh_prompt(tokenizer, tokens: int, seed: int) -> list[dict]:
    """Return a two-turn conversation (HH's shape: a question, an answer, a follow-up) of about `tokens` tokens."""
    third = max(tokens // 3, 1)
    return [
        {"role": "user", "content": text_of(tokenizer, third, seed)},
        {"role": "assistant", "content": text_of(tokenizer, third, seed + 1)},
        {"role": "user", "content": text_of(tokenizer, third, seed + 2)},
    ]


def config_of(trainer: str, length: int, batch: int, checkpointing: bool, steps: int, output_dir: str, reward_run):
    """Return the run's config: defaults, except the shapes under test."""
    from policy.config import DPOConfig, GRPOConfig, PPOConfig, SFTConfig
    from rm.config import RewardConfig

    common = {"output_dir": output_dir, "device": args_device, "precision": args_precision,
              "gradient_checkpointing": checkpointing}  # fmt: skip
    if trainer == "rm":
        return RewardConfig(batch_size=batch, max_length=length, epochs=1, validation_fraction=0.2, **common)
    if trainer in ("sft", "dpo"):
        cls = SFTConfig if trainer == "sft" else DPOConfig
        return cls(batch_prompts=batch, max_length=length, epochs=1, log_every=1, **common)
    cls = GRPOConfig if trainer == "grpo" else PPOConfig
    extra = {"num_generations": GENERATIONS} if trainer == "grpo" else {}
    return cls(batch_prompts=batch, steps=steps, max_new_tokens=NEW_TOKENS, max_prompt_tokens=length - NEW_TOKENS,
               rewards=f"model:{reward_run}", **extra, **common)  # fmt: skip


def inputs_of(trainer: str, tokenizer, length: int, batch: int, steps: int) -> list:
    """Return `steps` batches of inputs each as long as `length` tokens allow (longer: cut to it, as a run cuts)."""
    rows = []
    for i in range(steps * batch + (batch if trainer in ("rm",) else 0)):  # the reward model holds some out
        prompt = hh_prompt(tokenizer, length // 2, i)
        if trainer == "rm":
            rows.append({"prompt": prompt, "chosen": text_of(tokenizer, length, i + 5),
                         "rejected": text_of(tokenizer, length, i + 9)})  # fmt: skip
        elif trainer == "dpo":
            rows.append({"prompt": prompt, "chosen": text_of(tokenizer, length, i + 5),
                         "rejected": text_of(tokenizer, length, i + 9)})  # fmt: skip
        elif trainer == "sft":
            rows.append({"prompt": prompt, "completion": text_of(tokenizer, length, i + 5)})
        else:  # a prompt that fills max_prompt_tokens in the chat template, exactly
            from core.chat import chat_prompt_ids

            template = len(chat_prompt_ids(tokenizer, "x")) - 1
            rows.append(text_of(tokenizer, length - NEW_TOKENS - template, i))
    return rows


def run_case(trainer: str, length: int, batch: int, checkpointing: bool, steps: int, reward_run: str | None) -> dict:
    """Run one case in this process; return its peak above the baseline after imports."""
    import torch

    from core.models import load_tokenizer, prepare_default_model
    from policy.dpo import train_dpo
    from policy.grpo import train_grpo
    from policy.ppo import train_ppo
    from policy.sft import train_sft
    from rm.data import Ranking
    from rm.score import RewardScorer
    from rm.train import train_reward_model

    tokenizer = load_tokenizer(prepare_default_model())
    rows = inputs_of(trainer, tokenizer, length, batch, steps)
    cuda = args_device == "cuda"
    baseline = torch.cuda.memory_allocated() if cuda else resident_bytes()
    output_dir = tempfile.mkdtemp(prefix=f"memory-{trainer}-")
    config = config_of(trainer, length, batch, checkpointing, steps, output_dir + "/run", reward_run)
    started = time.perf_counter()
    if trainer == "rm":
        rankings = [Ranking(i, i, r["prompt"], [r["chosen"], r["rejected"]], [0, 1]) for i, r in enumerate(rows)]
        train_reward_model(config, rankings=rankings)
    elif trainer == "sft":
        train_sft(config, demonstrations=rows)
    elif trainer == "dpo":
        train_dpo(config, pairs=rows)
    else:
        train = train_grpo if trainer == "grpo" else train_ppo
        train(config, prompts=rows, load_reward_model=RewardScorer.from_run)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"measured": peak - baseline, "seconds": seconds, "run_dir": config.output_dir}


def estimate_case(trainer, length, batch, checkpointing, steps, reward_run) -> dict:
    """Return the pre-launch estimate of the case, with the shapes the launch check would read off its inputs."""
    from core.models import load_tokenizer, prepare_default_model
    from orchestration.preflight import RunShape, estimate_run, example_shape, reward_model_shape

    config = config_of(trainer, length, batch, checkpointing, steps, tempfile.mkdtemp() + "/run", reward_run)
    tokenizer = load_tokenizer(prepare_default_model())
    rows = inputs_of(trainer, tokenizer, length, batch, steps)
    if trainer in ("sft", "dpo"):
        shape = example_shape(config, rows, tokenizer)
    elif trainer == "rm":
        items = [{"prompt": row["prompt"], "ranked_responses": [[row["chosen"]], [row["rejected"]]]} for row in rows]
        shape = reward_model_shape(config, items, tokenizer)
    else:
        shape = RunShape(0, length)
    estimate = estimate_run(config, shape)
    return {"estimate": estimate.total, "parts": estimate.parts()}


def child(args) -> None:
    result = run_case(args.one, args.lengths[0], args.batches[0], args.checkpointing, args.steps, args.reward_run)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(trainer, length, batch, checkpointing, steps, reward_run) -> dict:
    command = [sys.executable, __file__, "--one", trainer, "--lengths", str(length), "--batches", str(batch),
               "--steps", str(steps), "--device", args_device, "--precision", args_precision]  # fmt: skip
    command += ["--checkpointing"] if checkpointing else []
    command += ["--reward-run", reward_run] if reward_run else []
    # As the commands run: on mimalloc (`core.allocator`); --allocator glibc hands freed memory back from the start.
    env = dict(os.environ)
    if args_allocator == "glibc":
        env |= {ALLOCATOR_ENV: "glibc", MMAP_THRESHOLD_ENV: str(MMAP_THRESHOLD)}
    else:
        env = with_mimalloc(env) or env
    env |= {"OMP_NUM_THREADS": str(args_threads)} if args_threads else {}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{trainer} {length}x{batch} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def gib(count: float) -> str:
    return f"{count / 2**30:.2f}"


def main() -> None:
    global args_device, args_precision, args_threads, args_allocator
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--batches", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--checkpointing-modes", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="the runs' precision")
    parser.add_argument("--output", help="also write the rows to this JSON file")
    parser.add_argument(
        "--threads", type=int, help="CPU threads per case (default: torch's); memory does not depend on it"
    )
    parser.add_argument(
        "--allocator",
        choices=["mimalloc", "glibc"],
        default="mimalloc",
        help="CPU: mimalloc as the commands preload it, or glibc handing freed memory back",
    )
    parser.add_argument("--one", choices=TRAINERS, help=argparse.SUPPRESS)  # a child process: one case
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reward-run", help="reward-model run for GRPO and PPO (default: train a small one first)")
    args = parser.parse_args()
    args_device, args_precision, args_threads, args_allocator = (
        args.device,
        args.precision,
        args.threads,
        args.allocator,
    )
    if args.one:
        return child(args)
    reward_run = args.reward_run
    if reward_run is None and {"grpo", "ppo"} & set(args.trainers):
        reward_run = spawn("rm", 64, 2, True, 1, None)["run_dir"]  # the reward model GRPO and PPO score with
    rows = []
    print("| trainer | length | batch | checkpointing | estimate GiB | measured GiB | estimate / measured | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for trainer, length, batch, mode in itertools.product(
        args.trainers, args.lengths, args.batches, args.checkpointing_modes
    ):
        on = mode == "on"
        measured = spawn(trainer, length, batch, on, args.steps, reward_run)
        estimate = estimate_case(trainer, length, batch, on, args.steps, reward_run)
        ratio = estimate["estimate"] / measured["measured"]
        rows.append({"trainer": trainer, "length": length, "batch": batch, "checkpointing": on} | measured | estimate)
        print(f"| {trainer} | {length} | {batch} | {mode} | {gib(estimate['estimate'])} | {gib(measured['measured'])}"
              f" | {ratio:.2f} | {measured['seconds']:.0f} |", flush=True)  # fmt: skip
        if args.output:  # after every case: a long grid interrupted keeps what it measured
            Path(args.output).write_text(json.dumps(rows, indent=2))
    ratios = [row["estimate"] / row["measured"] for row in rows]
    inside = sum(0.75 <= r <= 1.25 for r in ratios)
    print(f"\nwithin ±25%: {inside} of {len(ratios)}; lowest {min(ratios):.2f}, highest {max(ratios):.2f}"
          f" (target: all within, none under 0.90)")  # fmt: skip


args_device, args_precision, args_threads, args_allocator = "cpu", "auto", None, "mimalloc"

if __name__ == "__main__":
    main()
