"""Benchmark: our GRPO and DPO steps vs TRL's GRPOTrainer and DPOTrainer, same model, LoRA, data and lengths.

GRPO: the same prompts (chat template), G responses per prompt, the same max response length, temperature 1
with no top-k/top-p, beta = 0, loss 'dapo', one optimizer step per rollout, a cheap Python reward. A step is
sampling + reward + the update, timed by our loop and by a TRL callback.

DPO: the same pairs tokenized identically (chat-formatted prompt, response + EOS), the same pairs per step.
Ours caches reference log-probs once before training (timed apart, and amortised over the run); TRL is timed
both with its default (a reference forward every step) and with precompute_ref_log_probs=True.

Both sides run LoRA on all linear layers, no gradient checkpointing (TRL turns it on by default; it trades
speed for memory and would flatter us), at one precision (`--precision auto`: bf16 where the device computes it
natively, as both sides default to; TRL's configs set bf16=True on any device). The first step of each run is dropped as
warm-up; the median of the rest is compared (for our DPO, which reads its metrics off the device once per
`log_every` steps as a real run does, their mean). Our DPO runs the device's forward layout, or the one
--dpo-forward-mode forces (to compare both on one machine). Prints ratios ours / TRL (targets: GRPO <= 0.5x,
DPO <= 0.7x).

    python bench/policy_optimization.py --model tiny                       # seconds: a 2-layer model with SmolLM2's vocabulary
    python bench/policy_optimization.py                                    # SmolLM2-135M-Instruct, a few minutes on a CPU
    python bench/policy_optimization.py --only dpo --pairs 64 --batch 8    # one half, larger
"""

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import datasets
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer, GRPOTrainer
from trl import GRPOConfig as TRLGRPOConfig

import policy.grpo
import policy.ppo
from core.distributed import Sharding
from core.fields import PRECISION_HELP, PRECISIONS
from core.models import load_tokenizer, resolve_model, training_choice
from core.runs import MetricsWriter, read_metrics
from policy.config import DPO_FORWARD_MODES, DPOConfig, GRPOConfig, PPOConfig
from policy.dpo import fit_dpo, prepare_pairs
from policy.grpo import train_grpo
from policy.lora import LoraSettings, load_policy
from policy.pairs import forward_mode
from policy.ppo import train_ppo

WORDS = (
    "the cat sat on a warm mat while rain fell over quiet hills and old friends told long stories about ships "
    "stars rivers music bread gardens winter light small towns bright colours and distant mountains"
).split()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), 'tiny', or a folder")
    parser.add_argument("--only", choices=("grpo", "ppo", "dpo"), default=None, help="run one part only")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where both sides run")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="both sides: " + PRECISION_HELP)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (plus one warm-up step)")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="GRPO: prompts per step")
    parser.add_argument("--group-size", type=int, default=8, help="GRPO: responses per prompt (G; 8 is TRL's default)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="GRPO: longest response")
    parser.add_argument("--batch", type=int, default=4, help="DPO: pairs per step")
    parser.add_argument("--prompt-words", type=int, default=24, help="words in each prompt (about a token each)")
    parser.add_argument("--response-words", type=int, default=48, help="DPO: words in the longer response of a pair")
    parser.add_argument(
        "--dpo-forward-mode", choices=DPO_FORWARD_MODES, default="auto", help="DPO forward layout ('auto': by device)"
    )
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy machine)")
    return parser.parse_args()


def model_folder(name: str, workdir: Path) -> str:
    """Return a model folder: the real default model, or a tiny random Llama over its tokenizer."""
    if name != "tiny":
        return resolve_model(name)
    tokenizer = load_tokenizer("default")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = workdir / "tiny-model"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def length_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """A cheap reward (shorter is better), so the comparison times the trainers, not a reward model."""
    return [-len(response) / 100 for response in responses]


class StepTimer(TrainerCallback):
    """Record each TRL optimizer step's wall and process-CPU seconds (generation and reward included for GRPO)."""

    def __init__(self):
        self.times: list[tuple[float, float]] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append((time.perf_counter() - self._started[0], time.process_time() - self._started[1]))


