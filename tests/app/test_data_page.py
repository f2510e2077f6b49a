"""Data page: counts, rankings per annotator, coverage chart and the six export buttons."""

import json

from data import annotation


def test_data_page_summarises_rankings(studio):
    batch_id, (a, b) = studio.add_item("Compare", ["good", "bad"])
    studio.add_item("Unranked", ["x", "y"])
    bob = annotation.ensure_annotator(studio.store, "bob")
    annotation.claim_next_item(studio.store, bob)
    annotation.submit_ranking(studio.store, bob, batch_id, [[a], [b]], seconds_spent=4.0)

    at = studio.open("data")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        "Prompts": "2", "Batches": "2", "Responses": "4", "Rankings": "1", "Annotators": "2", "Demonstrations": "0"
    }  # fmt: skip
    per_annotator = at.dataframe[0].value
    assert per_annotator[["annotator", "ranked", "skipped", "flagged"]].values.tolist() == [["bob", 1, 0, 0]]
    assert len(at.get("vega_lite_chart")) == 1
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert spec["encoding"]["x"]["axis"]["labelAngle"] == 0  # counts read level, not rotated 90 degrees
    labels = sorted(button.label for button in at.get("download_button"))
    assert labels == [
        "SFT set as jsonl", "SFT set as parquet", "pairs as jsonl", "pairs as parquet", "prompts as jsonl",
        "prompts as parquet", "rankings as jsonl", "rankings as parquet",
    ]  # fmt: skip


def test_data_page_without_rankings_says_so(studio):
    at = studio.open("data")
    assert any("No rankings yet" in info.value for info in at.info)


def test_backup_button_writes_a_snapshot_while_the_app_runs(studio):
    studio.add_item("Backed up?", ["yes", "no"])
    at = studio.open("data")
    studio.click(at, "Back up now")
    [written] = list((studio.store.path.parent / "backups").glob("*.duckdb"))
    assert str(written) in at.success[0].value
    from data.store import Store

    copy = Store(written)
    assert copy.query("SELECT text FROM prompts") == [("Backed up?",)]
    copy.close()
