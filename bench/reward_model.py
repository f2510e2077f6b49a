"""Benchmark: our ranking-wise reward trainer vs TRL's RewardTrainer on the same rankings expanded to pairs.

Same backbone and initial head (same seed), same LoRA, same epochs, optimizer steps, learning rate and schedule,
gradient checkpointing on (non-reentrant) or off in both, the same precision: `--precision auto` (the default) is
bf16 autocast where the device computes it natively (a bf16 GPU; a CPU with AVX512-BF16 or AMX), as both sides
default to (TRL's RewardConfig sets bf16=True on any device). Each side keeps its weights as its users get them:
TRL float32 (its RewardTrainer's default), ours a LoRA run's frozen base in the compute dtype (`load_backbone`),
trained weights float32 in both. Ours encodes each of a ranking's K responses once per step; TRL encodes both
sides of each of its K(K-1)/2 pairs. Both are scored on the same validation prompts by the
same function. On a shared machine other processes inflate wall time: `--repeats` alternates the two and keeps
each one's fastest run, and CPU seconds (all threads of the process) are printed beside wall seconds.

Two modes:

- default: synthetic K-wise rankings with a hidden rule; prints the training wall time per epoch of each, their
  ratio (target: ours <= 0.5x) and validation accuracies.
- `--memory`: 58 Anthropic-HH-shaped pairs (multi-turn "Human:/Assistant:" conversations read by our HH importer,
  then a chosen and a rejected answer), every one 80-95% of each `--max-lengths` budget and none longer, so neither
  side cuts (ours) or drops (TRL) a pair; both counts are checked. Each run is a fresh process; its peak is the
  resident memory above what it held after its imports and reading the pairs (CPU: `ru_maxrss`), or
  `torch.cuda.max_memory_allocated` on a GPU. Ours is the whole `train_reward_model` call: training with a
  held-out evaluation each epoch, then the reward-normalization pass over the training pairs and the merged model
  saved. TRL's is `RewardTrainer.train()` (no evaluation, nothing saved), then one held-out evaluation by our
  function for its accuracy. Prints, per max length: peaks, epoch times and their ratios (targets: memory
  <= 1x, time <= 0.5x), and where in the run each peak was reached. Pairs are rankings of K=2: ours packs a
  step's pairs in one row without padding, each conversation once, and its attention computes only what each token
  sees (`rm.model.pack_rankings`, `SegmentedAttention`), where TRL runs both sides whole, padded to the longest. Each side
  runs on its allocator as its users get it: ours on mimalloc, which `rlhf-studio train-rm` preloads
  (`core.allocator`), TRL on glibc's.

    python bench/reward_model.py                      # MiniLM, K=4, a few minutes on a laptop CPU
    python bench/reward_model.py --backbone default --device cuda   # SmolLM2-135M-Instruct with LoRA
    python bench/reward_model.py --memory --backbone default --max-lengths 256 512   # ~1 h on 2 shared CPU cores
"""

import argparse
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch
from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

import rm.train
from core.allocator import with_mimalloc
from core.distributed import Sharding
from core.fields import PRECISION_HELP, PRECISIONS
from core.models import FAST_ENCODER, load_tokenizer, pick_device, training_choice
from data.conversations import pair_of_row
from data.export import expand_to_pairs
from rm.config import RewardConfig
from rm.data import Ranking, split_rankings
from rm.model import RewardNetwork, encode, encode_and_cut, load_backbone, reads_last_token
from rm.synthetic import synthetic_rankings
from rm.train import encode_rankings, evaluate, train_reward_model