def timed(function, times: list):
    """Wrap a step function so each call appends its (wall, process-CPU) seconds to `times`."""

    def wrapper(*args, **kwargs):
        started = (time.perf_counter(), time.process_time())
        result = function(*args, **kwargs)
        times.append((time.perf_counter() - started[0], time.process_time() - started[1]))
        return result

    return wrapper


def median_step(times: list[tuple[float, float]]) -> tuple[float, float]:
    """Return the median (wall, CPU) seconds per step after the first (warm-up) step."""
    kept = times[1:] if len(times) > 1 else times
    return statistics.median(t[0] for t in kept), statistics.median(t[1] for t in kept)


def trl_common(args, output_dir: Path) -> dict:
    choice = training_choice(args.device, args.precision)
    return dict(
        output_dir=str(output_dir), report_to="none", use_cpu=choice.device.type == "cpu",
        bf16=choice.dtype == torch.bfloat16, gradient_checkpointing=False, learning_rate=args.lr,
        max_steps=args.steps + 1, logging_steps=10_000, save_strategy="no", disable_tqdm=True, seed=args.seed,
        lr_scheduler_type="constant", dataloader_num_workers=0,
    )  # fmt: skip


def trl_lora(args) -> LoraConfig:
    return LoraConfig(
        r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0, target_modules="all-linear",
        task_type="CAUSAL_LM",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# GRPO


def grpo_prompts(args) -> list[str]:
    rng = random.Random(args.seed)
    count = args.prompts_per_step * (args.steps + 1)
    return [f"Answer briefly: {sentence(rng, args.prompt_words)}" for _ in range(count)]


def run_our_grpo(args, model: str, prompts: list[str], workdir: Path) -> list[tuple[float, float]]:
    config = GRPOConfig(
        model=model, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank, learning_rate=args.lr,
        steps=args.steps + 1, batch_prompts=args.prompts_per_step, num_generations=args.group_size,
        max_new_tokens=args.max_new_tokens, temperature=1.0, beta=0.0, loss_type="dapo", seed=args.seed,
        output_dir=str(workdir / "ours-grpo"), device=args.device, precision=args.precision,
    )  # fmt: skip
    times = []
    original = policy.grpo.grpo_step
    policy.grpo.grpo_step = timed(original, times)  # train_grpo looks the step up by name: time exactly it
    try:
        train_grpo(config, reward=length_reward, prompts=prompts)
    finally:
        policy.grpo.grpo_step = original
    return times


def run_our_ppo(args, model: str, prompts: list[str], workdir: Path) -> list[tuple[float, float]]:
    """PPO on as many sequences per step as GRPO samples (prompts x G, one response each): TRL has no PPO to compare."""
    config = PPOConfig(
        model=model, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank, learning_rate=args.lr,
        steps=args.steps + 1, batch_prompts=args.prompts_per_step * args.group_size, ppo_epochs=1,
        max_new_tokens=args.max_new_tokens, temperature=1.0, seed=args.seed, output_dir=str(workdir / "ours-ppo"),
        device=args.device, precision=args.precision,
    )  # fmt: skip
    repeated = [prompt for prompt in prompts for _ in range(args.group_size)]
    times = []
    original = policy.ppo.ppo_step
    policy.ppo.ppo_step = timed(original, times)
    try:
        train_ppo(config, reward=length_reward, prompts=repeated)
    finally:
        policy.ppo.ppo_step = original
    return times


def run_trl_grpo(args, model: str, prompts: list[str], workdir: Path) -> list[tuple[float, float]]:
    tokenizer = load_tokenizer(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=training_choice(args.device, args.precision).dtype)
    config = TRLGRPOConfig(
        **trl_common(args, workdir / "trl-grpo"), per_device_train_batch_size=args.prompts_per_step * args.group_size,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        top_k=0, beta=0.0, loss_type="dapo", num_iterations=1, use_vllm=False, shuffle_dataset=False,
    )  # fmt: skip
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    timer = StepTimer()

    def reward(prompts, completions, **_):
        return length_reward(prompts, [c[0]["content"] if isinstance(c, list) else c for c in completions])

    trainer = GRPOTrainer(
        model=policy, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
        peft_config=trl_lora(args), callbacks=[timer],
    )  # fmt: skip
    trainer.train()
    return timer.times


# ---------------------------------------------------------------------------------------------------------------
# DPO


def dpo_pairs(args) -> list[dict]:
    """Pairs with a short chosen and a long rejected response, enough for steps + 1 batches."""
    rng = random.Random(args.seed)
    return [
        {
            "prompt": f"Question {index}: {sentence(rng, args.prompt_words)}",
            "chosen": sentence(rng, args.response_words // 3),
            "rejected": sentence(rng, args.response_words),
        }
        for index in range(args.batch * (args.steps + 1))
    ]


def run_our_dpo(args, model: str, pairs: list[dict], workdir: Path):
    """Return ((wall, CPU) per step, (wall, CPU) of the reference pass, token lengths, layout) of our DPO, one epoch.

    The loop reads metrics off the device at its first step and then once for the rest (`log_every`), as a real
    run does every `log_every` steps: the first record is the warm-up step, the second the timed steps' mean.
    CPU seconds are the loop's total spread evenly over its steps.
    """
    config = DPOConfig(
        model=model, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank, learning_rate=args.lr,
        batch_prompts=args.batch, epochs=1, max_length=1024, seed=args.seed, output_dir=str(workdir / "ours-dpo"),
        device=args.device, precision=args.precision, forward_mode=args.dpo_forward_mode, log_every=args.steps + 1,
    )  # fmt: skip
    sharding = Sharding(args.device, args.precision)
    accelerator = sharding.accelerator
    torch.manual_seed(args.seed)
    lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha)
    policy, reference, tokenizer = load_policy(model, lora, accelerator.device, sharding.choice.dtype)
    # CUDA start-up is no part of our reference pass (TRL's lands in its first step, which is dropped).
    warm_up(policy, accelerator.device)
    started = (time.perf_counter(), time.process_time())
    train = prepare_pairs(policy, reference, tokenizer, datasets.Dataset.from_list(pairs), config, accelerator.device)
    synchronize(accelerator.device)
    cache_seconds = (time.perf_counter() - started[0], time.process_time() - started[1])
    writer = MetricsWriter(workdir / "ours-dpo")
    cpu_started = time.process_time()
    _, last = fit_dpo(policy, tokenizer, train, config, sharding, writer)
    cpu_seconds = time.process_time() - cpu_started
    lengths = {
        "prompt": statistics.mean(len(e["prompt_ids"]) for e in train.examples),
        "chosen": statistics.mean(len(e["chosen_ids"]) for e in train.examples),
        "rejected": statistics.mean(len(e["rejected_ids"]) for e in train.examples),
    }
    walls = [record["charts/step_time_s"] for record in read_metrics(workdir / "ours-dpo")]
    layout = forward_mode(config.forward_mode, accelerator.device)
    return [(wall, cpu_seconds / last["steps"]) for wall in walls], cache_seconds, lengths, layout


def warm_up(model, device: torch.device) -> None:
    """Run one small forward so a GPU's context and kernel libraries are loaded before anything is timed."""
    if device.type == "cuda":
        with torch.no_grad():
            model(input_ids=torch.ones(2, 16, dtype=torch.long, device=device))
        synchronize(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_trl_dpo(args, model: str, pairs: list[dict], workdir: Path, precompute: bool):
    """Return (wall, CPU) seconds per step (TRL's precompute of reference log-probs runs at set-up, untimed).

    As for ours, CPU seconds are those of the whole `train()` spread evenly over its steps.
    """
    tokenizer = load_tokenizer(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=training_choice(args.device, args.precision).dtype)
    rows = [
        {
            # The chat-formatted prompt as text: TRL then appends EOS and tokenizes exactly as we do
            # (tests/policy/test_dpo_loss.py checks the ids match).
            "prompt": tokenizer.apply_chat_template(
                [{"role": "user", "content": pair["prompt"]}], add_generation_prompt=True, tokenize=False
            ),
            "chosen": pair["chosen"],
            "rejected": pair["rejected"],
        }
        for pair in pairs
    ]
    config = TRLDPOConfig(
        **trl_common(args, workdir / f"trl-dpo-{precompute}"), per_device_train_batch_size=args.batch,
        max_length=1024, beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=precompute,
    )  # fmt: skip
    timer = StepTimer()
    trainer = DPOTrainer(
        model=policy, args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=trl_lora(args), callbacks=[timer],
    )  # fmt: skip
    cpu_started = time.process_time()
    trainer.train()
    cpu_seconds = time.process_time() - cpu_started
    return [(wall, cpu_seconds / len(timer.times)) for wall, _ in timer.times]


# ---------------------------------------------------------------------------------------------------------------


def report(name: str, ours: tuple[float, float], theirs: tuple[float, float], target: float, peer: str = "TRL") -> dict:
    """Print and return ours / TRL per step, by wall clock and by process CPU time (steadier on a shared machine)."""
    wall_ratio, cpu_ratio = ours[0] / theirs[0], ours[1] / theirs[1]
    verdict = "meets" if wall_ratio <= target else "misses"
    print(
        f"{name}: ours {ours[0]:.3f}s/step, {peer} {theirs[0]:.3f}s/step, ratio {wall_ratio:.2f}x "
        f"({verdict} target <= {target}x); CPU-time ratio {cpu_ratio:.2f}x"
    )
    return {"ours_s": ours[0], "trl_s": theirs[0], "ratio": wall_ratio, "cpu_ratio": cpu_ratio, "target": target}


def dpo_table_row(args, device, lengths: dict, results: dict, layout: str) -> str:
    """Return the DPO line of ../shared/GPU.md's baseline table (ours | TRL (precompute) | ratios | amortised)."""
    tokens = lengths["prompt"] + (lengths["chosen"] + lengths["rejected"]) / 2
    default, precompute, amortised = results["dpo"], results["dpo_precompute"], results["dpo_amortised"]
    return (
        f"| DPO step, {Path(args.model).name} on {device.device.type} {str(device.dtype).removeprefix('torch.')}, "
        f"{args.batch} pairs (~{tokens:.0f} tokens), {layout} | {default['ours_s']:.2f} s | "
        f"{default['trl_s']:.2f} s (precompute {precompute['trl_s']:.2f}) | "
        f"{default['ratio']:.2f}x ({precompute['ratio']:.2f}x); with our reference pass {amortised['ratio']:.2f}x |"
    )


def main() -> int:
    args = parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = training_choice(args.device, args.precision)
    print(f"device {device.device} {device.dtype}, torch threads {torch.get_num_threads()}, model {args.model}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        model = model_folder(args.model, workdir)
        if args.only in (None, "grpo", "ppo"):
            prompts = grpo_prompts(args)
            ours = run_our_grpo(args, model, prompts, workdir)
            print(f"GRPO: {args.prompts_per_step} prompts x G={args.group_size}, up to {args.max_new_tokens} tokens")
            if args.only in (None, "grpo"):
                theirs = run_trl_grpo(args, model, prompts, workdir)
                results["grpo"] = report("GRPO step", median_step(ours), median_step(theirs), target=0.5)
            if args.only in (None, "ppo"):
                ppo = run_our_ppo(args, model, prompts, workdir)
                results["ppo"] = report("PPO step (peer: our GRPO step, same sequences)", median_step(ppo),
                                        median_step(ours), target=2.0, peer="our GRPO")  # fmt: skip
        if args.only in (None, "dpo"):
            pairs = dpo_pairs(args)
            ours, cache_seconds, lengths, layout = run_our_dpo(args, model, pairs, workdir)
            trl_default = run_trl_dpo(args, model, pairs, workdir, precompute=False)
            trl_precompute = run_trl_dpo(args, model, pairs, workdir, precompute=True)
            lengths_text = ", ".join(f"{key} {value:.0f}" for key, value in lengths.items())
            print(f"DPO: {args.batch} pairs per step, layout {layout}, mean tokens: {lengths_text}")
            per_step = median_step(ours)
            results["dpo"] = report("DPO step vs TRL default", per_step, median_step(trl_default), target=0.7)
            results["dpo_precompute"] = report(
                "DPO step vs TRL precompute_ref_log_probs", per_step, median_step(trl_precompute), target=0.7
            )
            # Our reference pass is a one-off cost; spread it over this (short) run's steps.
            run_steps = args.steps + 1
            amortised = (per_step[0] + cache_seconds[0] / run_steps, per_step[1] + cache_seconds[1] / run_steps)
            results["dpo_amortised"] = report(
                f"DPO step + our reference pass ({cache_seconds[0]:.2f}s over {run_steps} steps) vs TRL default",
                amortised,
                median_step(trl_default),
                target=0.7,
            )
            print(dpo_table_row(args, device, lengths, results, layout))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
