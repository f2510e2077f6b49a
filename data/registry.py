"""The model registry: base models, reward-model runs and policy runs, with lineage and headline metrics."""

import json

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
