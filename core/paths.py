"""Where RLHF Studio keeps its files: one cache folder for converted models, one DuckDB file per project."""

import os
from pathlib import Path


def studio_home() -> Path:
    """Return the cache folder (RLHF_STUDIO_HOME, else ~/.cache/rlhf-studio)."""
    home = os.environ.get("RLHF_STUDIO_HOME") or Path.home() / ".cache" / "rlhf-studio"
    return Path(home)


def default_db_path() -> Path:
    """Return the DuckDB file the app and CLI use when none is named (RLHF_STUDIO_DB, else ./rlhf_studio.duckdb)."""
    return Path(os.environ.get("RLHF_STUDIO_DB") or "rlhf_studio.duckdb")


def runs_dir() -> Path:
    """Return the folder where training runs are written (RLHF_STUDIO_RUNS, else ./runs)."""
    return Path(os.environ.get("RLHF_STUDIO_RUNS") or "runs")
