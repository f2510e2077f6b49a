"""What every training run folder holds: its config.json and its live metrics as JSON lines."""

import json
import math
import time
from pathlib import Path

METRICS_FILE = "metrics.jsonl"  # one JSON object per line, flushed as written, so the app can plot a run live


class MetricsWriter:
    """Append one JSON object per record; write only from the main process (pass enabled=False elsewhere)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: dict) -> dict:
        """Append {"step", "time", **metrics} (tensors become floats, NaN/inf become null) and return it."""
        record = {"step": step, "time": time.time(), **{key: _plain(value) for key, value in metrics.items()}}
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return record


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Return every complete line of a run's metrics (a line being written right now is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_run_config(run_dir: str | Path) -> dict:
    """Return a run's saved config.json (a policy run's holds its 'algo'), or raise FileNotFoundError."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no config.json: not a training run")
    return json.loads(path.read_text())


def final_metrics(run_dir: str | Path) -> dict:
    """Return every metric's last value over a run's metrics.jsonl (held-out numbers are often written last)."""
    final = {}
    for record in read_metrics(run_dir):
        final |= record
    return final
