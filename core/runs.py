"""What every training run shares: live metrics as JSON lines, and a registry-name check before training starts."""

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


def check_registry_name(store, run_dir: Path) -> None:
    """Refuse before training if the run's name (its folder name) is recorded for another folder."""
    if store is None:
        return
    from data.registry import get_model

    try:
        record = get_model(store, Path(run_dir).name)
    except KeyError:
        return
    if Path(record["path"]).resolve() != Path(run_dir).resolve():
        raise ValueError(
            f"a model named {Path(run_dir).name!r} is already recorded at {record['path']}; choose another output folder"
        )
