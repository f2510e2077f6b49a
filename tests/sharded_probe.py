"""Run under `accelerate launch`: prepare a tiny LoRA policy or reward model as the trainers do; print what this
rank holds.

Usage: sharded_probe.py policy|reward MODEL_DIR. Prints one JSON line per rank: the parameters it stores
(ZeRO-3 keeps a shard: `ds_tensor`) and the model's total.
"""

import json
import sys

import torch

from core.distributed import Sharding
from policy.lora import LoraSettings, load_policy
from rm.model import RewardNetwork, load_backbone

kind, model_dir = sys.argv[1:3]
sharding = Sharding("cpu")
accelerator = sharding.accelerator
with sharding.loading():
    if kind == "policy":
        model, _, _ = load_policy(model_dir, LoraSettings(rank=4, alpha=8), sharding.device, sharding.choice.dtype)
    else:
        model = RewardNetwork(load_backbone(model_dir, lora_rank=4)[0])
total = sum(parameter.numel() for parameter in model.parameters())
optimizer = torch.optim.Adam([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-4)
prepared, _ = sharding.prepare(model, optimizer, rows_per_step=2, max_grad_norm=1.0)
held = sum(getattr(p, "ds_tensor", p).numel() for p in accelerator.unwrap_model(prepared).parameters())
record = {"rank": accelerator.process_index, "held": held, "total": total, "type": str(accelerator.distributed_type)}
print(json.dumps(record))
sharding.end()
