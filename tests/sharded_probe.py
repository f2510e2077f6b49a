"""Run under `accelerate launch`: prepare a tiny model as the trainers do; print what this rank holds.

Usage: sharded_probe.py KIND MODEL_DIR [OUTPUT_DIR], KIND one of
- policy, reward: a LoRA policy or reward model through `Sharding.prepare`;
- ppo: a PPO run's models through the runner (LoRA policy, separate value trunk, value head);
- full-grpo: a full fine-tuning GRPO run's models through the runner (the trained policy and its frozen reference),
  then one GRPO step on them: sampling in lockstep, the split reference's forward, the update.
Prints one JSON line per rank: for each part, the parameters it stores (ZeRO-3 keeps a shard: `ds_tensor`) and
its total.
"""

import json
import sys

import torch

from core.distributed import Sharding
from policy.lora import LoraSettings, load_policy
from rm.model import RewardNetwork, load_backbone


def held(module) -> dict:
    parameters = list(module.parameters())
    return {
        "held": sum(getattr(p, "ds_tensor", p).numel() for p in parameters),
        "total": sum(getattr(p, "ds_numel", p.numel()) for p in parameters),
    }


def prepared_alone(kind: str, model_dir: str) -> tuple[Sharding, dict]:
    sharding = Sharding("cpu")
    with sharding.loading():
        if kind == "policy":
            model, _, _ = load_policy(model_dir, LoraSettings(rank=4, alpha=8), sharding.device, sharding.choice.dtype)
        else:
            model = RewardNetwork(load_backbone(model_dir, lora_rank=4)[0])
    total = sum(parameter.numel() for parameter in model.parameters())
    optimizer = torch.optim.Adam([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-4)
    prepared, _ = sharding.prepare(model, optimizer, rows_per_step=2, max_grad_norm=1.0)
    return sharding, {"model": {"held": held(sharding.accelerator.unwrap_model(prepared))["held"], "total": total}}


def prepared_by_the_runner(kind: str, model_dir: str, output_dir: str) -> tuple[Sharding, dict]:
    from policy.config import GRPOConfig, PPOConfig
    from policy.grpo import grpo_step
    from policy.ppo import build_model
    from policy.runner import make_optimizer, prepare_training, start_policy_gradient_run

    common = {"model": model_dir, "device": "cpu", "output_dir": output_dir, "steps": 1}
    if kind == "ppo":
        config = PPOConfig(**common, lora_rank=4, lora_alpha=8, value_model="separate")
    else:
        config = GRPOConfig(**common, lora_rank=0, beta=0.04, num_generations=2, batch_prompts=1, max_new_tokens=4)
    ctx = start_policy_gradient_run(config, reward=lambda prompts, responses: [0.0] * len(responses), prompts=["hi"])
    model = build_model(ctx, config) if kind == "ppo" else ctx.policy
    model, optimizer = prepare_training(ctx, model, make_optimizer(model, 1e-4), rows_per_step=2)
    unwrapped = ctx.accelerator.unwrap_model(model)
    if kind == "ppo":
        parts = {"value_trunk": held(unwrapped.value_trunk), "value_head": held(unwrapped.value_head)}
    else:
        parts = {"policy": held(unwrapped), "reference": held(ctx.reference)}
        parts["step"] = {name: float(value) for name, value in grpo_step(ctx, model, optimizer, 0).items()}
    return ctx.sharding, parts


kind, model_dir = sys.argv[1:3]
if kind in ("policy", "reward"):
    sharding, parts = prepared_alone(kind, model_dir)
else:
    sharding, parts = prepared_by_the_runner(kind, model_dir, sys.argv[3])
record = {"rank": sharding.rank, "type": str(sharding.accelerator.distributed_type), **parts}
# One write of the whole line: both ranks share stdout, and print's separate write of the newline let the
# other rank's line land between them.
sys.stdout.write(json.dumps(record) + "\n")
sys.stdout.flush()
sharding.end()
