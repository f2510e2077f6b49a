"""The job table: what the runner launched, where its log and run folder are, and how it ended."""

import json

from data.store import Store

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
_COLUMNS = "id, kind, argv, run_dir, log_path, status, pid, exit_code, error, created_at, started_at, ended_at"


def add_job(store: Store, kind: str, argv: list[str], run_dir: str, log_path: str) -> int:
    return store.write(
        lambda cursor: cursor.execute(
            "INSERT INTO jobs (kind, argv, run_dir, log_path) VALUES (?, ?, ?, ?) RETURNING id",
            [kind, json.dumps(argv), run_dir, log_path],
        ).fetchone()[0]
    )


def _to_dict(row) -> dict:
    job = dict(zip(_COLUMNS.split(", "), row, strict=True))
    job["argv"] = json.loads(job["argv"])
    return job


def get_job(store: Store, job_id: int) -> dict:
    rows = store.query(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", [job_id])
    if not rows:
        raise KeyError(f"no job {job_id}")
    return _to_dict(rows[0])


def list_jobs(store: Store, statuses: tuple[str, ...] = STATUSES) -> list[dict]:
    """Return jobs in the given statuses, newest first."""
    placeholders = ", ".join("?" for _ in statuses)
    rows = store.query(f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({placeholders}) ORDER BY id DESC", list(statuses))
    return [_to_dict(row) for row in rows]


def mark_running(store: Store, job_id: int, pid: int) -> bool:
    """Record a started job's process; False if the job left the queue meanwhile (cancelled before it started)."""
    return store.write(
        lambda cursor: (
            cursor.execute(
                "UPDATE jobs SET status = 'running', pid = ?, started_at = now() WHERE id = ? AND status = 'queued' "
                "RETURNING id",
                [pid, job_id],
            ).fetchone()
            is not None
        )
    )


def mark_finished(store: Store, job_id: int, status: str, exit_code: int | None = None, error: str | None = None):
    """Record how a job ended; a job already finished keeps its first ending (cancel beats a late exit)."""
    if status not in FINISHED:
        raise ValueError(f"{status!r} is not a finished status; expected one of {FINISHED}")
    store.write(
        lambda cursor: cursor.execute(
            "UPDATE jobs SET status = ?, exit_code = ?, error = ?, ended_at = now() "
            "WHERE id = ? AND status IN ('queued', 'running')",
            [status, exit_code, error, job_id],
        )
    )