HH_PAIRS = 58
WORDS = (
    "the a my your this garden kitchen river letter budget recipe winter bike neighbor doctor school plan trip "
    "question answer idea reason problem week morning evening friend family job city book song water bread coffee "
    "should could would might will can need want help explain tell show find make keep start stop try write fix "
    "quickly carefully usually really simply maybe often always never again also still only just even probably "
    "good bad small large quiet busy simple hard safe cheap warm cold early late new old clear honest useful"
).split()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=FAST_ENCODER, help="'all-MiniLM-L6-v2' (default) or 'default' (SmolLM2)")
    parser.add_argument("--prompts", type=int, default=64, help="synthetic prompts, one K-wise ranking each")
    parser.add_argument("--k", type=int, default=4, help="responses per ranking (--memory: pairs, K=2)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="rankings per step (TRL: the same pairs per step)")
    parser.add_argument("--lora-rank", type=int, default=None, help="default: 0 (full) for MiniLM, 16 for SmolLM2")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-4 (MiniLM), 2e-4 (SmolLM2 LoRA)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True, help="in both trainers"
    )
    parser.add_argument("--validation-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where both sides run")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="both sides: " + PRECISION_HELP)
    parser.add_argument("--repeats", type=int, default=1, help="run each trainer this many times, keep the fastest")
    parser.add_argument("--memory", action="store_true", help="peak memory and epoch time on HH-shaped pairs")
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[256, 512], help="--memory: lengths to run")
    parser.add_argument("--child", choices=("ours", "TRL"), help=argparse.SUPPRESS)  # --memory: one run
    parser.add_argument("--pairs-file", help=argparse.SUPPRESS)  # --memory: the child's rankings
    return parser.parse_args()


def run_ours(args, rankings, output_dir: Path) -> dict:
    config = RewardConfig(
        backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
        lora_rank=args.lora_rank, max_length=args.max_length, validation_fraction=args.validation_fraction,
        seed=args.seed, output_dir=str(output_dir), device=args.device, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
    )  # fmt: skip
    result = train_reward_model(config, rankings=rankings)
    records = _read_jsonl(result.run_dir / "metrics.jsonl")
    epochs = [r for r in records if r["event"] == "epoch"]
    return {
        "epoch_s": sum(r["time/train_s"] for r in epochs) / len(epochs),
        "epoch_cpu_s": sum(r["time/train_cpu_s"] for r in epochs) / len(epochs),
        "val_accuracy": epochs[-1]["val/accuracy"],  # the last epoch, like TRL's final model
        "cut": next(r["data/cut_to_max_length"] for r in records if "data/cut_to_max_length" in r),
        "train_pairs": epochs[-1]["train/pairs"],
    }


def run_trl(args, train, validation, output_dir: Path, peaks: dict | None = None) -> dict:
    choice = training_choice(args.device, args.precision)
    torch.manual_seed(args.seed)  # the same initial head as ours
    model, tokenizer = load_backbone(args.backbone, args.lora_rank, 32)  # ours: the same LoRA on the same modules
    last_token = reads_last_token(model)
    pairs = [pair for ranking in train for pair in _pairs(ranking)]
    dataset = datasets.Dataset.from_list(
        [
            {
                "chosen_ids": encode(tokenizer, p["prompt"], p["chosen"], args.max_length, last_token),
                "rejected_ids": encode(tokenizer, p["prompt"], p["rejected"], args.max_length, last_token),
            }
            for p in pairs
        ]
    )
    pairs_per_ranking = args.k * (args.k - 1) // 2
    trl_args = TRLRewardConfig(
        output_dir=str(output_dir), num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size * pairs_per_ranking, lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, max_length=args.max_length, seed=args.seed, report_to="none",
        save_strategy="no", eval_strategy="no", logging_steps=10_000, disable_dropout=True,
        use_cpu=choice.device.type == "cpu", bf16=choice.dtype == torch.bfloat16, dataloader_num_workers=0,
        gradient_checkpointing=args.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
    )  # fmt: skip
    trainer = RewardTrainer(model=model, args=trl_args, train_dataset=dataset, processing_class=tokenizer)
    trained_pairs = len(trainer.train_dataset)  # after TRL drops the pairs longer than max_length
    started, started_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    epoch_s = (time.perf_counter() - started) / args.epochs
    epoch_cpu_s = (time.process_time() - started_cpu) / args.epochs
    if peaks is not None:
        peaks["train"] = _peak()
    config = RewardConfig(batch_size=args.batch_size, lora_rank=args.lora_rank)
    encoded = encode_rankings(validation, tokenizer, args.max_length, last_token)
    sharding = Sharding(choice.device.type, args.precision)
    evaluation = evaluate(RewardNetwork(trainer.model), encoded, config, tokenizer.pad_token_id, sharding)
    if peaks is not None:
        peaks["evaluation"] = _peak()
    return {
        "epoch_s": epoch_s, "epoch_cpu_s": epoch_cpu_s, "val_accuracy": evaluation["accuracy"], "pairs": len(pairs),
        "train_pairs": trained_pairs,
    }  # fmt: skip


