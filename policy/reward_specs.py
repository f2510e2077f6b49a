"""How a run names its reward components: `SOURCE=WEIGHT`, comma-separated (see `policy.reward_mix`).

Kept apart from the mix, without torch, so configs and the app's forms can check a `rewards` string cheaply.
"""

import math
from dataclasses import dataclass
from pathlib import Path

MODEL_PREFIX = "model:"


@dataclass
class RewardSpec:
    """One component as written: where it comes from, its weight and the name its metrics go under."""

    source: str  # 'package.module:function', or 'model:FOLDER_OR_NAME'
    weight: float
    name: str

    @property
    def kind(self) -> str:
        return "model" if self.source.startswith(MODEL_PREFIX) else "function"

    @property
    def target(self) -> str:
        """Return the function's 'module:function', or the reward-model run's folder or registry name."""
        return self.source.removeprefix(MODEL_PREFIX)


def parse_rewards(text: str) -> list[RewardSpec]:
    """Return the components of a `rewards` string, or raise ValueError naming the part that is wrong."""
    specs, names = [], set()
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            raise ValueError(f"rewards {text!r} has an empty component: write SOURCE=WEIGHT, comma-separated")
        source, weight = part, 1.0
        if "=" in part:
            source, _, written = part.rpartition("=")
            try:
                weight = float(written)
            except ValueError:
                raise ValueError(f"reward {part!r}: weight {written!r} is not a number") from None
        source = source.strip()
        if not math.isfinite(weight):
            raise ValueError(f"reward {part!r}: the weight must be a finite number")
        if source.startswith(MODEL_PREFIX):
            if not source.removeprefix(MODEL_PREFIX).strip():
                raise ValueError(f"reward {part!r}: name a reward-model run after 'model:'")
            name = Path(source.removeprefix(MODEL_PREFIX).rstrip("/")).name
        elif ":" in source and all(source.partition(":")[::2]):
            name = source.partition(":")[2]
        else:
            raise ValueError(f"reward {part!r}: expected 'package.module:function' or 'model:RUN', then '=WEIGHT'")
        unique, count = name, 2
        while unique in names:
            unique, count = f"{name}_{count}", count + 1
        names.add(unique)
        specs.append(RewardSpec(source, weight, unique))
    return specs


def format_rewards(specs: list[RewardSpec]) -> str:
    """Return the `rewards` string of components (the inverse of `parse_rewards`)."""
    return ",".join(f"{spec.source}={spec.weight:g}" for spec in specs)


def component_metric_names(specs: list[RewardSpec]) -> tuple[str, ...]:
    """Return the metric names the Jobs page plots for these components (their means)."""
    return tuple(f"rewards/{spec.name}/mean" for spec in specs)


def reward_specs_of(rewards: str | None, reward_kind: str, reward_function: str | None, reward_model: str | None):
    """Return a run's reward components from its config values: `rewards` parsed, else the one reward_kind names."""
    if rewards:
        return parse_rewards(rewards)
    if reward_kind == "function":
        return parse_rewards(reward_function or "")
    return [RewardSpec(MODEL_PREFIX + (reward_model or ""), 1.0, "reward_model")]
