"""Export: rankings and pairs round-trip through Parquet and JSONL, read back with `datasets`."""

import datasets
import pyarrow.parquet as pq
import pytest

from core.generation import Sample
from data import annotation
from data.export import export, pairs_dataset, rankings_dataset
from data.prompts import add_prompts

# prompt -> (K response texts, ranking as tie groups of response positions, best first; None = skipped)
RANKED = {
    "strict three": (["a1", "a2", "a3"], [[2], [0], [1]]),
    "four with a tie": (["b1", "b2", "b3", "b4"], [[0], [1, 3], [2]]),
    "two tied pairs": (["c1", "c2", "c3", "c4"], [[3, 0], [1, 2]]),
    "plain two": (["d1", "d2"], [[1], [0]]),
    "skipped": (["e1", "e2"], None),
}
# Written out by hand: each better group beats each worse one, tied responses make no pair.
EXPECTED_PAIRS = {
    ("strict three", "a3", "a1"), ("strict three", "a3", "a2"), ("strict three", "a1", "a2"),
    ("four with a tie", "b1", "b2"), ("four with a tie", "b1", "b4"), ("four with a tie", "b1", "b3"),
    ("four with a tie", "b2", "b3"), ("four with a tie", "b4", "b3"),
    ("two tied pairs", "c4", "c2"), ("two tied pairs", "c4", "c3"),
    ("two tied pairs", "c1", "c2"), ("two tied pairs", "c1", "c3"),
    ("plain two", "d2", "d1"),
}  # fmt: skip


@pytest.fixture
def ranked_store(store):
    add_prompts(store, list(RANKED), "test")
    annotator = annotation.ensure_annotator(store, "alice")
    for prompt_id, (texts, positions) in enumerate(RANKED.values(), start=1):
        samples = [Sample(text, "eos", 2) for text in texts]
        batch = annotation.add_batch(store, prompt_id, "tiny", {"k": len(texts)}, samples)
        ids = annotation.claim_next_item(store, annotator).response_ids
        if positions is None:
            annotation.submit_ranking(store, annotator, batch, [], status="skipped")
        else:
            annotation.submit_ranking(store, annotator, batch, [[ids[p] for p in group] for group in positions])
    return store


def tied_pair_count(groups) -> int:
    return sum(len(group) * (len(group) - 1) // 2 for group in groups)


def test_pair_count_is_all_pairs_minus_tied_ones(ranked_store):
    expected = sum(
        len(texts) * (len(texts) - 1) // 2 - tied_pair_count(groups)
        for texts, groups in RANKED.values()
        if groups is not None
    )
    pairs = pairs_dataset(ranked_store)
    assert len(pairs) == expected == len(EXPECTED_PAIRS) == 13
    assert {(row["prompt"], row["chosen"], row["rejected"]) for row in pairs} == EXPECTED_PAIRS
    assert all(row["chosen"] != row["rejected"] for row in pairs)


def read_back(path, fmt: str, cache_dir) -> datasets.Dataset:
    builder = "json" if fmt == "jsonl" else "parquet"
    return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache_dir))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_pairs_round_trip(ranked_store, tmp_path, fmt):
    path = tmp_path / "out" / f"pairs.{fmt}"
    assert export(ranked_store, path, kind="pairs") == 13
    assert not list(path.parent.glob("*.part"))

    loaded = read_back(path, fmt, tmp_path / "cache")
    assert loaded.column_names == ["ranking_id", "prompt_id", "prompt", "chosen", "rejected"]
    assert loaded.to_list() == pairs_dataset(ranked_store).to_list()
    assert {(row["prompt"], row["chosen"], row["rejected"]) for row in loaded} == EXPECTED_PAIRS


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_rankings_round_trip_keeps_tie_groups(ranked_store, tmp_path, fmt):
    path = tmp_path / f"rankings.{fmt}"
    assert export(ranked_store, path, kind="rankings") == 4  # the skipped item is not a ranking

    loaded = read_back(path, fmt, tmp_path / "cache")
    assert loaded.to_list() == rankings_dataset(ranked_store).to_list()
    expected = {
        prompt: [[texts[p] for p in group] for group in groups]
        for prompt, (texts, groups) in RANKED.items()
        if groups is not None
    }
    assert {row["prompt"]: row["ranked_responses"] for row in loaded} == expected
    assert {row["annotator"] for row in loaded} == {"alice"}
    assert {row["model"] for row in loaded} == {"tiny"}


def test_export_of_an_empty_store_writes_an_empty_table_with_its_columns(store, tmp_path):
    path = tmp_path / "pairs.parquet"
    assert export(store, path) == 0
    loaded = pq.read_table(path)  # `datasets` refuses to load a split with no rows
    assert loaded.num_rows == 0
    assert loaded.column_names == ["ranking_id", "prompt_id", "prompt", "chosen", "rejected"]
    assert len(rankings_dataset(store)) == 0


def test_unknown_kind_or_format_is_refused_and_writes_nothing(ranked_store, tmp_path):
    folder = tmp_path / "exports"
    with pytest.raises(ValueError, match="unknown export format 'csv'"):
        export(ranked_store, folder / "pairs.csv")
    with pytest.raises(ValueError, match="unknown export kind 'triples'"):
        export(ranked_store, folder / "pairs.jsonl", kind="triples")
    assert not folder.exists()
