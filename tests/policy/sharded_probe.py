"""Run under `accelerate launch`: prepare a tiny LoRA policy as the trainers do and print what this rank holds.

Prints one JSON line per rank: the parameters it stores (ZeRO-3 keeps a shard: `ds_tensor`) and the model's total.
"""

import json
import sys

from policy.lora import LoraSettings, load_policy
from policy.runner import make_accelerator, prepare, whole_model_loading

accelerator, choice = make_accelerator("cpu")
with whole_model_loading(accelerator):
    policy, _, _ = load_policy(sys.argv[1], LoraSettings(rank=4, alpha=8), accelerator.device, choice.dtype)
total = sum(parameter.numel() for parameter in policy.parameters())
model, _ = prepare(accelerator, policy, 1e-4, 1e-8, rows_per_step=2)
held = sum(getattr(p, "ds_tensor", p).numel() for p in accelerator.unwrap_model(model).parameters())
print(
    json.dumps(
        {"rank": accelerator.process_index, "held": held, "total": total, "type": str(accelerator.distributed_type)}
    )
)
