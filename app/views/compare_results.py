"""Comparisons (admin): make a blind comparison set from two models, and read the votes as win rates and a leaderboard."""

import altair as alt
import pandas as pd
import streamlit as st

from app import auth, models, resources
from app.text import as_text
from data import compare
from data.prompts import prompt_count
from evaluation.leaderboard import bradley_terry, win_rate

auth.require_admin()
store = resources.store()


def generate_set(names: list[str], prompts: list[str], temperature: float, max_new_tokens: int) -> list[tuple]:
    """Return one (prompt, model_a, answer_a, model_b, answer_b) row per prompt, with a progress bar."""
    loaded = [models.causal_lm(models.load_path(store, name)) for name in names]
    bar = st.progress(0.0, text="Generating answers…")
    rows = []
    for done, prompt in enumerate(prompts, start=1):
        answers = [models.answer(model, tokenizer, prompt, temperature, max_new_tokens) for model, tokenizer in loaded]
        rows.append((prompt, names[0], answers[0], names[1], answers[1]))
        bar.progress(done / len(prompts), text=f"Generated {done} of {len(prompts)} prompts")
    return rows


def create_form() -> None:
    available = prompt_count(store)
    if not available:
        st.info("No prompts yet: import some on the Prompts page.")
        return
    left, right = st.columns(2)
    with left:
        name_a = models.model_picker(store, "Model A", ("base", "policy"), "comparisons_model_a")
    with right:
        name_b = models.model_picker(store, "Model B", ("base", "policy"), "comparisons_model_b")
    first, second, third = st.columns(3)
    count = first.number_input("Prompts", min_value=1, max_value=available, value=min(20, available), step=1,
                               key="comparisons_count", help="drawn at random from the store")  # fmt: skip
    temperature = second.number_input("Temperature", min_value=0.05, value=0.7, step=0.1, key="comparisons_temperature")
    max_new_tokens = third.number_input("Max new tokens", min_value=1, value=128, step=16, key="comparisons_tokens")
    if not st.button("Create comparison set", type="primary", key="comparisons_create"):
        return
    if not name_a or not name_b or name_a == name_b:
        st.error("Pick two different models.")
        return
    try:
        rows = generate_set([name_a, name_b], compare.sample_prompts(store, int(count)), temperature, max_new_tokens)
    except (ValueError, OSError) as error:  # an unknown folder, or a hub id without network: nothing was stored
        st.error(f"Could not generate: {as_text(error)}")
        return
    compare.add_comparisons(store, rows)  # all or nothing, after every answer exists
    st.success(f"Added {len(rows)} blind comparisons of {as_text(name_a)} and {as_text(name_b)}.")


def win_rate_table(by_pair: dict) -> pd.DataFrame:
    rows = []
    for (model_a, model_b), votes in sorted(by_pair.items()):
        result = win_rate(votes)
        rows.append({"model_a": model_a, "model_b": model_b, "votes": len(votes), "a_wins": result.wins,
                     "b_wins": result.losses, "ties_or_both_bad": result.ties, "a_win_rate": result.rate,
                     "ci_low": result.low, "ci_high": result.high})  # fmt: skip
    return pd.DataFrame(rows)


def win_rate_chart(table: pd.DataFrame) -> alt.LayerChart:
    table = table.assign(pair=table["model_a"] + " vs " + table["model_b"])
    base = alt.Chart(table).encode(y=alt.Y("pair:N", title=None))
    bars = base.mark_errorbar().encode(
        x=alt.X("ci_low:Q", title="A's win rate (95% Wilson interval)", scale=alt.Scale(domain=[0, 1])), x2="ci_high:Q"
    )
    points = base.mark_point(filled=True, size=80).encode(x="a_win_rate:Q", tooltip=list(table.columns))
    even = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return bars + points + even


def results() -> None:
    by_pair = compare.votes_by_pair(store)
    if not by_pair:
        st.info("No votes yet: voters find the comparisons on the Compare page.")
        return
    table = win_rate_table(by_pair)
    st.dataframe(table, hide_index=True, column_config={
        name: st.column_config.NumberColumn(format="%.2f") for name in ("a_win_rate", "ci_low", "ci_high")
    })  # fmt: skip
    st.altair_chart(win_rate_chart(table))
    st.caption("A tie or 'both bad' counts half a win each way. An interval that excludes 0.5 is a real difference.")
    compared = {name for pair in by_pair for name in pair}
    if len(compared) > 2:
        st.subheader("Leaderboard")
        strengths = bradley_terry(compare.matches(store))
        board = pd.DataFrame(
            [{"model": name, "strength": strength} for name, strength in strengths.items()]
        ).sort_values("strength", ascending=False)
        st.dataframe(board, hide_index=True, column_config={"strength": st.column_config.NumberColumn(format="%.2f")})
        st.caption("Bradley-Terry strengths (log scale, mean 0): P(i beats j) = σ(strength_i − strength_j).")


st.title("Comparisons")
counts = compare.comparison_counts(store)
left, right = st.columns(2)
left.metric("Comparisons", counts["comparisons"])
right.metric("Votes", counts["votes"])
with st.expander("New comparison set", expanded=counts["comparisons"] == 0):
    create_form()
st.subheader("Results")
results()
