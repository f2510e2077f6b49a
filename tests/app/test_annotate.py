"""Annotate page: ranks become tie groups in DuckDB, skip and flag store their status, bad input writes nothing."""

from data import annotation
from data.settings import save_settings


def set_ranks(at, batch_id: int, ranks: dict[int, int]) -> None:
    for response_id, rank in ranks.items():
        at.radio(key=f"annotate_rank_{batch_id}_{response_id}").set_value(rank)


def test_ranking_is_stored_best_group_first(studio):
    batch_id, (a, b, c) = studio.add_item("Name a colour.", ["Red.", "Blue, **the sky**.", "Seven."])
    at = studio.open()
    assert [m.value for m in at.markdown if m.value in ("Red.", "Blue, **the sky**.", "Seven.")] == [
        "Red.",
        "Blue, **the sky**.",
        "Seven.",
    ]
    set_ranks(at, batch_id, {a: 2, b: 1, c: 3})
    studio.click(at, "Submit ranking")

    [(stored_batch, status, ranking, comment, seconds, name)] = studio.rankings()
    assert (stored_batch, status, ranking, comment, name) == (batch_id, "ranked", [[b], [a], [c]], None, "local")
    assert seconds >= 0
    assert any("every prompt" in info.value for info in at.info)  # the only item is done


def test_equal_ranks_are_ties_and_the_comment_is_kept(studio):
    batch_id, (a, b, c, d) = studio.add_item("Say hi.", ["Hi!", "Hello!", "Bye.", "..."])
    at = studio.open()
    set_ranks(at, batch_id, {a: 1, b: 1, c: 2, d: 3})
    at.text_input(key=f"annotate_comment_{batch_id}").set_value("  a and b are both fine  ")
    studio.click(at, "Submit ranking")
    [(_, status, ranking, comment, _, _)] = studio.rankings()
    assert (status, ranking, comment) == ("ranked", [[a, b], [c], [d]], "a and b are both fine")


def test_skip_and_flag_store_their_status_and_move_on(studio):
    first, _ = studio.add_item("First prompt", ["x", "y"])
    second, _ = studio.add_item("Second prompt", ["p", "q"])
    at = studio.open()
    studio.click(at, "Skip")
    assert at.radio(key=f"annotate_rank_{second}_{_[0]}") is not None  # the next item is on screen
    at.text_input(key=f"annotate_comment_{second}").set_value("both are gibberish")
    studio.click(at, "Flag as bad")
    stored = [(batch, status, ranking, comment) for batch, status, ranking, comment, _, _ in studio.rankings()]
    assert stored == [(first, "skipped", [], None), (second, "flagged", [], "both are gibberish")]


def test_a_missing_rank_or_an_all_tie_is_refused_and_writes_nothing(studio):
    batch_id, (a, b, c) = studio.add_item("Pick one.", ["one", "two", "three"])
    at = studio.open()
    set_ranks(at, batch_id, {a: 1, b: 2})
    studio.click(at, "Submit ranking")
    assert any("missing: C" in error.value for error in at.error)

    set_ranks(at, batch_id, {a: 1, b: 1, c: 1})
    studio.click(at, "Submit ranking")
    assert any("all responses are tied" in error.value for error in at.error)
    assert studio.rankings() == []

    set_ranks(at, batch_id, {c: 1})  # the form kept the other ranks after the error
    at.radio(key=f"annotate_rank_{batch_id}_{a}").set_value(2)
    studio.click(at, "Submit ranking")
    assert [ranking for _, _, ranking, _, _, _ in studio.rankings()] == [[[b, c], [a]]]


def test_progress_counts_this_annotator_and_all_prompts(studio):
    studio.add_item("One", ["x", "y"])
    studio.add_item("Two", ["p", "q"])
    at = studio.open()
    at.sidebar.text_input(key="annotate_annotator").set_value("alice")
    at.run()  # "local" holds the first item it was shown, so alice gets the other one
    for rank, radio in enumerate(at.radio, start=1):
        radio.set_value(rank)
    studio.click(at, "Submit ranking")
    assert at.metric[0].value == "1"
    assert "1 of 2 prompts ranked" in at.get("progress")[0].proto.text
    alice = annotation.ensure_annotator(studio.store, "alice")
    assert annotation.progress(studio.store, alice)["mine"] == 1


def test_model_output_is_never_rendered_as_html(studio):
    studio.add_item("<b>prompt</b>", ["<script>alert(1)</script> **fine**", "<img src=x onerror=alert(1)>"])
    at = studio.open()
    assert any("<script>" in m.value for m in at.markdown)
    assert not [m.value for m in at.markdown if m.allow_html]


def test_without_items_it_says_sampling_is_under_way(studio):
    from data.prompts import add_prompts

    add_prompts(studio.store, ["Waiting for a sample"], source="test")
    at = studio.open()
    [box] = [info.value for info in at.info if "refreshes by itself" in info.value]
    assert box.startswith(("Loading the generator model", "Sampling ", "Waiting for the next prompt")), box
    assert not at.radio


def test_the_background_sampler_fills_the_queue_with_the_configured_model(studio, tiny_model_dir):
    import time

    from data.prompts import add_prompts

    add_prompts(studio.store, ["Count to three."], source="test")
    save_settings(studio.store, {"ready_per_annotator": 1, "k": 2, "max_new_tokens": 4})
    studio.open()  # starts the app's sampler
    for _ in range(300):
        if annotation.open_batch_count(studio.store):
            break
        time.sleep(0.2)
    at = studio.open()
    assert len(at.radio) == 2
    [(model,)] = studio.store.query("SELECT DISTINCT model FROM responses")
    assert model == str(tiny_model_dir)


def test_a_submit_on_an_item_lost_meanwhile_is_refused_with_a_message(studio):
    """The claim went stale and someone else took the item: the press gets an answer instead of vanishing."""
    batch_id, (a, b) = studio.add_item("Old item", ["x", "y"])
    studio.add_item("Next item", ["p", "q"])
    at = studio.open()
    studio.store.write(lambda c: c.execute("UPDATE claims SET claimed_at = claimed_at - INTERVAL 40 MINUTE"))
    other = annotation.ensure_annotator(studio.store, "someone else")
    assert annotation.claim_next_item(studio.store, other).batch_id == batch_id
    set_ranks(at, batch_id, {a: 1, b: 2})
    studio.click(at, "Submit ranking")
    assert any("handed to another annotator" in error.value for error in at.error)
    assert studio.rankings() == []
    assert any(m.value == "Next item" for m in at.markdown)  # and the page moved on to an item it can rank
