"""Models: base models, reward-model runs and policy runs with their lineage and headline metrics.

Choosing a policy (or a base model) as the generator closes the loop: the next items to rank are sampled from it.
A reward-model run can score new responses as suggestions for the annotators.
"""

import pandas as pd
import streamlit as st

from app import auth, resources
from app.text import as_text
from core.models import generator_problem
from data import registry
from data.settings import load_settings, save_settings
from rm.accuracy import held_out_accuracy
from rm.check import data_summary

auth.require_admin()
store = resources.store()
HEADLINES = ("val/loss", "objective/reward_mean", "objective/kl", "eval/accuracy", "train/loss")


def base_rows(models: list[dict], generator: str) -> list[dict]:
    """Return the base models: recorded ones, plus 'default' and the current generator if they are not recorded."""
    known = {model["name"] for model in models} | {model["path"] for model in models if model["path"]}
    extra = [name for name in dict.fromkeys(["default", generator]) if name not in known]
    return [{"id": None, "kind": "base", "name": name, "path": name, "parent_id": None, "config": {}, "metrics": {}}
            for name in extra]  # fmt: skip


def data_source(model: dict) -> str:
    """Return what a run learned from: its rankings, pairs or prompts file (lineage of the data)."""
    config = model["config"]
    if model["kind"] == "reward" and model["path"] and (summary := data_summary(model["path"])):
        return summary
    for key in ("pairs_file", "prompts_file", "pairs"):
        if config.get(key):
            return f"{key.replace('_', ' ')}: {config[key]}"
    lineage = config.get("lineage") or {}
    return lineage.get("prompts", "")


def accuracy_cell(metrics: dict) -> str | None:
    """Return a reward model's held-out accuracy with its interval and count (runs from before counts: the rate)."""
    accuracy = held_out_accuracy(metrics)
    if accuracy is not None:
        return str(accuracy) + (" ⚠ too few" if accuracy.too_few else "")
    rate = metrics.get("val/accuracy")
    return f"{rate:.0%} (count not recorded)" if isinstance(rate, int | float) else None


def model_table(models: list[dict], names: dict) -> pd.DataFrame:
    rows = []
    for model in models:
        metrics = model["metrics"]
        row = {
            "kind": model["kind"],
            "name": model["name"],
            "parent": names.get(model["parent_id"], ""),
            "data": data_source(model),
            "algorithm": model["config"].get("algo", "reward model" if model["kind"] == "reward" else ""),
        }
        if model["kind"] == "reward":
            row["held-out accuracy"] = accuracy_cell(metrics)
        row |= {key: metrics.get(key) for key in HEADLINES if isinstance(metrics.get(key), int | float)}
        rows.append(row | {"path": model["path"]})
    return pd.DataFrame(rows)


st.title("Models")
settings = load_settings(store)
recorded = registry.list_models(store)
models = base_rows(recorded, settings["generator_model"]) + recorded
names = {model["id"]: model["name"] for model in recorded}
in_use = st.empty()  # filled last, so it shows a choice made below in this same run
st.dataframe(model_table(models, names), hide_index=True)

by_name = {model["name"]: model for model in models}
name = st.selectbox(
    "Model", list(by_name), key="registry_pick", help="a base model, a reward-model run or a policy run"
)
picked = by_name[name]
if picked["kind"] == "reward":
    st.caption("A reward model scores responses; it cannot generate them.")
    if st.button("Use for suggestions", type="primary", key="registry_suggest"):
        save_settings(store, {"suggestion_model": picked["name"]})
        st.success(
            f"New responses will be scored by {as_text(picked['name'])}; turn suggestions on in Settings to show them."
        )
elif problem := generator_problem(picked["path"] or picked["name"]):
    st.caption(f"Not offered as a generator: {problem}. It can serve as a reward-model backbone.")
else:
    if st.button("Use as generator", type="primary", key="registry_generate"):
        save_settings(store, {"generator_model": picked["path"] or picked["name"]})
        st.success(f"New items to rank will be sampled from {as_text(picked['name'])}.")
if picked["metrics"]:
    with st.expander("All metrics"):
        st.json(picked["metrics"])
if picked["config"]:
    with st.expander("Config"):
        st.json(picked["config"])

settings = load_settings(store)
in_use.caption(
    f"Generator for annotation: **{settings['generator_model']}** · "
    f"suggestions from: **{settings['suggestion_model'] or 'none'}**"
)
