"""Annotate extras: guidelines, reward-model suggestions, next-item order and overlap; their settings; agreement."""

import math

import pytest

from data import annotation
from data.registry import record_model
from data.settings import load_settings, save_settings

SCORE = "Reward-model score"


def score_captions(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith(SCORE)]


def test_guidelines_are_shown_beside_the_item_as_escaped_markdown(studio):
    studio.add_item("Say hi.", ["Hi!", "Hello!"])
    save_settings(studio.store, {"guidelines": "**Prefer short answers.** <b>no html</b>"})
    at = studio.open()
    [guidelines] = [m for m in at.markdown if "Prefer short answers" in m.value]
    assert not guidelines.proto.allow_html
    assert any(m.value == "Say hi." for m in at.markdown)  # the item is on screen beside it


def test_no_guidelines_panel_when_none_are_written(studio):
    studio.add_item("Say hi.", ["Hi!", "Hello!"])
    assert not any(m.value == "**Guidelines**" for m in studio.open().markdown)


@pytest.fixture
def scored_item(studio):
    batch_id, ids = studio.add_item("Name a colour.", ["Red.", "Blue.", "Seven."])
    annotation.store_scores(studio.store, "rm-x", dict(zip(ids, [0.5, 1.25, -2.0], strict=True)))
    return batch_id, ids


@pytest.mark.parametrize("mode", ["off", "scores", "preorder"])
def test_suggestions_follow_the_setting(studio, scored_item, mode):
    batch_id, (red, blue, seven) = scored_item
    save_settings(studio.store, {"suggestion_model": "rm-x", "suggestions": mode})
    at = studio.open()
    ranks = [at.radio(key=f"annotate_rank_{batch_id}_{rid}").value for rid in (red, blue, seven)]
    if mode == "off":
        assert score_captions(at) == [] and ranks == [None, None, None]
    elif mode == "scores":
        assert score_captions(at) == [f"{SCORE}: +0.50", f"{SCORE}: +1.25", f"{SCORE}: -2.00"]
        assert ranks == [None, None, None]  # scores only: people still rank for themselves
    else:
        assert score_captions(at) == [] and ranks == [2, 1, 3]
        studio.click(at, "Submit ranking")  # the pre-filled ranks submit as they stand
        assert studio.rankings()[0][2] == [[blue], [red], [seven]]


def test_uncertain_first_hands_out_the_batch_the_reward_model_can_least_tell_apart(studio):
    _, clear = studio.add_item("Clear case", ["good", "bad"])  # older: 'fewest first' would hand this out first
    _, close = studio.add_item("Close call", ["this", "that"])
    annotation.store_scores(studio.store, "rm-x", {clear[0]: 3.0, clear[1]: -3.0, close[0]: 0.1, close[1]: 0.0})
    save_settings(studio.store, {"suggestion_model": "rm-x", "next_order": "uncertain"})
    at = studio.open()
    assert any(m.value == "Close call" for m in at.markdown)
    assert not any(m.value == "Clear case" for m in at.markdown)


def test_an_overlap_share_hands_a_ranked_item_to_a_second_annotator(studio):
    batch_id, (a, b) = studio.add_item("Shared prompt", ["one", "two"])
    save_settings(studio.store, {"overlap_share": 1.0})
    at = studio.open()
    at.radio(key=f"annotate_rank_{batch_id}_{a}").set_value(1)
    at.radio(key=f"annotate_rank_{batch_id}_{b}").set_value(2)
    studio.click(at, "Submit ranking")
    at.text_input(key="annotate_annotator").input("bob").run()
    assert at.radio(key=f"annotate_rank_{batch_id}_{a}") is not None  # bob gets the same item


def test_the_data_page_shows_kendall_tau_per_annotator_pair(studio):
    batch_id, (a, b, c) = studio.add_item("Rank these", ["x", "y", "z"])
    orders = {"alice": [[a], [b], [c]], "bob": [[c], [b], [a]]}
    for name, order in orders.items():
        annotator_id = annotation.ensure_annotator(studio.store, name)
        assert annotation.claim_next_item(studio.store, annotator_id, overlap_every=1).batch_id == batch_id
        annotation.submit_ranking(studio.store, annotator_id, batch_id, order)
    at = studio.open("data")
    assert next(m for m in at.metric if m.label == "Overall Kendall's tau").value == "-1.00"
    [row] = next(d for d in at.dataframe if "kendall_tau" in d.value.columns).value.to_dict("records")
    assert (row["annotators"], row["items"]) == ("alice · bob", 1) and math.isclose(row["kendall_tau"], -1.0)


def fill_annotation_settings(at, **values):
    keys = {"order": "Next item", "suggestions": "Reward-model suggestions"}
    for name, value in values.items():
        if name in keys:
            next(s for s in at.selectbox if s.label == keys[name]).set_value(value)
        elif name == "overlap":
            next(n for n in at.number_input if n.label == "Overlap share").set_value(value)
        elif name == "model":
            next(t for t in at.text_input if t.label == "Suggestion reward model").input(value)
        elif name == "guidelines":
            at.text_area(key="settings_guidelines").input(value)
    return at


def test_annotation_settings_are_saved(studio, tiny_model_dir):
    record_model(studio.store, "reward", "rm-tiny", str(tiny_model_dir))
    at = fill_annotation_settings(
        studio.open("settings"), order="uncertain", overlap=0.25, model="rm-tiny", suggestions="scores",
        guidelines="  Prefer **honest** answers.  ",
    )  # fmt: skip
    studio.click(at, "Save")
    assert at.success and not at.error
    saved = load_settings(studio.store)
    assert {k: saved[k] for k in ("next_order", "overlap_share", "suggestion_model", "suggestions", "guidelines")} == {
        "next_order": "uncertain",
        "overlap_share": 0.25,
        "suggestion_model": "rm-tiny",
        "suggestions": "scores",
        "guidelines": "Prefer **honest** answers.",
    }


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"suggestions": "preorder"}, "reward-model suggestions need a suggestion reward model"),
        ({"order": "uncertain"}, "'uncertain first' needs a suggestion reward model"),
        ({"overlap": 1.5}, "overlap share must be between 0 and 1, got 1.5"),
        ({"model": "/no/such/run", "suggestions": "scores"}, "does not exist"),
    ],
)
def test_unworkable_annotation_settings_are_refused_with_the_reason(studio, values, reason):
    at = studio.open("settings")
    before = load_settings(studio.store)
    studio.click(fill_annotation_settings(at, **values), "Save")
    assert reason in at.error[0].value
    assert load_settings(studio.store) == before
