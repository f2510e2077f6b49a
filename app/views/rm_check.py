"""Reward-model check: how often a reward model agrees with people on rankings it never trained on, and length bias."""

import altair as alt
import pandas as pd
import streamlit as st

from app import auth, models, resources
from app.text import as_text
from core.chat import plain_layout
from rm.accuracy import Accuracy
from rm.check import check_reward_model, trained_ranking_ids
from rm.data import rankings_from_store

auth.require_admin()
store = resources.store()


def run_check(name: str):
    path = models.load_path(store, name)
    scorer = models.reward_scorer(path)
    trained = trained_ranking_ids(path, store.path)
    bar = st.progress(0.0, text="Scoring held-out rankings…")
    result = check_reward_model(scorer, rankings_from_store(store), trained, progress=bar.progress)
    bar.empty()
    return result


def length_chart(points: pd.DataFrame) -> alt.LayerChart:
    """Reward against length with a linear trend: a steep rising line means the model pays for length."""
    dots = (
        alt.Chart(points)
        .mark_circle(opacity=0.5)
        .encode(
            x=alt.X("length:Q", title="response length (tokens)"),
            y=alt.Y("reward:Q", title="reward (normalized)"),
            color=alt.Color("group:O", title="human rank group (0 = best)"),
            tooltip=["ranking_id", "length", "reward", "group"],
        )
    )
    # The trend is its own chart: one inheriting the dots' colour would add an "undefined" group to the legend.
    trend = (
        alt.Chart(points)
        .transform_regression("length", "reward")
        .mark_line(color="firebrick")
        .encode(x="length:Q", y="reward:Q")
    )
    return dots + trend


def show(result) -> None:
    if not result.rankings:
        st.info(f"No held-out rankings: the reward model trained on all {result.skipped_trained} of them.")
        return
    agreement = Accuracy(result.agreed, result.pairs, len(result.rankings))
    low, high = agreement.interval
    first, second, third = st.columns(3)
    first.metric("Agreement with people", f"{agreement.rate:.0%}", help="pairwise accuracy over untied pairs")
    first.caption(f"95% interval {low:.0%}–{high:.0%}")
    second.metric("Held-out rankings", len(result.rankings), help="rankings it did not train on")
    second.caption(f"{result.pairs} untied pairs")
    third.metric("Reward ~ length correlation", f"{result.length_correlation:.2f}")
    if warning := agreement.warning():
        st.warning(warning, icon=":material/warning:")
    st.caption(f"Left out {result.skipped_trained} rankings the reward model trained on. Chance agreement is 50%.")
    st.subheader("Rankings it gets most wrong")
    wrong = [r for r in result.rankings if r.agreed < r.pairs][:20]
    if not wrong:
        st.success("It orders every held-out pair as people did.")
    else:
        st.dataframe(pd.DataFrame([{
            "ranking_id": r.ranking_id, "prompt": plain_layout(r.prompt, generation_prompt=False), "agreement": f"{r.agreed}/{r.pairs}",
            "people preferred": r.worst_better, "over": r.worst_worse,
        } for r in wrong]), hide_index=True)  # fmt: skip
    st.subheader("Reward vs length")
    st.altair_chart(length_chart(pd.DataFrame(result.points)))


st.title("Reward-model check")
st.caption("Scores the human rankings the reward model did not train on, and counts the pairs it orders as people did.")
name = models.model_picker(store, "Reward model", ("reward",), "rm_check_model")
if st.button("Check", type="primary", key="rm_check_run"):
    try:
        st.session_state["rm_check_result"] = (name, run_check(name))
    except (ValueError, OSError) as error:
        st.error(f"Could not check {as_text(repr(name))}: {as_text(error)}")
checked = st.session_state.get("rm_check_result")
if checked:
    st.markdown(f"Results for **{as_text(checked[0])}**")
    show(checked[1])
