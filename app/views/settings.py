"""Settings: which model samples the responses and how; saved in the database for every session and the sampler."""

import streamlit as st

from app import auth, resources
from data.settings import load_settings, save_settings
from rlhf_studio.models import DEFAULT_MODEL, resolve_model
from rlhf_studio.sampler import sampling_params

auth.require_admin()
store = resources.store()


def check(settings: dict) -> None:
    """Raise ValueError naming the first setting that cannot work (the same checks the CLI runs)."""
    sampling_params(settings)
    if settings["ready_per_annotator"] < 0:
        raise ValueError(f"ready per annotator must be >= 0, got {settings['ready_per_annotator']}")
    model = settings["generator_model"]
    if not model:
        raise ValueError("generator model is empty: use 'default', a hub id or a model folder")
    if model not in ("default", DEFAULT_MODEL):  # the default converts on first use; do not start that here
        resolve_model(model)


st.title("Settings")
current = load_settings(store)
with st.form("settings_form"):
    model = st.text_input(
        "Generator model",
        value=current["generator_model"],
        help="'default' (SmolLM2-135M-Instruct), a Hugging Face hub id, a model folder, or a policy run folder",
    )
    left, right = st.columns(2)
    k = left.number_input("Responses per prompt (K)", value=int(current["k"]), step=1, help="2 to 8")
    max_new_tokens = left.number_input("Max new tokens", value=int(current["max_new_tokens"]), step=16)
    seed = left.number_input("Seed", value=current["seed"], step=1, help="empty: a fresh random draw each time")
    temperature = right.number_input("Temperature", value=float(current["temperature"]), step=0.1, format="%.2f")
    top_p = right.number_input("Top-p", value=float(current["top_p"]), step=0.05, format="%.2f")
    ready = right.number_input(
        "Ready per annotator",
        value=int(current["ready_per_annotator"]),
        step=1,
        help="items kept sampled ahead of each active annotator; 0 pauses background sampling",
    )
    if st.form_submit_button("Save", type="primary"):
        changes = {
            "generator_model": model.strip(),
            "k": int(k),
            "temperature": float(temperature),
            "top_p": float(top_p),
            "max_new_tokens": int(max_new_tokens),
            "seed": None if seed is None else int(seed),
            "ready_per_annotator": int(ready),
        }
        try:
            check(changes)
        except ValueError as error:
            st.error(f"Not saved: {error}")
        else:
            save_settings(store, changes)
            st.success("Saved. New batches use these settings; items already sampled keep theirs.")
