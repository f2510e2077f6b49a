"""Models the pages load on demand (playground, blind comparisons, reward-model check): cached, and a picker widget.

Loaded once per process with `st.cache_resource`, keyed by the resolved folder, so every session shares them.
"""

import streamlit as st

from core.generation import sample
from core.models import generator_problem, load_causal_lm
from data.registry import list_models, path_of
from data.store import Store
from rm.score import RewardScorer

OTHER = "Other (path or hub id)…"
NONE = "None"


@st.cache_resource(show_spinner="Loading model…", max_entries=3)
def causal_lm(path: str):
    """Return (model, tokenizer) of a generator, loaded once per process."""
    return load_causal_lm(path)


@st.cache_resource(show_spinner="Loading reward model…", max_entries=2)
def reward_scorer(path: str) -> RewardScorer:
    """Return a reward-model run (or one-output model folder) ready to score, loaded once per process."""
    return RewardScorer.from_run(path)


def answer(model, tokenizer, prompt: str, temperature: float, max_new_tokens: int, seed: int | None = None) -> str:
    """Return one sampled answer to a prompt (annotation's SamplingParams ask K >= 2; this is a single answer)."""
    if not temperature > 0 or max_new_tokens < 1:
        raise ValueError(f"need temperature > 0 and max_new_tokens >= 1, got {temperature} and {max_new_tokens}")
    return sample(model, tokenizer, prompt, 1, temperature, 1.0, max_new_tokens, seed)[0].text


def model_picker(store: Store, label: str, kinds: tuple[str, ...], key: str, optional: bool = False) -> str:
    """Draw a choice of recorded models of these kinds (plus 'default' for generators) or a typed path; return it.

    Base and policy models are offered only if they are causal language models (see `generator_problem`).
    The returned name is what gets stored and shown (a registry name, 'default', or the typed text);
    `path_of` turns it into a folder when loading. With `optional`, a first choice NONE returns "".
    """
    generators = "base" in kinds or "policy" in kinds
    names = ["default"] if generators else []
    for model in (m for kind in kinds for m in list_models(store, kind)):
        if generators and generator_problem(model["path"] or model["name"]):
            continue  # e.g. an encoder recorded as a reward model's backbone: it cannot write answers
        if model["name"] not in names:
            names.append(model["name"])
    options = [NONE] * optional + [*names, OTHER]
    choice = st.selectbox(label, options, key=key)
    if choice == NONE:
        return ""
    if choice != OTHER:
        return choice
    return st.text_input(f"{label}: path or hub id", key=f"{key}_path", placeholder="/path/to/run or org/model").strip()


def load_path(store: Store, name: str) -> str:
    """Return the folder (or hub id) to load for a picked name; ValueError for an empty choice."""
    if not name:
        raise ValueError("no model chosen: pick one or type a path")
    return path_of(store, name)
