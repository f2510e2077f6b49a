"""Annotate: read a prompt (or a conversation) and its K sampled responses, rank them (equal ranks tie), optionally
edit one or write your own answer (ranked with them), submit, optionally continue the conversation after the best
one, get the next item."""

import string
import time
import uuid
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from app import auth, resources
from app.text import LAST_TURN_NOTE, as_text, show_answer, show_prompt, show_text
from core.chat import is_conversation
from data import annotation
from data.annotation import RankingError
from data.demonstrations import Demonstration
from data.settings import load_settings

store = resources.store()
sampler = resources.sampler()
SHORTCUTS_SCRIPT = (Path(__file__).parents[1] / "shortcuts.js").read_text()  # static: no user or model text
SHORTCUTS_HELP = (
    "Keyboard: type the ranks of A, B, C… in order with the number keys (a letter key first picks a response to "
    "re-rank); Enter submits."
)


def current_annotator() -> int | None:
    """Return the annotator id: the signed-in user, or in the local no-login mode a name typed in the sidebar."""
    user = auth.current_user()
    name = user.name
    if user == auth.LOCAL_ADMIN:
        name = st.sidebar.text_input("Annotator", value="local", key="annotate_annotator", help="Your name or handle")
    if not name.strip():
        return None
    known = st.session_state.get("annotate_annotator_id")  # (name, id): one write per session, not one per run
    if not known or known[0] != name:
        known = st.session_state["annotate_annotator_id"] = (name, annotation.ensure_annotator(store, name))
    return known[1]


def show_progress(annotator_id: int) -> dict:
    counts = annotation.progress(store, annotator_id)
    left, right = st.columns([1, 3])
    left.metric("You ranked", counts["mine"])
    share = counts["prompts_ranked"] / counts["prompts"] if counts["prompts"] else 0.0
    right.progress(share, text=f"{counts['prompts_ranked']} of {counts['prompts']} prompts ranked at least once")
    return counts


def claim_options(settings: dict) -> dict:
    """Return claim_next_item's order and overlap arguments from the settings."""
    options = {"overlap_every": annotation.overlap_every(float(settings["overlap_share"]))}
    if settings["next_order"] == "uncertain" and settings["suggestion_model"]:
        options |= {"order": "uncertain", "reward_model": settings["suggestion_model"]}
    return options


def suggested(settings: dict, item: annotation.Item) -> dict[int, float]:
    """Return the suggestion reward model's stored scores of the item's responses, or {} when suggestions are off."""
    if settings["suggestions"] == "off" or not settings["suggestion_model"]:
        return {}
    return annotation.scores_for(store, settings["suggestion_model"], item.response_ids)


def preorder_ranks(scores: dict[int, float], response_ids: list[int]) -> dict[int, int]:
    """Return {response id: rank} in score order (1 = highest), only when every response has a score."""
    if set(scores) != set(response_ids):
        return {}
    ordered = sorted(response_ids, key=lambda response_id: -scores[response_id])
    return {response_id: rank for rank, response_id in enumerate(ordered, start=1)}


@st.fragment(run_every=2)
def wait_for_item(annotator_id: int, options: dict) -> None:
    """Poll until the background sampler has an item for this annotator, then redraw the page."""
    auth.recheck(store)
    if annotation.claim_next_item(store, annotator_id, **options) is not None:
        st.rerun()
    st.info(f"{sampler.status.describe()} This page refreshes by itself.", icon=":material/hourglass_top:")
    if sampler.last_error:
        st.warning(f"The sampler reported an error (it retries): {as_text(sampler.last_error)}")


def shown_item(item: annotation.Item) -> dict:
    """Return what this session was shown: the item's ids, when, and the token that makes its submission idempotent."""
    shown = st.session_state.get("annotate_shown")
    if not shown or shown["batch_id"] != item.batch_id:
        shown = {
            "batch_id": item.batch_id,
            "response_ids": item.response_ids,
            "responses": item.responses,
            "token": str(uuid.uuid4()),
            "since": time.monotonic(),
        }
        st.session_state["annotate_shown"] = shown
    return shown