def _precision(args) -> str:
    return "bf16" if training_choice(args.device, args.precision).dtype == torch.bfloat16 else "fp32"


def _pairs(ranking) -> list[dict]:
    positions = sorted(set(ranking.tie_groups))
    groups = [
        [text for text, g in zip(ranking.responses, ranking.tie_groups, strict=True) if g == p] for p in positions
    ]
    item = {"ranking_id": ranking.ranking_id, "prompt_id": ranking.prompt_key, "prompt": ranking.prompt}
    return expand_to_pairs(item | {"ranked_responses": groups})


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- --memory: HH-shaped pairs, one fresh process per run ------------------------------------------------------------


def _words(rng: random.Random, count: int) -> str:
    """Return `count` words as sentences of 6-14 words."""
    words, sentence = [], []
    for _ in range(count):
        sentence.append(rng.choice(WORDS))
        if len(sentence) >= rng.randint(6, 14):
            words.append(" ".join(sentence).capitalize() + rng.choice(".?."))
            sentence = []
    return " ".join(words + ([" ".join(sentence).capitalize() + "."] if sentence else []))


def _fitted_answer(tokenizer, prompt, rng: random.Random, target: int, max_length: int) -> str:
    """Return an answer whose encoded prompt + answer + EOS is `target` tokens or a few fewer, never cut."""
    words, seed = 2 * target, rng.random()
    while True:  # the same words each time, fewer until they fit: approaches the target from above
        answer = _words(random.Random(seed), words) if words > 0 else "Sure."
        ids, cut = encode_and_cut(tokenizer, prompt, answer, 10 * max_length, last_token=True)
        if len(ids) <= target or words <= 0:
            return answer
        words -= max(1, (len(ids) - target) // 2)


def hh_rankings(tokenizer, max_length: int, count: int = HH_PAIRS, seed: int = 0) -> list[Ranking]:
    """Return `count` HH-shaped pairs as K=2 rankings, each side 80-95% of `max_length` tokens once encoded.

    Each pair is written as Anthropic HH writes it (two whole "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts that
    differ in the last answer) and read back by our importer (`pair_of_row`), as a pairs file would be. The
    conversation (2-3 human turns) takes about 55-65% of the budget, each answer the rest.
    """
    rng = random.Random(seed)
    rankings = []
    for index in range(count):
        turns = rng.choice((2, 3))
        history_words = int(max_length * rng.uniform(0.55, 0.65) / 1.3 / (2 * turns - 1))  # ~1.3 tokens a word
        transcript = ""
        for turn in range(2 * turns - 1):
            transcript += f"\n\n{'Human' if turn % 2 == 0 else 'Assistant'}: {_words(rng, history_words)}"
        prompt = pair_of_row({"chosen": transcript + "\n\nAssistant: a", "rejected": transcript + "\n\nAssistant: b"})[
            0
        ]
        answers = []
        for _ in range(2):
            target = int(max_length * rng.uniform(0.83, 0.95))  # a few under the target still >= 80%
            answers.append(_fitted_answer(tokenizer, prompt, rng, target, max_length))
        row = {
            "chosen": f"{transcript}\n\nAssistant: {answers[0]}",
            "rejected": f"{transcript}\n\nAssistant: {answers[1]}",
        }
        prompt, chosen, rejected = pair_of_row(row)
        rankings.append(Ranking(index, f"hh-{index}", prompt, [chosen, rejected], [0, 1]))
    return rankings


def check_lengths(tokenizer, rankings: list[Ranking], max_length: int) -> tuple[int, int]:
    """Return the (shortest, longest) encoded side; raise if any side is cut or under 80% of `max_length`."""
    lengths = []
    for ranking in rankings:
        for response in ranking.responses:
            ids, cut = encode_and_cut(tokenizer, ranking.prompt, response, max_length, last_token=True)
            if cut or not 0.8 * max_length <= len(ids) <= max_length:
                raise AssertionError(f"pair {ranking.ranking_id}: {len(ids)} tokens (cut: {cut}) at {max_length}")
            lengths.append(len(ids))
    return min(lengths), max(lengths)


def _peak() -> int:
    """Return this process's peak so far: bytes resident (CPU) or allocated (CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _resident_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def _watch_phases(peaks: dict) -> None:
    """Record the peak after each phase of our run (training, normalization pass, save), to say where it was."""
    for name, label in (("_fit", "train"), ("_reward_normalization", "normalization"), ("_save_model", "save")):
        original = getattr(rm.train, name)

        def watched(*args, _original=original, _label=label, **kwargs):
            result = _original(*args, **kwargs)
            peaks[_label] = _peak()
            return result

        setattr(rm.train, name, watched)


def child(args) -> None:
    """Run one side on the pairs file in this (fresh) process; print its result as a RESULT line."""
    rankings = [Ranking(**row) for row in json.loads(Path(args.pairs_file).read_text())]
    train, validation = split_rankings(rankings, args.validation_fraction, args.seed)
    cuda = pick_device(args.device).device.type == "cuda"
    baseline = torch.cuda.memory_allocated() if cuda else _resident_now()
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.child == "ours":
            _watch_phases(peaks)
            result = run_ours(args, rankings, Path(folder) / "run")
        else:
            result = run_trl(args, train, validation, Path(folder) / "run", peaks)
    result |= {"peak": _peak() - baseline, "phases": {key: value - baseline for key, value in peaks.items()}}
    result |= {"held_out": len(validation), "pairs_total": len(rankings)}
    print("RESULT " + json.dumps(result), flush=True)


def spawn(args, side: str, max_length: int, pairs_file: Path) -> dict:
    """Run one side in a fresh process; return its RESULT."""
    command = [sys.executable, __file__, "--child", side, "--pairs-file", str(pairs_file), "--max-length",
               str(max_length), "--backbone", args.backbone, "--k", "2", "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lora-rank", str(args.lora_rank), "--lr", str(args.lr),
               "--validation-fraction", str(args.validation_fraction), "--seed", str(args.seed),
               "--device", args.device, "--precision", args.precision]  # fmt: skip
    command += ["--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing"]
    env = (with_mimalloc(dict(os.environ)) if side == "ours" else None) or dict(os.environ)  # as `train-rm` runs
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{side} at {max_length} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def check_counts(ours: dict, trl: dict, max_length: int) -> None:
    """Raise unless both sides trained on every pair that was not held out, and ours cut none."""
    expected = ours["pairs_total"] - ours["held_out"]
    if ours["cut"] or ours["train_pairs"] != expected or trl["train_pairs"] != expected:
        raise AssertionError(
            f"at {max_length}: ours cut {ours['cut']} and trained on {ours['train_pairs']} pairs, TRL on "
            f"{trl['train_pairs']}; expected {expected} each, none cut"
        )


def memory_main(args) -> None:
    """Run ours and TRL alternately, each in a fresh process, at each max length; print the table."""
    tokenizer = load_tokenizer(args.backbone)  # HH-shaped pairs are sized for a decoder's chat template
    runs = {(length, side): [] for length in args.max_lengths for side in ("ours", "TRL")}
    lengths = {}
    with tempfile.TemporaryDirectory() as folder:
        for length in args.max_lengths:
            rankings = hh_rankings(tokenizer, length, seed=args.seed)
            lengths[length] = check_lengths(tokenizer, rankings, length)
            (Path(folder) / f"pairs-{length}.json").write_text(json.dumps([vars(r) for r in rankings]))
        for repeat in range(args.repeats):
            for length in args.max_lengths:
                for side in ("ours", "TRL"):
                    result = spawn(args, side, length, Path(folder) / f"pairs-{length}.json")
                    runs[length, side].append(result)
                    print(f"repeat {repeat + 1} max_length {length} {side}: {json.dumps(result)}", flush=True)
    print(
        f"\nbackbone={args.backbone} lora_rank={args.lora_rank} lr={args.lr} {HH_PAIRS} HH-shaped pairs, "
        f"validation_fraction={args.validation_fraction} batch={args.batch_size} pairs epochs={args.epochs} "
        f"gradient_checkpointing={args.gradient_checkpointing} device={pick_device(args.device).device.type} "
        f"precision={_precision(args)} "
        f"repeats={args.repeats} (time: fastest; peak: highest)"
    )
    print(
        "| max length | tokens per side | ours peak GiB | TRL peak GiB | ratio | ours s/epoch | TRL s/epoch | ratio "
        "| ours CPU s/epoch | TRL CPU s/epoch | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for length in args.max_lengths:
        ours, trl = runs[length, "ours"], runs[length, "TRL"]
        for one, other in zip(ours, trl, strict=True):
            check_counts(one, other, length)
        peak_ours, peak_trl = max(r["peak"] for r in ours), max(r["peak"] for r in trl)
        time_ours, time_trl = min(r["epoch_s"] for r in ours), min(r["epoch_s"] for r in trl)
        cpu_ours, cpu_trl = min(r["epoch_cpu_s"] for r in ours), min(r["epoch_cpu_s"] for r in trl)
        print(
            f"| {length} | {lengths[length][0]}-{lengths[length][1]} | {peak_ours / 2**30:.2f} | "
            f"{peak_trl / 2**30:.2f} | {peak_ours / peak_trl:.2f}x | {time_ours:.1f} | {time_trl:.1f} | "
            f"{time_ours / time_trl:.2f}x | {cpu_ours:.1f} | {cpu_trl:.1f} | {cpu_ours / cpu_trl:.2f}x |"
        )
    print("\npeak (GiB) after each phase, highest repeat: ours train / normalization / save; TRL train / evaluation")
    for (length, side), results in runs.items():
        phases = max(results, key=lambda r: r["peak"])["phases"]
        print(f"  {length} {side:4}: " + " / ".join(f"{k} {v / 2**30:.2f}" for k, v in phases.items()))
    print(
        "Both: no pair cut or dropped (checked). Ours evaluates the held-out pairs after its epoch, then scores the"
        " training pairs once (reward normalization) and saves the merged model; TRL runs no evaluation and saves"
        " nothing in train(); the bench evaluates its model once afterwards."
    )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    is_encoder = args.backbone in (FAST_ENCODER, f"sentence-transformers/{FAST_ENCODER}")
    if args.lora_rank is None:
        args.lora_rank = 0 if is_encoder else 16
    if args.lr is None:
        args.lr = 1e-4 if is_encoder else 2e-4
    if args.child:
        return child(args)
    if args.memory:
        args.k = 2
        return memory_main(args)
    rankings = synthetic_rankings(args.prompts, args.k, seed=args.seed)
    train, validation = split_rankings(rankings, args.validation_fraction, args.seed)
    runs = {"ours": [], "TRL": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            runs["ours"].append(run_ours(args, rankings, Path(folder) / f"ours-{repeat}"))
            runs["TRL"].append(run_trl(args, train, validation, Path(folder) / f"trl-{repeat}"))
    ours, trl = (min(runs[name], key=lambda run: run["epoch_s"]) for name in ("ours", "TRL"))
    print(
        f"\nbackbone={args.backbone} K={args.k} train rankings={len(train)} ({trl['pairs']} pairs) "
        f"validation rankings={len(validation)} epochs={args.epochs} lora_rank={args.lora_rank} lr={args.lr} "
        f"gradient_checkpointing={args.gradient_checkpointing} device={pick_device(args.device).device.type} "
        f"precision={_precision(args)} "
        f"repeats={args.repeats} (fastest kept)"
    )
    for name, run in (("ours", ours), ("TRL", trl)):
        print(
            f"{name:5} {run['epoch_s']:8.2f} s/epoch wall  {run['epoch_cpu_s']:8.2f} s/epoch CPU   "
            f"validation pairwise accuracy {run['val_accuracy']:.3f}"
        )
    print(
        f"time ratio ours/TRL: wall {ours['epoch_s'] / trl['epoch_s']:.2f}x, "
        f"CPU {ours['epoch_cpu_s'] / trl['epoch_cpu_s']:.2f}x (target <= 0.5x)"
    )


if __name__ == "__main__":
    main()
