"""Benchmark: our SFT step vs TRL's SFTTrainer at equal settings, same model, LoRA, data and token ids.

Both train on the same demonstrations tokenized identically (our chat-formatted prompt, then the answer and EOS:
TRL gets the token ids and the completion mask), with a completion-only loss, LoRA on all linear layers, the
same batch size and learning rate, no gradient checkpointing, at one precision: `--precision auto` (the default)
is bf16 where the device computes it natively (a bf16 GPU; a CPU with AVX512-BF16 or AMX), as both sides default
to (TRL's configs set bf16=True on any device), `fp32` or `bf16` to choose. Both keep the frozen LoRA base in the
compute dtype and the adapters in float32 under autocast. TRL is timed per
optimizer step by a callback, ours per step by its own metrics (read every step here). The first step of each
is dropped as warm-up; the median of the rest is compared. Prints ours / TRL (target <= 0.5x).

Where ours saves (the loss is the same, tested against TRL's to 1e-4): the LM head runs only on the positions that
predict an answer token (no vocabulary-wide logits for the prompt or padding, one fused cross-entropy, no
entropy), where TRL projects and log-softmaxes every position and adds token accuracy and entropy each step;
peft's LoRA layers run as one autograd function (`core/fused_lora.py`) with the adapter product accumulated
in place, and on a CPU their rank-16 products on one thread, which matters most when other processes hold the
cores (this machine: 2 cores, shared). Both run at torch's default thread count; nothing else differs.

Each side runs in a fresh process on its allocator as its users get it: ours on mimalloc, which `rlhf-studio`
preloads (`core.allocator`), TRL on glibc's. `--repeats` alternates the two and keeps each one's fastest median,
as other processes on a shared machine slow whichever runs beside them. `--threshold 131072` runs ours on glibc
handing freed memory back from the start (its mmap threshold fixed: paid in page faults).

    python bench/sft.py --model tiny          # seconds: a 2-layer model with SmolLM2's vocabulary
    python bench/sft.py                       # SmolLM2-135M-Instruct on the CPU, a few minutes
    python bench/sft.py --precision fp32      # both sides in float32
    python bench/sft.py --device cuda         # on a GPU
"""

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import datasets
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from core.allocator import ALLOCATOR_ENV, MMAP_THRESHOLD_ENV, with_mimalloc
from core.distributed import Sharding
from core.fields import PRECISION_HELP, PRECISIONS
from core.models import load_tokenizer, prepare_default_model, resolve_model, training_choice
from core.runs import MetricsWriter, read_metrics
from policy.config import SFTConfig
from policy.lora import LoraSettings, load_policy
from policy.sft import fit_sft, tokenize_demonstrations

WORDS = (
    "the cat sat on a warm mat while rain fell over quiet hills and old friends told long stories about ships "
    "stars rivers music bread gardens winter light small towns bright colours and distant mountains"
).split()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default', 'tiny', a hub id or a folder")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (one more runs as warm-up)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-words", type=int, default=120)
    parser.add_argument("--answer-words", type=int, default=30)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, alternated; the fastest counts")
    parser.add_argument(
        "--threshold", type=int, help="ours: fix glibc's mmap threshold at this many bytes from the start"
    )
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)  # a child process: one side
    parser.add_argument("--model-folder", help=argparse.SUPPRESS)
    return parser.parse_args()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def model_folder(name: str, workdir: Path) -> str:
    if name == "default":
        return str(prepare_default_model())
    if name != "tiny":
        return str(resolve_model(name))
    tokenizer = load_tokenizer(prepare_default_model())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(workdir / "tiny")
    tokenizer.save_pretrained(workdir / "tiny")
    return str(workdir / "tiny")


def demonstrations(args) -> list[dict]:
    rng = random.Random(args.seed)
    count = args.batch * (args.steps + 1)
    return [
        {"prompt": f"Summarise: {sentence(rng, args.prompt_words)}", "completion": sentence(rng, args.answer_words)}
        for _ in range(count)
    ]


