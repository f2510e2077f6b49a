"""Follow a training job: its progress, the metrics worth plotting, and recording it in the registry when it ends."""

import json
import math
from pathlib import Path

from core.runs import final_metrics, read_run_config
from data import registry
from data.store import Store


def total_steps(job_kind: str, config: dict, run_dir: str | Path) -> int | None:
    """Return how many optimizer steps the run will take, from its config (and data.json for a reward model)."""
    if job_kind == "train-rm":
        try:
            record = json.loads((Path(run_dir) / "data.json").read_text())
        except (OSError, ValueError):
            return None
        if "planned_steps" in record:  # epochs chosen from the data size; early stopping may end sooner
            return record["planned_steps"]
        if "train_ranking_ids" not in record:
            return None
        return (config.get("epochs") or 1) * math.ceil(len(record["train_ranking_ids"]) / config.get("batch_size", 1))
    if config.get("algo") in ("ppo", "grpo"):
        return config.get("steps")
    return None


def progress(job_kind: str, run_dir: str | Path, records: list[dict]) -> tuple[float, str]:
    """Return (fraction done in [0, 1], a caption) from metrics.jsonl against the config's steps or epochs."""
    config = run_config(run_dir)
    steps_done = max((record.get("step", 0) for record in records), default=0)
    total = total_steps(job_kind, config, run_dir)
    if total:
        return min(1.0, steps_done / total), f"step {steps_done} / {total}"
    epochs = config.get("epochs")
    epoch_done = max((record.get("epoch", 0) for record in records), default=0)
    if epochs:
        return min(1.0, epoch_done / epochs), f"epoch {epoch_done:.2f} / {epochs} (step {steps_done})"
    return 0.0, f"step {steps_done}"


def metric_rows(records: list[dict], names: tuple[str, ...]) -> list[dict]:
    """Return long-form rows (step, metric, value) of the named metrics, for one line chart per metric."""
    return [
        {"step": record["step"], "metric": name, "value": record[name]}
        for record in records
        for name in names
        if isinstance(record.get(name), int | float) and not isinstance(record.get(name), bool) and "step" in record
    ]


def plotted_metrics(job_kind: str, config: dict) -> tuple[str, ...]:
    """Return the metric names worth plotting for a job: what its trainer declares beside its code."""
    # Imported here, when a job is shown: the trainers bring torch, peft and datasets, which every page
    # importing this module (through app.resources) would otherwise wait for at start.
    from policy import dpo, grpo, ppo, sft
    from rm import train as reward_model_training

    trainers = {"train-rm": reward_model_training, "ppo": ppo, "grpo": grpo, "dpo": dpo, "sft": sft}
    trainer = trainers.get("train-rm" if job_kind == "train-rm" else config.get("algo", ""))
    if trainer is None:
        return ()
    if config.get("algo") in ("ppo", "grpo"):  # each reward component's mean, next to the total
        return trainer.PLOTTED_METRICS + reward_component_metrics(config)
    return trainer.PLOTTED_METRICS


def reward_component_metrics(config: dict) -> tuple[str, ...]:
    """Return `rewards/<name>/mean` of each reward component a PPO or GRPO run's config names."""
    from policy.reward_specs import component_metric_names, reward_specs_of

    try:
        specs = reward_specs_of(
            *(config.get(key) for key in ("rewards", "reward_kind", "reward_function", "reward_model"))
        )
    except ValueError:  # a config written before the run checked it: no components to plot
        return ()
    return component_metric_names(specs)


def run_config(run_dir: str | Path) -> dict:
    """Return a run's config.json, or {} while the job has not written it yet."""
    try:
        return read_run_config(run_dir)
    except (OSError, ValueError):
        return {}


def headline_metrics(job_kind: str, run_dir: str | Path) -> dict:
    """Return a run's headline numbers: a reward model's kept epoch (summary.json), else every metric's last value."""
    summary = Path(run_dir) / "summary.json"
    if job_kind == "train-rm" and summary.exists():
        return json.loads(summary.read_text())
    return final_metrics(run_dir)


def record_finished_run(store: Store, job: dict) -> int | None:
    """Record a finished training job in the registry (JobRunner's on_done): its kind, folder, parent and metrics."""
    if job["kind"] not in ("train-rm", "train-policy"):
        return None
    kind = "reward" if job["kind"] == "train-rm" else "policy"
    run_dir = Path(job["run_dir"])
    return registry.record_run(store, kind, run_dir, run_config(run_dir), headline_metrics(job["kind"], run_dir))
