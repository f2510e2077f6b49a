"""What every page and session of the app shares: the database, the background sampler and the job runner."""

import logging
import os
import threading
from dataclasses import dataclass
from functools import partial

import streamlit as st

from core.paths import default_db_path
from data import importers, prompts
from data.settings import save_settings
from data.store import Store
from orchestration.follow import record_finished_run
from orchestration.jobs import JobRunner
from orchestration.sampler import BackgroundSampler

log = logging.getLogger(__name__)
MODEL_ENV = "RLHF_STUDIO_MODEL"  # set by `rlhf-studio serve --model` and by tests that use a tiny model
MAX_JOBS_ENV = "RLHF_STUDIO_MAX_JOBS"  # training jobs run at once (default 1); 0 queues without starting any
TICK_SECONDS = 2.0


def db_path() -> str:
    return str(default_db_path().resolve())


def seed_if_empty(store: Store) -> None:
    """Import the shipped prompts into an empty database, so a first run has work."""
    seed = importers.seed_prompts_path()
    if prompts.prompt_count(store) == 0 and seed.exists():
        report = importers.import_prompts(store, seed)
        log.info("seeded %d prompts from %s", report.added, seed)


class JobTicker(threading.Thread):
    """Daemon thread: every couple of seconds, settle ended jobs and start queued ones (also after a restart)."""

    def __init__(self, runner: JobRunner, seconds: float = TICK_SECONDS):
        super().__init__(daemon=True, name="rlhf-studio-jobs")
        self.runner = runner
        self.seconds = seconds
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.runner.tick()
            except Exception:  # a failed tick (a busy database) must not end the thread; the next one retries
                log.exception("job runner tick failed")
            self.stop_event.wait(self.seconds)


@dataclass
class Studio:
    store: Store
    sampler: BackgroundSampler
    jobs: JobTicker


def _close(studio: Studio) -> None:
    studio.jobs.stop_event.set()
    studio.jobs.join(timeout=30)  # running job processes go on; a restarted app re-attaches to them
    studio.sampler.stop()
    studio.sampler.join(timeout=60)  # let it finish the batch in hand before the store closes under it
    studio.store.close()


@st.cache_resource(show_spinner=False, on_release=_close)
def _open(path: str) -> Studio:
    """Open (and on first use seed) the database, then start its background sampler."""
    store = Store(path)
    seed_if_empty(store)
    if os.environ.get(MODEL_ENV):
        save_settings(store, {"generator_model": os.environ[MODEL_ENV]})
    sampler = BackgroundSampler(store)
    sampler.start()
    runner = JobRunner(store, int(os.environ.get(MAX_JOBS_ENV, "1")), on_done=partial(record_finished_run, store))
    ticker = JobTicker(runner)
    ticker.start()
    return Studio(store, sampler, ticker)


def store() -> Store:
    """Return the database named by RLHF_STUDIO_DB, opened once per process."""
    return _open(db_path()).store


def sampler() -> BackgroundSampler:
    """Return the background sampler of that database, started once per process."""
    return _open(db_path()).sampler


def job_runner() -> JobRunner:
    """Return the job runner of that database, ticking in its own thread once per process."""
    return _open(db_path()).jobs.runner


def shutdown() -> None:
    """Stop every sampler, then close its store (tests call this; a server process just exits).

    The global clear, not `_open.clear()`: called outside a script run, the latter leaves DuckDB objects alive
    until interpreter exit, where nanobind reports them as leaks.
    """
    st.cache_resource.clear()
