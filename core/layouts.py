"""How a run is spread over devices: accelerate config files (DDP, DeepSpeed ZeRO-2/3, FSDP2), shipped or the
user's own, and what each layout keeps on every device (for the pre-launch memory estimate).

Scaling runs on accelerate (and DeepSpeed or torch FSDP behind it), never on code of ours: a run with a layout
is started under `accelerate launch --config_file <file>`, which sets the environment `Accelerator()` reads.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

SHIPPED = Path(__file__).parent / "accelerate_configs"
ACCELERATE_CONFIG_HELP = (
    "run under `accelerate launch` with this layout: a shipped one (one-gpu, ddp-8gpu, zero2-8gpu, zero3-8gpu, "
    "fsdp2-8gpu, two-machines-zero3) or an accelerate config file (None: one process)"
)
LAUNCHED_ENV = "RLHF_STUDIO_LAUNCHED"  # set for the processes `accelerate launch` starts, so they do not relaunch


def shipped_layouts() -> list[str]:
    """Return the names of the accelerate configs that ship with RLHF Studio (one-gpu, zero3-8gpu, ...)."""
    return sorted(path.stem for path in SHIPPED.glob("*.yaml"))


def layout_file(name_or_path: str) -> Path:
    """Return the accelerate config file of a shipped layout name or a path; ValueError naming the choices."""
    if (SHIPPED / f"{name_or_path}.yaml").exists():
        return SHIPPED / f"{name_or_path}.yaml"
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise ValueError(
        f"accelerate config {name_or_path!r} is neither a shipped layout ({', '.join(shipped_layouts())}) "
        "nor a file (write one with `accelerate config`)"
    )


@dataclass(frozen=True)
class Layout:
    """What a layout shards: `shards` is how many devices share one copy of each part (1: every device keeps all)."""

    name: str
    processes: int
    weights_shards: int  # ZeRO-3 and FSDP shard the weights
    training_state_shards: int  # ZeRO-2/3 and FSDP shard gradients and optimizer state

    @property
    def deepspeed(self) -> bool:
        return self.name.startswith("DeepSpeed")

    def describe(self) -> str:
        return self.name if self.processes == 1 else f"{self.name} over {self.processes} processes"


def read_layout(name_or_path: str | None) -> Layout:
    """Return the layout an accelerate config describes (None: one process, nothing sharded)."""
    if not name_or_path:
        return Layout("one process", 1, 1, 1)
    config = yaml.safe_load(layout_file(name_or_path).read_text()) or {}
    processes = int(config.get("num_processes", 1))
    kind = str(config.get("distributed_type", "NO")).upper()
    if kind == "DEEPSPEED":
        stage = int((config.get("deepspeed_config") or {}).get("zero_stage", 2))
        return Layout(
            f"DeepSpeed ZeRO-{stage}", processes, processes if stage >= 3 else 1, processes if stage >= 1 else 1
        )
    if kind == "FSDP":
        return Layout("FSDP", processes, processes, processes)
    return Layout("data-parallel" if processes > 1 else "one process", processes, 1, 1)


def launched() -> bool:
    """Return whether this process was started by a launcher (accelerate launch, torchrun): do not relaunch."""
    return LAUNCHED_ENV in os.environ or "LOCAL_RANK" in os.environ


def is_main_process() -> bool:
    """Return whether this is rank 0 of a launched run (or a lone process): the one that opens DuckDB and reports.
    Read from the launcher's environment, before any Accelerator exists."""
    return int(os.environ.get("RANK", "0")) == 0
