"""Run folders: metrics.jsonl and the experiment trackers get the same numbers from one writer."""

import pytest

from core.runs import MetricsWriter, check_trackers, read_metrics, tracker_names


def tensorboard_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Return {tag: [(step, value), ...]} from the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard" / run_dir.name))  # accelerate adds the run name
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def jsonl_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list] = {}
    for record in read_metrics(run_dir):
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, int | float) and not isinstance(value, bool):
                found.setdefault(key, []).append((record["step"], value))
    return found


def assert_same_scalars(run_dir) -> None:
    board, lines = tensorboard_scalars(run_dir), jsonl_scalars(run_dir)
    assert set(board) == set(lines)
    for tag, points in lines.items():
        assert [step for step, _ in board[tag]] == [step for step, _ in points], tag
        assert [value for _, value in board[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_tensorboard_holds_the_same_scalars_as_metrics_jsonl(tmp_path):
    writer = MetricsWriter(tmp_path, report_to="tensorboard", config={"lr": 0.1, "model": "tiny", "skip": None})
    writer.write(1, {"losses/policy_loss": 0.5, "charts/step_time_s": 1.25, "note": "text", "flag": True})
    writer.write(2, {"losses/policy_loss": 0.25, "eval/accuracy": 1})
    writer.close()
    assert_same_scalars(tmp_path)
    assert tensorboard_scalars(tmp_path)["losses/policy_loss"] == [(1, 0.5), (2, 0.25)]


def test_report_to_names_and_a_missing_package_is_a_clear_error(monkeypatch):
    assert tracker_names("none") == []
    assert tracker_names("tensorboard") == ["tensorboard"]
    assert "tensorboard" in tracker_names("all")
    with pytest.raises(ValueError, match="unknown report_to"):
        tracker_names("neptune")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real_find_spec(name))
    with pytest.raises(ValueError, match=r"needs the wandb package: pip install 'rlhf-studio\[wandb\]'"):
        check_trackers("wandb")


def test_a_disabled_writer_writes_nothing(tmp_path):
    writer = MetricsWriter(tmp_path / "run", enabled=False, report_to="tensorboard")
    writer.write(1, {"x": 1.0})
    writer.close()
    assert not (tmp_path / "run").exists()
