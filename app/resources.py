"""What every page and session of the app shares: the database and the background sampler, one per process."""

import logging
import os
from dataclasses import dataclass

import streamlit as st

from data import importers, prompts
from data.settings import save_settings
from data.store import Store
from rlhf_studio.paths import default_db_path
from rlhf_studio.sampler import BackgroundSampler

log = logging.getLogger(__name__)
MODEL_ENV = "RLHF_STUDIO_MODEL"  # set by `rlhf-studio serve --model` and by tests that use a tiny model


def db_path() -> str:
    return str(default_db_path().resolve())


def seed_if_empty(store: Store) -> None:
    """Import the shipped prompts into an empty database, so a first run has work."""
    seed = importers.seed_prompts_path()
    if prompts.prompt_count(store) == 0 and seed.exists():
        report = importers.import_prompts(store, seed)
        log.info("seeded %d prompts from %s", report.added, seed)


@dataclass
class Studio:
    store: Store
    sampler: BackgroundSampler


def _close(studio: Studio) -> None:
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
    return Studio(store, sampler)


def store() -> Store:
    """Return the database named by RLHF_STUDIO_DB, opened once per process."""
    return _open(db_path()).store


def sampler() -> BackgroundSampler:
    """Return the background sampler of that database, started once per process."""
    return _open(db_path()).sampler


def shutdown() -> None:
    """Stop every sampler, then close its store (tests call this; a server process just exits).

    The global clear, not `_open.clear()`: called outside a script run, the latter leaves DuckDB objects alive
    until interpreter exit, where nanobind reports them as leaks.
    """
    st.cache_resource.clear()
