"""Running the CLI as a user would, and DeepSpeed ZeRO-3 over two CPU processes (the sharded tests share these)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).parent / "sharded_probe.py"
ZERO3_TWO_CPU_PROCESSES = """\
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  zero3_init_flag: false
  zero3_save_16bit_model: true
  gradient_accumulation_steps: 1
mixed_precision: 'no'
num_machines: 1
num_processes: 2
use_cpu: false
"""


def studio(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `rlhf-studio ARGS` in a fresh process (one thread per process, as two share this machine's cores)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    for name in ("RLHF_STUDIO_LAUNCHED", "LOCAL_RANK", "WORLD_SIZE", "RANK"):
        env.pop(name, None)
    command = [sys.executable, "-m", "orchestration.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def parameters_held_per_rank(config: Path, kind: str, model_dir: Path, *args: str) -> list[dict]:
    """Return what each rank stores after a tiny model is prepared as the trainers do, under `accelerate launch`
    (`kind`: see tests/sharded_probe.py)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), str(PROBE), kind,
               str(model_dir), *args]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
