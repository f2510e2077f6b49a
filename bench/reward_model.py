"""Benchmark: our ranking-wise reward trainer vs TRL's RewardTrainer on the same rankings expanded to pairs.

Same backbone and initial head (same seed), same synthetic K-wise rankings with a hidden rule, same epochs,
optimizer steps, learning rate and schedule. Ours encodes each of a ranking's K responses once per step; TRL
encodes both sides of each of its K(K-1)/2 pairs. Both are scored on the same validation prompts by the same
function. Prints the training wall time per epoch of each, their ratio (target: ours <= 0.5x) and accuracies.
On a shared machine other processes inflate wall time: `--repeats` alternates the two and keeps each one's
fastest run, and CPU seconds (all threads of this process) are printed beside wall seconds.

    python bench/reward_model.py                      # MiniLM, K=4, a few minutes on a laptop CPU
    python bench/reward_model.py --backbone default --device cuda   # SmolLM2-135M-Instruct with LoRA
"""

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import datasets
import torch
from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

from core.distributed import Sharding
from core.models import FAST_ENCODER, pick_device
from data.export import expand_to_pairs
from rm.config import RewardConfig
from rm.data import split_rankings
from rm.model import RewardNetwork, encode, load_backbone, reads_last_token
from rm.synthetic import synthetic_rankings
from rm.train import encode_rankings, evaluate, train_reward_model


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=FAST_ENCODER, help="'all-MiniLM-L6-v2' (default) or 'default' (SmolLM2)")
    parser.add_argument("--prompts", type=int, default=64, help="synthetic prompts, one K-wise ranking each")
    parser.add_argument("--k", type=int, default=4, help="responses per ranking")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="rankings per step (TRL: the same pairs per step)")
    parser.add_argument("--lora-rank", type=int, default=None, help="default: 0 (full) for MiniLM, 16 for SmolLM2")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-4 (MiniLM), 2e-4 (SmolLM2 LoRA)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--validation-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where both sides run")
    parser.add_argument("--repeats", type=int, default=1, help="run each trainer this many times, keep the fastest")
    return parser.parse_args()


def run_ours(args, rankings, output_dir: Path) -> dict:
    config = RewardConfig(
        backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
        lora_rank=args.lora_rank, max_length=args.max_length, validation_fraction=args.validation_fraction,
        seed=args.seed, output_dir=str(output_dir), device=args.device,
    )  # fmt: skip
    result = train_reward_model(config, rankings=rankings)
    epochs = [r for r in _read_jsonl(result.run_dir / "metrics.jsonl") if r["event"] == "epoch"]
    return {
        "epoch_s": sum(r["time/train_s"] for r in epochs) / len(epochs),
        "epoch_cpu_s": sum(r["time/train_cpu_s"] for r in epochs) / len(epochs),
        "val_accuracy": epochs[-1]["val/accuracy"],  # the last epoch, like TRL's final model
    }


def run_trl(args, train, validation, output_dir: Path) -> dict:
    choice = pick_device(args.device)
    torch.manual_seed(args.seed)  # the same initial head as ours
    model, tokenizer = load_backbone(args.backbone, args.lora_rank, 32)
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
        use_cpu=choice.device.type == "cpu", bf16=choice.device.type == "cuda", dataloader_num_workers=0,
    )  # fmt: skip
    trainer = RewardTrainer(model=model, args=trl_args, train_dataset=dataset, processing_class=tokenizer)
    started, started_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    epoch_s = (time.perf_counter() - started) / args.epochs
    epoch_cpu_s = (time.process_time() - started_cpu) / args.epochs
    config = RewardConfig(batch_size=args.batch_size, lora_rank=args.lora_rank)
    encoded = encode_rankings(validation, tokenizer, args.max_length, last_token)
    sharding = Sharding(choice.device.type)
    evaluation = evaluate(RewardNetwork(trainer.model), encoded, config, tokenizer.pad_token_id, sharding)
    return {"epoch_s": epoch_s, "epoch_cpu_s": epoch_cpu_s, "val_accuracy": evaluation["accuracy"], "pairs": len(pairs)}


def _pairs(ranking) -> list[dict]:
    positions = sorted(set(ranking.tie_groups))
    groups = [
        [text for text, g in zip(ranking.responses, ranking.tie_groups, strict=True) if g == p] for p in positions
    ]
    item = {"ranking_id": ranking.ranking_id, "prompt_id": ranking.prompt_key, "prompt": ranking.prompt}
    return expand_to_pairs(item | {"ranked_responses": groups})


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    is_encoder = args.backbone in (FAST_ENCODER, f"sentence-transformers/{FAST_ENCODER}")
    if args.lora_rank is None:
        args.lora_rank = 0 if is_encoder else 16
    if args.lr is None:
        args.lr = 1e-4 if is_encoder else 2e-4
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
        f"device={pick_device(args.device).device.type} repeats={args.repeats} (fastest kept)"
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
