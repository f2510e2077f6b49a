"""What every training run folder holds: its config.json and its live metrics, as JSON lines and in the experiment
trackers the run reports to (TensorBoard, Weights & Biases, trackio), all written by one `MetricsWriter`."""

import importlib.util
import json
import math
import time
from pathlib import Path

import torch

METRICS_FILE = "metrics.jsonl"  # one JSON object per line, flushed as written, so the app can plot a run live
REPORT_TO = ("none", "tensorboard", "wandb", "trackio", "all")  # TRL's `report_to` names
REPORT_TO_HELP = "also log metrics to: 'tensorboard' (<run>/tensorboard), 'wandb', 'trackio' or 'all'"
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
TENSORBOARD_DIR = "tensorboard"  # inside the run folder: `tensorboard --logdir runs/`


def tracker_names(report_to: str) -> list[str]:
    """Return the trackers a `report_to` choice names ('all': every one whose package is installed)."""
    if report_to == "none":
        return []
    if report_to == "all":
        return [name for name, package in TRACKER_PACKAGES.items() if importlib.util.find_spec(package)]
    if report_to not in TRACKER_PACKAGES:
        raise ValueError(f"unknown report_to {report_to!r}; expected one of {REPORT_TO}")
    return [report_to]


def check_trackers(report_to: str) -> None:
    """Raise a clear error now, before any training, when a chosen tracker's package is missing."""
    for name in tracker_names(report_to):
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise ValueError(
                f"report_to {name!r} needs the {TRACKER_PACKAGES[name]} package: pip install 'rlhf-studio[{name}]'"
            )


def report_cut(writer: "MetricsWriter", cut: int, total: int, unit: str, max_length: int) -> str:
    """Say once (the run's output) and record (with its first metrics) how many inputs were cut to the length limit.

    The rule everywhere: a long answer loses its end, a long conversation its oldest whole turns.
    """
    sentence = f"{cut:,} of {total:,} {unit} cut to {max_length:,} tokens"
    if writer.enabled:  # the main process
        print(sentence, flush=True)
    writer.pending |= {"data/cut_to_max_length": cut, "data/examples": total, "data/max_length": max_length}
    return sentence


class MetricsWriter:
    """Append one JSON object per record and send the same numbers to the run's trackers.

    Write only from the main process (pass enabled=False elsewhere). Trackers come from accelerate
    (`accelerate.tracking`), which knows each service's API; they log offline where the service allows
    (`WANDB_MODE=offline`, trackio's local store, TensorBoard event files in `<run>/tensorboard`).
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, report_to: str = "none", config: dict | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self.trackers = []
        self.pending: dict = {}  # metrics said once, written with the next record (what the length limit cut)
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.trackers = _start_trackers(report_to, Path(run_dir), config or {})

    def write(self, step: int, metrics: dict) -> dict:
        """Append {"step", "time", **metrics} (tensors become floats, NaN/inf become null) and return it."""
        metrics, self.pending = metrics | self.pending, {}
        record = {"step": step, "time": time.time(), **{key: _plain(value) for key, value in metrics.items()}}
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            numbers = {
                key: value
                for key, value in record.items()
                if key not in ("step", "time") and isinstance(value, int | float) and not isinstance(value, bool)
            }
            for tracker in self.trackers:
                tracker.log(numbers, step=step)
        return record

    def close(self) -> None:
        """Finish the trackers (flush and close their files or runs); metrics.jsonl needs nothing."""
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def _start_trackers(report_to: str, run_dir: Path, config: dict) -> list:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    check_trackers(report_to)
    trackers = []
    for name in tracker_names(report_to):
        tracker_class = LOGGER_TYPE_TO_CLASS[name]
        if tracker_class.requires_logging_directory:
            tracker = tracker_class(run_dir.name, run_dir / TENSORBOARD_DIR)
        else:
            tracker = tracker_class(run_dir.name)
        tracker.start()
        hyperparameters = {key: value for key, value in config.items() if isinstance(value, bool | int | float | str)}
        tracker.store_init_configuration(hyperparameters)
        trackers.append(tracker)
    return trackers


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


class MetricWindow:
    """Sums each step's metric tensors on the device; `read` averages them over the steps since the last read.

    A read is the loop's one host synchronisation (one gather over processes, one copy to the host), so the
    host can queue the next steps' kernels while the device still runs the last ones. Step time and tokens per
    second (`charts/tokens`: a step's tokens on one process; the rate counts every process) are over the whole
    window, measured once its values are back. Every trainer's loop reads its metrics through one of these.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1

    def read(self, sharding) -> dict[str, float]:
        """Return the window's means over its steps and over the processes (`sharding`: a `Sharding`)."""
        means = sharding.mean({key: total / self.steps for key, total in self.sums.items()})
        elapsed = time.perf_counter() - self.started
        tokens = means.pop("charts/tokens") * sharding.world * self.steps
        means |= {"charts/step_time_s": elapsed / self.steps, "charts/tokens_per_s": tokens / elapsed}
        self.__init__()
        return means


def is_log_step(step: int, total_steps: int, log_every: int) -> bool:
    """Return whether metrics are read at this step: the first (it shows the run started, warm-up apart), every
    `log_every`-th, and the last."""
    return step == 1 or step % log_every == 0 or step == total_steps