def response_card(
    label: str, text: str, k: int, key: str, score: float | None = None, prefill: int | None = None,
    cut_off: bool = False, conversation: bool = False, edit_key: str | None = None,
) -> int | None:  # fmt: skip
    """Draw one response with its rank picker (pre-set to `prefill`), any suggested score and, under `edit_key`, a
    box to edit it in; return the rank."""
    with st.container(border=True):
        index = None if prefill is None else prefill - 1
        rank = st.radio(f"Rank of {label}", range(1, k + 1), index=index, horizontal=True, key=key)
        if score is not None:
            st.caption(f"Reward-model score: {score:+.2f}")
        show_answer(text, conversation)  # escaped HTML, no remote images; under a conversation, its next turn
        if cut_off:
            st.caption(
                "✂ Cut off: the response reached the token limit (max new tokens) before it ended.",
                help="Judge what is there; a response does not lose for being cut off unless that hurts it.",
            )
        if edit_key:
            with st.expander("Edit this response", icon=":material/edit:"):
                st.text_area(
                    f"Your edit of {label}", value=text, key=edit_key, height=150,
                    help="Submitted changed, your version is stored as your own answer, ranked just above this one.",
                )  # fmt: skip
    return rank


def ranking_form(item: annotation.Item, settings: dict) -> None:
    """Draw the item as a form; a press is handled on the next run by `handle_press`, whatever item comes next."""
    k = len(item.response_ids)
    scores = suggested(settings, item)
    prefill = preorder_ranks(scores, item.response_ids) if settings["suggestions"] == "preorder" else {}
    shown_scores = scores if settings["suggestions"] == "scores" else {}
    with st.form(f"annotate_form_{item.batch_id}", border=False):
        st.caption("Give each response a rank: 1 = best. Equal ranks mean a tie.")
        if prefill:
            st.caption("Ranks are pre-filled in a reward model's order: change any you disagree with.")
        ranks = {}
        for row_start in range(0, k, 2):
            columns = st.columns(2)
            for column, index in zip(columns, range(row_start, min(row_start + 2, k)), strict=False):
                with column:
                    response_id = item.response_ids[index]
                    key = f"annotate_rank_{item.batch_id}_{response_id}"
                    cut_off = index < len(item.finish_reasons) and item.finish_reasons[index] == "length"
                    edit_key = f"annotate_edit_{item.batch_id}_{response_id}" if settings["demonstrations"] else None
                    ranks[response_id] = response_card(
                        string.ascii_uppercase[index], item.responses[index], k, key,
                        shown_scores.get(response_id), prefill.get(response_id), cut_off, is_conversation(item.prompt),
                        edit_key,
                    )  # fmt: skip
        if settings["demonstrations"]:
            st.text_area(
                "Write your own answer (optional)", key=f"annotate_answer_{item.batch_id}", height=100,
                placeholder="An answer better than all of these; it is ranked first",
                help="Stored as a human-written response and ranked with the others: a demonstration for "
                "supervised fine-tuning. One answer of your own per item: write one, or edit one response.",
            )  # fmt: skip
        st.text_input("Comment (optional)", key=f"annotate_comment_{item.batch_id}")
        if settings["continue_conversations"]:
            st.text_area(
                "Continue the conversation (optional)", key=f"annotate_follow_up_{item.batch_id}", height=68,
                placeholder="The next user message, after the response you rank best",
                help="Your message follows the best response; that conversation becomes a new item to rank.",
            )  # fmt: skip
        bid = item.batch_id
        with st.container(horizontal=True):  # Enter in the comment box presses the first button: submit
            st.form_submit_button(
                "Submit ranking", type="primary", icon=":material/check:", key=f"annotate_ranked_{bid}"
            )
            st.form_submit_button("Skip", icon=":material/skip_next:", key=f"annotate_skipped_{bid}")
            st.form_submit_button("Flag as bad", icon=":material/flag:", key=f"annotate_flagged_{bid}")
            missing = st.session_state.get("annotate_missing")
            if missing and missing[0] == bid:  # beside the button that was pressed, not at the top of the page
                st.error(f"Give every response a rank; missing: {', '.join(missing[1])}.", icon=":material/error:")
        st.caption(SHORTCUTS_HELP)
    components.html(f"<script>{SHORTCUTS_SCRIPT}</script>", height=0)


