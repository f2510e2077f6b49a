"""Compare: two answers to one prompt, in random order and without model names; vote for the better one."""

import uuid

import streamlit as st

from app import auth, resources
from app.text import LAST_TURN_NOTE, as_text, show_answer, show_prompt
from core.chat import is_conversation
from data import annotation, compare

store = resources.store()
CHOICES = {  # button label -> the vote as data.compare stores it
    "A is better": "left",
    "B is better": "right",
    "Tie": "tie",
    "Both bad": "both_bad",
}


def voter_id() -> int | None:
    """Return the voter's annotator id: the signed-in user, or in the local no-login mode a name from the sidebar."""
    user = auth.current_user()
    name = user.name
    if user == auth.LOCAL_ADMIN:
        name = st.sidebar.text_input("Annotator", value="local", key="compare_annotator", help="Your name or handle")
    return annotation.ensure_annotator(store, name) if name.strip() else None


def token_for(comparison_id: int) -> str:
    """Return this comparison's submission token, so a double click stores one vote."""
    shown = st.session_state.get("compare_shown")
    if not shown or shown["comparison_id"] != comparison_id:
        shown = {"comparison_id": comparison_id, "token": str(uuid.uuid4())}
        st.session_state["compare_shown"] = shown
    return shown["token"]


st.title("Compare")
voter = voter_id()
if voter is None:
    st.info("Enter your name in the sidebar to start.")
    st.stop()
if st.session_state.pop("compare_saved", False):
    st.toast("Vote saved.", icon=":material/check_circle:")
counts = compare.comparison_counts(store, voter)
shown = compare.next_comparison(store, voter)
if shown is None:
    if counts["comparisons"]:
        st.info("No comparisons wait for your vote: you have voted on all of them.")
    else:
        st.info(
            "No comparisons yet. An admin creates them: a comparison set of two models' answers on the "
            "Comparisons page, or single pairs with *Add to blind comparison* on the Playground page."
        )
    if auth.current_user().is_admin:
        st.page_link("views/compare_results.py", label="Comparisons", icon=":material/leaderboard:")
        st.page_link("views/playground.py", label="Playground", icon=":material/science:")
    st.stop()
st.progress(
    1 - counts["left"] / counts["comparisons"], text=f"{counts['left']} of {counts['comparisons']} comparisons left"
)
st.caption("Which answer is better? The two come from different models, in random order.")
conversation = is_conversation(shown.prompt)
st.subheader("Conversation" if conversation else "Prompt")
if conversation:
    st.caption(LAST_TURN_NOTE)
show_prompt(shown.prompt)
for column, label, text in zip(st.columns(2), ("A", "B"), (shown.left, shown.right), strict=True):
    with column, st.container(border=True):
        st.markdown(f"**Answer {label}**")
        show_answer(text, conversation, empty="*(empty answer)*")

token = token_for(shown.comparison_id)
with st.container(horizontal=True):
    for label, choice in CHOICES.items():
        if st.button(
            label, key=f"compare_vote_{choice}", type="primary" if choice in ("left", "right") else "secondary"
        ):
            try:
                compare.record_vote(store, shown.comparison_id, voter, choice, token)
            except ValueError as error:
                st.error(as_text(error))
            else:
                st.session_state["compare_saved"] = True
                st.rerun()