def run_ours(args, model: str, rows: list[dict], workdir: Path) -> list[float]:
    config = SFTConfig(
        model=model, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank, learning_rate=args.lr,
        batch_prompts=args.batch, epochs=1, max_length=2048, seed=args.seed, device=args.device, log_every=1,
        precision=args.precision, output_dir=str(workdir / "ours"),
    )  # fmt: skip
    sharding = Sharding(args.device, args.precision)
    torch.manual_seed(args.seed)
    lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha)
    policy, _, tokenizer = load_policy(model, lora, sharding.device, sharding.choice.dtype)
    examples = tokenize_demonstrations(tokenizer, rows, config.max_length)
    fit_sft(policy, tokenizer, examples, config, sharding, MetricsWriter(workdir / "ours"))
    return [record["charts/step_time_s"] for record in read_metrics(workdir / "ours")]


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if args.use_cpu is False and torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._started)


def run_trl(args, model: str, rows: list[dict], workdir: Path) -> list[float]:
    tokenizer = load_tokenizer(model, padding_side="left")
    examples = tokenize_demonstrations(tokenizer, rows, 2048)
    table = datasets.Dataset.from_list(
        [
            {"input_ids": e["prompt_ids"] + e["completion_ids"],
             "completion_mask": [0] * len(e["prompt_ids"]) + [1] * len(e["completion_ids"])}
            for e in examples
        ]
    )  # fmt: skip
    choice = training_choice(args.device, args.precision)
    config = TRLSFTConfig(
        output_dir=str(workdir / "trl"), report_to="none", use_cpu=choice.device.type == "cpu",
        bf16=choice.dtype == torch.bfloat16, gradient_checkpointing=False, learning_rate=args.lr,
        max_steps=args.steps + 1, logging_steps=10_000, save_strategy="no", disable_tqdm=True, seed=args.seed,
        lr_scheduler_type="constant", dataloader_num_workers=0, per_device_train_batch_size=args.batch,
        completion_only_loss=True, max_length=2048,
    )  # fmt: skip
    lora = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
    timer = StepTimer()
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=choice.dtype)
    trainer = SFTTrainer(model=policy, args=config, train_dataset=table, processing_class=tokenizer,
                         peft_config=lora, callbacks=[timer])  # fmt: skip
    trainer.train()
    return timer.times


def child(args) -> None:
    """Time one side in this (fresh) process; print its step times as a RESULT line."""
    with tempfile.TemporaryDirectory() as folder:
        rows = demonstrations(args)
        run = run_ours if args.side == "ours" else run_trl
        print("RESULT " + json.dumps(run(args, args.model_folder, rows, Path(folder))), flush=True)


def spawn(args, side: str, model: str) -> float:
    """Run one side in a fresh process; return its median step time, the first step dropped as warm-up."""
    command = [sys.executable, __file__, "--side", side, "--model-folder", model, "--device", args.device,
               "--steps", str(args.steps), "--batch", str(args.batch), "--prompt-words", str(args.prompt_words),
               "--answer-words", str(args.answer_words), "--lora-rank", str(args.lora_rank), "--lr", str(args.lr),
               "--seed", str(args.seed), "--precision", args.precision]  # fmt: skip
    env = dict(os.environ)
    if side == "ours" and args.threshold is not None:  # glibc, handing freed memory back from the start
        env |= {ALLOCATOR_ENV: "glibc", MMAP_THRESHOLD_ENV: str(args.threshold)}
    elif side == "ours":
        env = with_mimalloc(env) or env  # as `rlhf-studio train-policy` runs
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{side} failed:\n{done.stderr[-3000:]}")
    times = json.loads(lines[-1][len("RESULT ") :])
    return statistics.median(times[1:])


def main() -> int:
    args = parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.side:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        model = model_folder(args.model, Path(folder))
        runs = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            for side in runs:
                runs[side].append(spawn(args, side, model))
                print(f"repeat {repeat + 1} {side}: {runs[side][-1]:.3f} s a step", flush=True)
    ours, theirs = min(runs["ours"]), min(runs["trl"])
    ratio = ours / theirs
    verdict = "meets" if ratio <= 0.5 else "misses"
    precision = "bf16" if training_choice(args.device, args.precision).dtype == torch.bfloat16 else "fp32"
    allocator = f"glibc, mmap threshold {args.threshold} B" if args.threshold is not None else "mimalloc"
    print(
        f"SFT step, {args.model} on {args.device} in {precision}, {args.batch} demonstrations (~{args.prompt_words}-word prompts, "
        f"~{args.answer_words}-word answers), LoRA r{args.lora_rank}: ours ({allocator}) {ours:.3f} s, TRL "
        f"{theirs:.3f} s, ratio {ratio:.2f}x ({verdict} the 0.5x target)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
