"""Annotate page: an annotator edits a response or writes their own answer; it is stored and ranked with the
others, counted on the Data page, and an admin can turn it off."""

from data.demonstrations import demonstration_counts, human_answers
from data.settings import load_settings, save_settings
from tests.app.test_annotate import set_ranks


def test_an_edited_response_is_stored_above_the_one_it_came_from_and_counted(studio):
    batch_id, (a, b, c) = studio.add_item("Name a colour.", ["Red.", "Blue.", "Sevn."])
    at = studio.open()
    set_ranks(at, batch_id, {a: 1, b: 2, c: 3})
    edit = at.text_area(key=f"annotate_edit_{batch_id}_{c}")
    assert edit.value == "Sevn."  # the box starts from the response
    edit.set_value("Green.")
    studio.click(at, "Submit ranking")

    [answer] = human_answers(studio.store)
    assert (answer["text"], answer["parent_response_id"], answer["annotator"]) == ("Green.", c, "local")
    [(_, status, ranking, _, _, _)] = studio.rankings()
    assert (status, ranking) == ("ranked", [[a], [b], [answer["response_id"]], [c]])

    data = studio.open("data")
    assert {m.label: m.value for m in data.metric}["Demonstrations"] == "1"


def test_a_written_answer_ranks_first_and_an_unchanged_edit_box_is_no_answer(studio):
    batch_id, (a, b) = studio.add_item("Say hi.", ["Hi!", "Hello!"])
    at = studio.open()
    set_ranks(at, batch_id, {a: 2, b: 1})
    at.text_area(key=f"annotate_answer_{batch_id}").set_value("  Hello there, friend!  ")
    studio.click(at, "Submit ranking")

    [answer] = human_answers(studio.store)
    assert (answer["text"], answer["parent_response_id"]) == ("Hello there, friend!", None)
    [(_, _, ranking, _, _, _)] = studio.rankings()
    assert ranking == [[answer["response_id"]], [b], [a]]


def test_two_answers_at_once_are_refused_and_nothing_is_written(studio):
    batch_id, (a, b) = studio.add_item("Pick.", ["one", "two"])
    at = studio.open()
    set_ranks(at, batch_id, {a: 1, b: 2})
    at.text_area(key=f"annotate_edit_{batch_id}_{a}").set_value("one, edited")
    at.text_area(key=f"annotate_answer_{batch_id}").set_value("three")
    studio.click(at, "Submit ranking")
    assert any("one answer of your own" in error.value for error in at.error)
    assert studio.rankings() == [] and demonstration_counts(studio.store)["demonstrations"] == 0


def test_a_skip_stores_no_answer(studio):
    batch_id, (a, _) = studio.add_item("Skip me.", ["x", "y"])
    at = studio.open()
    at.text_area(key=f"annotate_edit_{batch_id}_{a}").set_value("x, but better")
    studio.click(at, "Skip")
    [(_, status, _, _, _, _)] = studio.rankings()
    assert status == "skipped" and demonstration_counts(studio.store)["demonstrations"] == 0


def test_admins_can_turn_answers_off(studio):
    batch_id, _ = studio.add_item("No answers here.", ["x", "y"])
    save_settings(studio.store, {"demonstrations": False})
    at = studio.open()
    keys = [area.key for area in at.text_area]
    assert not [key for key in keys if key.startswith(("annotate_edit_", "annotate_answer_"))]


def test_the_settings_page_turns_answers_off(studio):
    at = studio.open("settings")
    box = next(box for box in at.checkbox if box.label.startswith("Annotators may edit"))
    assert box.value is True
    box.uncheck()
    studio.click(at, "Save")
    assert load_settings(studio.store)["demonstrations"] is False
