"""The model registry: base models, reward-model runs and policy runs, with lineage and headline metrics."""

import json
from pathlib import Path

from data.store import Store

KINDS = ("base", "reward", "policy")


def record_model(
    store: Store,
    kind: str,
    name: str,
    path: str | None,
    parent_id: int | None = None,
    config: dict | None = None,
    metrics: dict | None = None,
) -> int:
    """Record a model or run (one transaction) and return its id; a name is recorded once."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")

    def insert(cursor) -> int:
        if cursor.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone():
            raise ValueError(f"a model named {name!r} is already recorded")
        return cursor.execute(
            "INSERT INTO models (kind, name, path, parent_id, config, metrics) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            [kind, name, path, parent_id, json.dumps(config or {}), json.dumps(metrics or {})],
        ).fetchone()[0]

    return store.write(insert)


def update_metrics(store: Store, model_id: int, metrics: dict) -> None:
    """Replace a run's headline metrics (for example when training finishes)."""
    store.write(
        lambda cursor: cursor.execute("UPDATE models SET metrics = ? WHERE id = ?", [json.dumps(metrics), model_id])
    )


def _row_to_dict(row) -> dict:
    model_id, kind, name, path, parent_id, config, metrics, created_at = row
    return {
        "id": model_id,
        "kind": kind,
        "name": name,
        "path": path,
        "parent_id": parent_id,
        "config": json.loads(config) if config else {},
        "metrics": json.loads(metrics) if metrics else {},
        "created_at": created_at,
    }


_COLUMNS = "id, kind, name, path, parent_id, config, metrics, created_at"


def get_model(store: Store, name_or_id: str | int) -> dict:
    """Return one recorded model by name or id, or raise KeyError."""
    column = "id" if isinstance(name_or_id, int) else "name"
    rows = store.query(f"SELECT {_COLUMNS} FROM models WHERE {column} = ?", [name_or_id])
    if not rows:
        raise KeyError(f"no recorded model {name_or_id!r}")
    return _row_to_dict(rows[0])


def list_models(store: Store, kind: str | None = None) -> list[dict]:
    """Return recorded models, newest first, optionally of one kind."""
    if kind is None:
        rows = store.query(f"SELECT {_COLUMNS} FROM models ORDER BY id DESC")
    else:
        rows = store.query(f"SELECT {_COLUMNS} FROM models WHERE kind = ? ORDER BY id DESC", [kind])
    return [_row_to_dict(row) for row in rows]


def path_of(store: Store, name_or_path: str) -> str:
    """Return the folder of a recorded model by name; anything else (a folder, a hub id) passes through."""
    rows = store.query("SELECT path FROM models WHERE name = ?", [name_or_path])
    return rows[0][0] if rows and rows[0][0] else name_or_path


def find_model(store: Store, name_or_path: str | None) -> int | None:
    """Return the id of a recorded model with this name or this folder, else None."""
    if not name_or_path:
        return None
    try:
        return get_model(store, name_or_path)["id"]
    except KeyError:
        pass
    wanted = str(Path(name_or_path).expanduser().resolve())
    for model in list_models(store):
        if model["path"] and str(Path(model["path"]).expanduser().resolve()) == wanted:
            return model["id"]
    return None


def check_run_name(store: Store | None, run_dir: str | Path) -> None:
    """Refuse before training if the run's name (its folder name) is recorded for another folder."""
    if store is None:
        return
    try:
        record = get_model(store, Path(run_dir).name)
    except KeyError:
        return
    if Path(record["path"]).resolve() != Path(run_dir).resolve():
        raise ValueError(
            f"a model named {Path(run_dir).name!r} is already recorded at {record['path']}; choose another output folder"
        )


def record_run(store: Store, kind: str, run_dir: str | Path, config: dict, metrics: dict) -> int:
    """Record a finished training run under its folder name and return its id; a rerun or resume updates its metrics.

    Every trainer and the app's job runner record runs here, so lineage follows one rule (`parent_of`).
    """
    run_dir = Path(run_dir)
    try:
        existing = get_model(store, run_dir.name)["id"]
    except KeyError:
        existing = None
    if existing is not None:
        update_metrics(store, existing, metrics)
        return existing
    parent_id = parent_of(store, kind, config)
    return record_model(store, kind, run_dir.name, str(run_dir.resolve()), parent_id, config, metrics)


def parent_of(store: Store, kind: str, config: dict) -> int | None:
    """Return a run's parent: the reward-model run a PPO/GRPO policy learned from, else the model it started from.

    A base model seen for the first time is recorded (kind 'base'), so every run's lineage reaches a root.
    """
    learned_from_reward_model = kind == "policy" and config.get("reward_kind", "model") == "model"
    if learned_from_reward_model and config.get("algo") != "dpo":
        found = find_model(store, config.get("reward_model"))
        if found is not None:
            return found
    base = config.get("backbone") if kind == "reward" else config.get("model")
    if not base:
        return None
    found = find_model(store, base)
    return found if found is not None else record_model(store, "base", base, base)