def own_answer(shown: dict) -> Demonstration | None:
    """Return the annotator's own answer: a response edited in its box, or one written from scratch; RankingError
    when there are several (one per item)."""
    batch_id, answers = shown["batch_id"], []
    for response_id, sampled in zip(shown["response_ids"], shown["responses"], strict=True):
        edited = st.session_state.get(f"annotate_edit_{batch_id}_{response_id}") or ""
        if edited.strip() and edited.strip() != sampled.strip():  # an emptied box is no answer
            answers.append(Demonstration(edited, parent_response_id=response_id))
    written = st.session_state.get(f"annotate_answer_{batch_id}") or ""
    if written.strip():
        answers.append(Demonstration(written))
    if len(answers) > 1:
        raise RankingError("Give one answer of your own per item: edit one response or write one answer.")
    return answers[0] if answers else None


def handle_press(annotator_id: int) -> None:
    """Store a press made on the item this session was shown, before any next item is claimed, and say so.

    Handled here rather than where the form is drawn: if the item was lost meanwhile (its claim went stale and
    someone else took it, or another tab submitted it), the form is not drawn again, and the press must still
    get its answer (the refusal) instead of vanishing.
    """
    shown = st.session_state.get("annotate_shown")
    if not shown:
        return
    batch_id = shown["batch_id"]
    status = next((s for s in annotation.STATUSES if st.session_state.get(f"annotate_{s}_{batch_id}")), None)
    if status is None:
        return
    ranks = {rid: st.session_state.get(f"annotate_rank_{batch_id}_{rid}") for rid in shown["response_ids"]}
    comment = st.session_state.get(f"annotate_comment_{batch_id}") or ""
    follow_up = (st.session_state.get(f"annotate_follow_up_{batch_id}") or "").strip() if status == "ranked" else ""
    ranking = []
    if status == "ranked":
        unranked = [string.ascii_uppercase[i] for i, rid in enumerate(shown["response_ids"]) if ranks[rid] is None]
        if unranked:
            st.session_state["annotate_missing"] = (batch_id, unranked)  # shown beside Submit by ranking_form
            return
        ranking = annotation.ranks_to_groups(ranks)
    st.session_state.pop("annotate_missing", None)
    try:
        answer = own_answer(shown) if status == "ranked" else None
        annotation.submit_ranking(
            store,
            annotator_id,
            batch_id,
            ranking,
            status=status,
            comment=comment.strip() or None,
            seconds_spent=time.monotonic() - shown["since"],
            submission_token=shown["token"],
            follow_up=follow_up or None,
            demonstration=answer,
        )
    except RankingError as error:
        st.error(as_text(error))
        return
    saved = {"ranked": "Ranking saved.", "skipped": "Skipped.", "flagged": "Flagged."}[status]
    # This run goes on to draw the next item: a rerun here would draw the whole page twice per press.
    saved += " Your answer is stored, ranked with the others." if answer else ""
    st.toast(saved + (" Your follow-up is queued as a new item." if follow_up else ""), icon=":material/check_circle:")


st.title("Annotate")
annotator_id = current_annotator()
if annotator_id is None:
    st.info("Enter your name in the sidebar to start.")
    st.stop()
handle_press(annotator_id)
counts = show_progress(annotator_id)
settings = load_settings(store)
options = claim_options(settings)

item = annotation.claim_next_item(store, annotator_id, **options)
if item is None:
    if counts["prompts"] == 0 or annotation.prompts_left_for(store, annotator_id) == 0:
        done = "No prompts yet" if counts["prompts"] == 0 else "You have gone through every prompt"
        if auth.current_user().is_admin:
            st.info(f"{done}: import more on the Prompts page.")
            st.page_link("views/prompts.py", label="Prompts", icon=":material/list:")
        else:
            st.info(f"{done}. An admin can import more prompts.")
        st.stop()
    wait_for_item(annotator_id, options)
    st.stop()

shown_item(item)
conversation = is_conversation(item.prompt)
has_guide = settings["guidelines"].strip() or conversation
work, guide = st.columns([3, 1]) if has_guide else (st.container(), None)
if guide is not None:
    with guide.container(border=True):
        st.markdown("**Guidelines**")
        if conversation:
            st.markdown(LAST_TURN_NOTE)
        if settings["guidelines"].strip():
            show_text(settings["guidelines"])
with work:
    st.subheader("Conversation" if conversation else "Prompt")
    show_prompt(item.prompt)
    ranking_form(item, settings)
