"""Bootstrap pair files become K=2 rankings; the train/validation split never shares a prompt."""

import json

import datasets
import pytest

from data.tables import PairsFileError
from rm.data import read_pairs, read_rankings, split_rankings
from rm.synthetic import synthetic_rankings

ROWS = [
    {"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "No."},
    {"prompt": "Count to two.", "chosen": "1, 2", "rejected": "3"},
]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "folder"])
def test_pairs_files_become_k2_rankings(tmp_path, fmt):
    table = datasets.Dataset.from_list(ROWS)
    if fmt == "jsonl":
        source = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    elif fmt == "parquet":
        source = tmp_path / "pairs.parquet"
        table.to_parquet(str(source))
    else:
        source = tmp_path / "pairs"
        datasets.DatasetDict({"train": table}).save_to_disk(str(source))
    rankings = read_pairs(source)
    assert [(r.prompt, r.responses, r.tie_groups) for r in rankings] == [
        ("Say hi.", ["Hi there!", "No."], [0, 1]),
        ("Count to two.", ["1, 2", "3"], [0, 1]),
    ]
    assert rankings[0].num_comparisons == 1


def test_anthropic_hh_rows_split_at_the_last_assistant_turn(tmp_path):
    history = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a color."
    rows = [
        {"chosen": history + "\n\nAssistant: Blue.", "rejected": history + "\n\nAssistant: I won't."},
        {"chosen": "\n\nHuman: A\n\nAssistant: B", "rejected": "\n\nHuman: other\n\nAssistant: C"},  # skipped
    ]
    rankings = read_pairs(write_jsonl(tmp_path / "hh.jsonl", rows))
    assert len(rankings) == 1
    assert rankings[0].prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a color."},
    ]  # the shared start, as turns: never one user message holding "Human:" and "Assistant:"
    assert rankings[0].responses == ["Blue.", "I won't."]


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a color."},
]


def test_trl_conversational_and_ultrafeedback_pairs_become_rankings(tmp_path):
    rows = [
        {"prompt": CONVERSATION, "chosen": [{"role": "assistant", "content": "Blue."}],
         "rejected": [{"role": "assistant", "content": "No."}]},  # TRL conversational
    ]  # fmt: skip
    ultra = [
        {"prompt": "Name a color.", "chosen": [CONVERSATION[3], {"role": "assistant", "content": "Red."}],
         "rejected": [CONVERSATION[3], {"role": "assistant", "content": "Sky."}]},  # UltraFeedback
    ]  # fmt: skip
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "trl.parquet"))
    [trl] = read_pairs(tmp_path / "trl.parquet")
    assert (trl.prompt, trl.responses) == (CONVERSATION, ["Blue.", "No."])
    [uf] = read_pairs(write_jsonl(tmp_path / "uf.jsonl", ultra))
    assert (uf.prompt, uf.responses) == ("Name a color.", ["Red.", "Sky."])
    bad = [{"prompt": CONVERSATION[1:3], "chosen": "a", "rejected": "b"}]
    with pytest.raises(PairsFileError, match="row 0: .*ends with an assistant turn"):
        read_pairs(write_jsonl(tmp_path / "bad.jsonl", bad))
    listwise = [{"ranking_id": 1, "prompt_id": 7, "prompt": CONVERSATION, "ranked_responses": [["a"], ["b", "c"]]}]
    [ranking] = read_rankings(write_jsonl(tmp_path / "rankings.jsonl", listwise))
    assert (ranking.prompt, ranking.tie_groups) == (CONVERSATION, [0, 1, 1])


def test_a_bad_pairs_file_names_the_problem(tmp_path):
    with pytest.raises(PairsFileError, match="row 1: 'rejected' must be text"):
        read_pairs(write_jsonl(tmp_path / "a.jsonl", [ROWS[0], {"prompt": "p", "chosen": "c", "rejected": None}]))
    with pytest.raises(PairsFileError, match="expected columns 'chosen' and 'rejected'"):
        read_pairs(write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "answer": "a"}]))
    with pytest.raises(PairsFileError, match="not the HH format"):
        read_pairs(write_jsonl(tmp_path / "c.jsonl", [{"chosen": "plain", "rejected": "text"}]))
    with pytest.raises(PairsFileError, match="line 2: invalid JSON"):
        (tmp_path / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n{oops\n")
        read_pairs(tmp_path / "d.jsonl")
    with pytest.raises(PairsFileError, match="does not exist"):
        read_pairs(tmp_path / "missing.parquet")
    with pytest.raises(PairsFileError, match="unknown file type"):
        read_pairs(tmp_path / "pairs.csv")


def test_split_keeps_each_prompt_on_one_side():
    rankings = synthetic_rankings(20, k=3, seed=1) + synthetic_rankings(20, k=3, seed=1)  # every prompt twice
    train, validation = split_rankings(rankings, 0.25, seed=0)
    assert {r.prompt_key for r in train}.isdisjoint({r.prompt_key for r in validation})
    assert len({r.prompt_key for r in validation}) == 5 and len(train) + len(validation) == 40
    assert split_rankings(rankings, 0.25, seed=0) == (train, validation)  # seeded
    assert split_rankings(rankings, 0.0, seed=0) == (rankings, [])
    with pytest.raises(ValueError, match="cannot be split"):
        split_rankings(synthetic_rankings(1), 0.5, seed=0)
