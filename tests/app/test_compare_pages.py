"""Playground, blind comparisons (create, vote, results) and the reward-model check page, over tiny models."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from app.models import OTHER
from core.generation import Sample
from data import compare, users
from data.annotation import add_batch, claim_next_item, ensure_annotator, submit_ranking
from data.prompts import add_prompts
from data.registry import record_model
from rm.config import RewardConfig
from rm.synthetic import synthetic_rankings
from rm.train import train_reward_model
from tests.app.conftest import APP_MAIN


def choose_path(at, key: str, path) -> None:
    """Pick 'Other' in a model picker, then type the folder into the text box it opens."""
    at.selectbox(key=key).set_value(OTHER).run()
    at.text_input(key=f"{key}_path").input(str(path)).run()


def test_playground_shows_two_scored_answers_and_adds_a_blind_comparison(studio, tiny_model_dir, tiny_reward_dir):
    record_model(studio.store, "policy", "tiny-policy", str(tiny_model_dir))
    record_model(studio.store, "reward", "tiny-rm", str(tiny_reward_dir))
    at = studio.open("playground")
    at.text_area(key="playground_prompt").input("Name a colour.")
    at.selectbox(key="playground_model_a").set_value("tiny-policy")
    choose_path(at, "playground_model_b", tiny_model_dir)
    at.selectbox(key="playground_reward").set_value("tiny-rm")
    at.number_input(key="playground_tokens").set_value(6)
    studio.click(at, "Generate")

    headers = [m.value for m in at.markdown if m.value in ("**tiny-policy**", f"**{tiny_model_dir}**")]
    assert headers == ["**tiny-policy**", f"**{tiny_model_dir}**"]
    rewards = [m for m in at.metric if m.label == "Reward (tiny-rm)"]
    assert len(rewards) == 2 and all(float(m.value) == float(m.value) for m in rewards)  # numbers, not NaN
    studio.click(at, "Add to blind comparison")
    assert at.success
    [(prompt, model_a, model_b)] = studio.store.query("SELECT prompt, model_a, model_b FROM comparisons")
    assert (prompt, model_a, model_b) == ("Name a colour.", "tiny-policy", str(tiny_model_dir))


def test_a_comparison_set_is_generated_voted_on_blind_and_summarised(studio, tiny_model_dir):
    add_prompts(studio.store, ["Say hi.", "Count to three.", "Name a fruit."], source="test")
    record_model(studio.store, "policy", "tiny-policy", str(tiny_model_dir))
    at = studio.open("compare_results")
    at.selectbox(key="comparisons_model_a").set_value("tiny-policy")
    choose_path(at, "comparisons_model_b", tiny_model_dir)
    at.number_input(key="comparisons_count").set_value(2)
    at.number_input(key="comparisons_tokens").set_value(4)
    studio.click(at, "Create comparison set")
    assert "Added 2 blind comparisons" in at.success[0].value
    assert studio.store.query("SELECT count(DISTINCT prompt), count(*) FROM comparisons")[0] == (2, 2)

    at = studio.open("compare")
    assert not any("tiny-policy" in m.value or str(tiny_model_dir) in m.value for m in at.markdown)  # blind
    studio.click(at, "A is better")
    studio.click(at, "Tie")
    assert any("No comparisons wait" in info.value for info in at.info)
    votes = studio.store.query("SELECT v.vote, c.a_on_left FROM votes v JOIN comparisons c ON c.id = v.comparison_id")
    first_vote, a_on_left = votes[0]
    assert first_vote == ("a" if a_on_left else "b") and votes[1][0] == "tie"  # 'left' translated to its model

    at = studio.open("compare_results")
    [row] = at.dataframe[0].value.to_dict("records")
    assert (row["votes"], row["ties_or_both_bad"], row["a_wins"] + row["b_wins"]) == (2, 1, 1)
    # pairs are named in sorted order: a folder path sorts before "tiny-policy"
    tiny_policy_won = first_vote == "a"
    assert row["a_win_rate"] == pytest.approx(0.25 if tiny_policy_won else 0.75)
    assert row["ci_low"] < row["a_win_rate"] < row["ci_high"]
    assert not any(s.value == "Leaderboard" for s in at.subheader)  # two models: no leaderboard


def test_three_models_get_a_bradley_terry_leaderboard(studio):
    rows = [
        ("p1", "strong", "s", "middle", "m"),
        ("p2", "middle", "m", "weak", "w"),
        ("p3", "strong", "s", "weak", "w"),
    ]
    ids = compare.add_comparisons(studio.store, rows)
    voter = ensure_annotator(studio.store, "voter")
    for comparison_id in ids:  # always vote for model_a (the stronger one), wherever it was shown
        (a_on_left,) = studio.store.query("SELECT a_on_left FROM comparisons WHERE id = ?", [comparison_id])[0]
        compare.record_vote(studio.store, comparison_id, voter, "left" if a_on_left else "right")
    at = studio.open("compare_results")
    assert any(s.value == "Leaderboard" for s in at.subheader)
    board = at.dataframe[1].value
    assert list(board["model"]) == ["strong", "middle", "weak"]


def rank_in_store(store, rankings) -> None:
    """Store each synthetic ranking as a prompt, a batch of its responses and one person's ranking of them."""
    annotator = ensure_annotator(store, "person")
    for ranking in rankings:
        add_prompts(store, [ranking.prompt], source="synthetic")
        (prompt_id,) = store.query("SELECT id FROM prompts WHERE text = ?", [ranking.prompt])[0]
        samples = [Sample(text, "eos", len(text.split())) for text in ranking.responses]
        batch_id = add_batch(store, prompt_id, "synthetic", {}, samples)
        item = claim_next_item(store, annotator)
        groups = [[rid for rid, g in zip(item.response_ids, ranking.tie_groups, strict=True) if g == rank]
                  for rank in sorted(set(ranking.tie_groups))]  # fmt: skip
        submit_ranking(store, annotator, batch_id, groups)


