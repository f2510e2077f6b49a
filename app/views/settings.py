"""Settings: which model samples the responses and how, how items are handed out, what annotators see beside them.

Saved in the database for every session and the sampler.
"""

import streamlit as st

from app import auth, resources
from app.text import as_text
from core.generation import (
    CPU_MAX_NEW_TOKENS,
    CPU_MAX_NEW_TOKENS_REASON,
    GPU_MAX_NEW_TOKENS,
    default_max_new_tokens,
)
from core.models import DEFAULT_MODEL, generator_problem, resolve_model
from data.annotation import ORDERS, overlap_every
from data.registry import list_models, path_of
from data.settings import load_settings, save_settings
from orchestration.sampler import sampling_params

auth.require_admin()
store = resources.store()
SUGGESTIONS = {"off": "Off (no anchoring)", "scores": "Show scores", "preorder": "Pre-fill ranks in score order"}
ORDER_LABELS = {"fewest": "Fewest rankings first", "uncertain": "Uncertain first (closest reward-model scores)"}


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
        if problem := generator_problem(model):
            raise ValueError(problem)
    check_annotation(settings)


def check_annotation(settings: dict) -> None:
    """Raise ValueError naming the first annotation setting that cannot work."""
    overlap_every(settings["overlap_share"])
    if settings["suggestions"] not in SUGGESTIONS:
        raise ValueError(f"unknown suggestions mode {settings['suggestions']!r}; expected one of {list(SUGGESTIONS)}")
    if settings["next_order"] not in ORDERS:
        raise ValueError(f"unknown order {settings['next_order']!r}; expected one of {ORDERS}")
    reward_model = settings["suggestion_model"]
    if not reward_model:
        if settings["suggestions"] != "off":
            raise ValueError("reward-model suggestions need a suggestion reward model")
        if settings["next_order"] == "uncertain":
            raise ValueError("'uncertain first' needs a suggestion reward model to score the responses")
        return
    resolve_model(path_of(store, reward_model))  # a recorded name, a run folder or a hub id


st.title("Settings")
current = load_settings(store)
speed = resources.sampler().status
if busy := speed.annotators_kept_busy(int(current["k"])):
    st.caption(
        f"Measured sampling speed: {speed.tokens_per_s:.0f} tokens/s, {speed.tokens_per_response:.0f} tokens per "
        f"response; at K={current['k']} that keeps about {busy:.1f} annotator(s) busy at 30 s per item."
    )
else:
    st.caption("Sampling speed: not measured yet (it is once the sampler has filled its first items).")
with st.form("settings_form"):
    model = st.text_input(
        "Generator model",
        value=current["generator_model"],
        help="'default' (SmolLM2-135M-Instruct), a Hugging Face hub id, a model folder, or a policy run folder",
    )
    left, right = st.columns(2)
    k = left.number_input("Responses per prompt (K)", value=int(current["k"]), step=1, help="2 to 8")
    automatic = default_max_new_tokens()
    max_new_tokens = left.number_input(
        "Max new tokens", value=int(current["max_new_tokens"] or automatic), step=16,
        help=f"left at {automatic} it follows the device: {CPU_MAX_NEW_TOKENS} on a CPU ({CPU_MAX_NEW_TOKENS_REASON}), "
        f"{GPU_MAX_NEW_TOKENS} on a GPU",
    )  # fmt: skip
    if automatic == CPU_MAX_NEW_TOKENS:
        left.caption(f"{CPU_MAX_NEW_TOKENS} on this CPU: {CPU_MAX_NEW_TOKENS_REASON}.")
    seed = left.number_input("Seed", value=current["seed"], step=1, help="empty: a fresh random draw each time")
    temperature = right.number_input("Temperature", value=float(current["temperature"]), step=0.1, format="%.2f")
    top_p = right.number_input("Top-p", value=float(current["top_p"]), step=0.05, format="%.2f")
    ready = right.number_input(
        "Ready per annotator",
        value=int(current["ready_per_annotator"]),
        step=1,
        help="items kept sampled ahead of each active annotator; 0 pauses background sampling",
    )
    st.subheader("Annotation")
    left, right = st.columns(2)
    next_order = left.selectbox(
        "Next item", list(ORDER_LABELS), index=list(ORDER_LABELS).index(current["next_order"]),
        format_func=ORDER_LABELS.get, help="'uncertain first' needs the suggestion reward model",
    )  # fmt: skip
    overlap_share = left.number_input(
        "Overlap share", value=float(current["overlap_share"]), step=0.05, format="%.2f",
        help="share of items (0 to 1) also given to a second annotator, to measure agreement on the Data page",
    )  # fmt: skip
    reward_names = ", ".join(m["name"] for m in list_models(store, "reward")) or "none recorded yet"
    suggestion_model = right.text_input(
        "Suggestion reward model", value=current["suggestion_model"] or "",
        help=f"a recorded reward model ({reward_names}) or a run folder; empty = none. The sampler scores "
        "waiting responses with it",
    )  # fmt: skip
    suggestions = right.selectbox(
        "Reward-model suggestions", list(SUGGESTIONS), index=list(SUGGESTIONS).index(current["suggestions"]),
        format_func=SUGGESTIONS.get, help="off by default: suggestions anchor people to the model's opinion",
    )  # fmt: skip
    guidelines = st.text_area(
        "Annotation guidelines (markdown)", value=current["guidelines"], height=200,
        help="shown beside every item on the Annotate page", key="settings_guidelines",
    )  # fmt: skip
    continue_conversations = st.checkbox(
        "Annotators may continue conversations", value=bool(current["continue_conversations"]),
        help="after ranking, an annotator may write the next user message after the best response: that "
        "conversation becomes a new prompt to rank (multi-turn preference data)",
    )  # fmt: skip
    demonstrations = st.checkbox(
        "Annotators may edit a response or write their own answer", value=bool(current["demonstrations"]),
        help="stored as a human-written response, ranked with the sampled ones: demonstrations for supervised "
        "fine-tuning",
    )  # fmt: skip
    if st.form_submit_button("Save", type="primary"):
        changes = {
            "generator_model": model.strip(),
            "k": int(k),
            "temperature": float(temperature),
            "top_p": float(top_p),
            "max_new_tokens": None if int(max_new_tokens) == automatic else int(max_new_tokens),
            "seed": None if seed is None else int(seed),
            "ready_per_annotator": int(ready),
            "next_order": next_order,
            "overlap_share": float(overlap_share),
            "suggestion_model": suggestion_model.strip() or None,
            "suggestions": suggestions,
            "guidelines": guidelines.strip(),
            "continue_conversations": bool(continue_conversations),
            "demonstrations": bool(demonstrations),
        }
        try:
            check(changes)
        except ValueError as error:
            st.error(f"Not saved: {as_text(error)}")
        else:
            save_settings(store, changes)
            st.success("Saved. New batches use these settings; items already sampled keep theirs.")
