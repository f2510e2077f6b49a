"""The reward-model training config: the same object behind `rlhf-studio train-rm`, the app's form and config.json.

Every field carries its help text in `metadata["help"]`; `orchestration.train_rm_command` turns the fields into flags from it.
"""

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.fields import DEVICES, PRECISION_HELP, PRECISIONS, check_choices, documented
from core.layouts import ACCELERATE_CONFIG_HELP, layout_file
from core.models import FAST_ENCODER
from core.runs import REPORT_TO, REPORT_TO_HELP, check_trackers

# LoRA (r=16) on SmolLM2-135M, 40 synthetic rankings (K=4, 8 held out = 48 pairs), the first 4 optimizer steps:
#   lr 1e-4: held-out loss 0.571, accuracy 0.79;  1e-3: 0.078, 1.00;  3e-3: 0.083, 1.00.
# 1e-4 (the old default) has barely started after a pass over few rankings; 3e-3 gains nothing over 1e-3.
# Full fine-tuning moves every weight and keeps the usual 2e-5.
LORA_LEARNING_RATE = 1e-3
FULL_LEARNING_RATE = 2e-5


@dataclass
class RewardConfig:
    """Train a Bradley-Terry reward model on rankings (InstructGPT: all C(K,2) pairs of a ranking in one step)."""

    backbone: str = documented(
        "default",
        "'default' (SmolLM2-135M-Instruct), 'all-MiniLM-L6-v2' (fast CPU encoder), a model folder or a hub id",
    )
    epochs: int | None = documented(
        None,
        "passes over the training rankings (default: one pass, or as many as reach min_steps optimizer steps when"
        " there are few rankings; early stopping on the held-out loss ends sooner)",
    )
    min_steps: int = documented(
        100,
        "optimizer steps to plan for at least, when epochs is not given: 31 rankings in batches of 8 are 4 steps a"
        " pass, far too few to learn from",
    )
    patience: int = documented(
        5, "stop after this many evaluations (one per epoch) without a lower held-out loss; 0 = never stop early"
    )
    learning_rate: float | None = documented(
        None,
        f"AdamW learning rate (default: {LORA_LEARNING_RATE:g} with LoRA, {FULL_LEARNING_RATE:g} full fine-tuning)",
    )
    batch_size: int = documented(
        8, "rankings per optimizer step over all processes (each ranking's K responses are encoded once)"
    )
    lora_rank: int | None = documented(
        None,
        "LoRA rank r (Hu et al. 2021); 0 = full fine-tuning. Default: 16, or 0 for the small all-MiniLM-L6-v2"
        " encoder, which is fine-tuned in full. The score head is always trained",
    )
    lora_alpha: int = documented(32, "LoRA scaling alpha (update is alpha/r * B A)")
    max_length: int = documented(512, "longest prompt+response in tokens; prompts lose their start first")
    gradient_checkpointing: bool = documented(
        True,
        "recompute each layer's activations in the backward pass instead of keeping them: a batch of rankings at"
        " max_length 512 then fits in a few GiB instead of tens, for about a third more compute",
    )
    margin: float = documented(0.0, "required reward gap m in -log sigma(r_better - r_worse - m) (Touvron et al. 2023)")
    center_coefficient: float = documented(
        0.0, "c of the centering term c*(r_better + r_worse)^2 (TRL's center_rewards_coefficient; 0.01 is common)"
    )
    validation_fraction: float = documented(
        0.2, "share of prompts held out for validation and early stopping (split by prompt)"
    )
    weight_decay: float = documented(0.0, "AdamW weight decay")
    warmup_ratio: float = documented(0.0, "share of steps with a linear learning-rate warm-up (then linear decay to 0)")
    max_grad_norm: float = documented(1.0, "clip the gradient's global norm to this")
    log_every: int = documented(10, "write a training record to metrics.jsonl every N steps")
    seed: int = documented(0, "random seed (head init, prompt split, shuffling)")
    device: str = documented("auto", "'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'", DEVICES)
    precision: str = documented("auto", PRECISION_HELP, PRECISIONS)
    accelerate_config: str | None = documented(None, ACCELERATE_CONFIG_HELP)
    report_to: str = documented("none", REPORT_TO_HELP, REPORT_TO)
    pairs: str | None = documented(
        None, "bootstrap from a prompt/chosen/rejected file (.jsonl, .parquet, datasets folder; Anthropic HH too)"
    )
    rankings: str | None = documented(
        None,
        "rankings exported from a store (`rlhf-studio export FILE --kind rankings`): how the app's jobs train on the"
        " store's rankings without opening its database file, which the running app holds",
    )
    output_dir: str | None = documented(None, "run folder (default: <runs dir>/rm-<timestamp>)")

    def __post_init__(self):
        if self.pairs and self.rankings:
            raise ValueError("give either a pairs file or a rankings file, not both")
        for name in ("epochs", "min_steps", "batch_size", "lora_alpha", "log_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {self.max_length}")
        if self.lora_rank is None:  # the form, the command and the memory check all see the rank that trains
            self.lora_rank = 0 if self.backbone in (FAST_ENCODER, f"sentence-transformers/{FAST_ENCODER}") else 16
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")
        if self.learning_rate is None:
            self.learning_rate = LORA_LEARNING_RATE if self.lora_rank > 0 else FULL_LEARNING_RATE
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0 = no early stopping), got {self.patience}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.center_coefficient < 0:
            raise ValueError(f"center_coefficient must be >= 0, got {self.center_coefficient}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or not self.max_grad_norm > 0:
            raise ValueError("weight_decay must be >= 0 and max_grad_norm > 0")
        check_choices(self)
        check_trackers(self.report_to)
        if self.accelerate_config:
            layout_file(self.accelerate_config)  # a clear error for an unknown name or a missing file

    def planned_epochs(self, train_rankings: int) -> int:
        """Return the passes to run: `epochs` if given, else enough for `min_steps` optimizer steps (at least one)."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = math.ceil(train_rankings / self.batch_size)
        return max(1, math.ceil(self.min_steps / steps_per_epoch))

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "RewardConfig":
        """Return the config saved beside a run (unknown keys from other versions are ignored)."""
        saved = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})