def test_reward_model_check_scores_the_held_out_rankings(studio, tiny_model_dir, tmp_path):
    rank_in_store(studio.store, synthetic_rankings(24, k=3, seed=2))
    config = RewardConfig(
        backbone=str(tiny_model_dir), epochs=1, lora_rank=0, learning_rate=1e-3, max_length=96,
        validation_fraction=0.25, output_dir=str(tmp_path / "rm-check-run"),
    )  # fmt: skip
    result = train_reward_model(config, studio.store)
    validation_ids = json.loads((result.run_dir / "data.json").read_text())["validation_ranking_ids"]

    at = studio.open("rm_check")
    assert at.selectbox(key="rm_check_model").value == "rm-check-run"  # the recorded run is offered
    studio.click(at, "Check")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Held-out rankings"] == str(len(validation_ids))
    # training evaluated the same held-out rankings with its own code: the page must agree with it
    assert metrics["Agreement with people"] == f"{result.metrics['val/accuracy']:.0%}"
    assert any(c.value.startswith("95% interval ") for c in at.caption)
    pairs = 3 * len(validation_ids)  # K=3, no ties
    assert any(c.value == f"{pairs} untied pairs" for c in at.caption)
    assert at.warning[0].value.startswith(f"Only {pairs} pairs from {len(validation_ids)} rankings: too few")
    assert any(f"Left out {24 - len(validation_ids)} rankings" in c.value for c in at.caption)
    chart = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert [layer["mark"]["type"] for layer in chart["layer"]] == ["circle", "line"]  # reward vs length, trend
    assert "color" not in chart["layer"][1].get("encoding", {})  # the trend adds no "undefined" legend entry


def test_a_signed_in_annotator_votes_as_themselves_but_cannot_open_the_results(studio):
    users.add_user(studio.store, "bob", "annotator", "battery staple")
    compare.add_comparisons(studio.store, [("Say hi.", "m1", "hi", "m2", "hello")])
    at = AppTest.from_file(APP_MAIN, default_timeout=30).run()
    at.text_input[0].input("bob")
    at.text_input[1].input("battery staple")
    at.button[0].click().run()
    at.switch_page("views/compare.py").run()
    studio.click(at, "Both bad")
    assert studio.store.query("SELECT a.name, v.vote FROM votes v JOIN annotators a ON a.id = v.annotator_id") == [
        ("bob", "both_bad")
    ]
    with pytest.raises(ValueError, match="Known pages"):
        at.switch_page("views/compare_results.py")


def test_the_pages_open_on_an_empty_database_and_say_what_is_missing(studio):
    assert any("No comparisons yet. An admin creates them" in i.value for i in studio.open("compare").info)
    results = studio.open("compare_results")
    assert any("No prompts yet" in i.value for i in results.info) and any(
        "No votes yet" in i.value for i in results.info
    )
    at = studio.open("rm_check")  # no reward model recorded: only a typed path is possible
    studio.click(at, "Check")
    assert "no model chosen" in at.error[0].value
    at = studio.open("playground")
    studio.click(at, "Generate")
    assert at.error[0].value == "Write a prompt first."
