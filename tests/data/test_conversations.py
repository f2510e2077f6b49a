"""Conversations in storage: the migration from single-turn databases, import of every conversational format,
refusal of malformed files with nothing stored, continued conversations, and the TRL conversational export."""

import json

import datasets
import duckdb
import pytest

from core.generation import Sample
from data import annotation
from data.continuation import parent_of
from data.conversations import pair_of_row, parse_hh
from data.export import export, pairs_dataset, rankings_dataset
from data.importers import PromptFileError, import_prompts, read_prompts
from data.migrations import all_migrations
from data.prompts import add_prompts, all_prompts, get_prompt, prompt_count
from data.store import Store

HH = "\n\nHuman: What's 2+2?\n\nAssistant: 4.\n\nHuman: And times 3?\n\nAssistant:"
HH_MESSAGES = [
    {"role": "user", "content": "What's 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And times 3?"},
]
SYSTEM = {"role": "system", "content": "Be brief."}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_an_hh_transcript_imports_to_exactly_its_messages(store, tmp_path):
    assert parse_hh(HH) == HH_MESSAGES
    report = import_prompts(store, write_jsonl(tmp_path / "hh.jsonl", [{"prompt": HH}, {"text": "plain"}]))
    assert (report.added, report.skipped_duplicates) == (2, 0)
    assert [prompt for _, prompt in all_prompts(store)] == [HH_MESSAGES, "plain"]


def test_every_conversational_prompt_format_imports(store, tmp_path):
    rows = [
        {"messages": [SYSTEM, *HH_MESSAGES]},  # OpenAI / TRL
        {"prompt": HH_MESSAGES},  # a list-valued prompt
        {"prompt": "Name a color.", "chosen": [{"role": "user", "content": "Name a color."},
         {"role": "assistant", "content": "Blue."}], "rejected": [{"role": "user", "content": "Name a color."},
         {"role": "assistant", "content": "No."}], "messages": []},  # UltraFeedback: the prompt is the shared start
        {"chosen": HH + " 12.", "rejected": HH + " 7."},  # HH pairs row: the shared start
        {"messages": [{"role": "user", "content": "Just one turn."}]},  # one message: stored as plain text
    ]  # fmt: skip
    import_prompts(store, write_jsonl(tmp_path / "mixed.jsonl", rows))
    assert [prompt for _, prompt in all_prompts(store)] == [
        [SYSTEM, *HH_MESSAGES],
        HH_MESSAGES,
        "Name a color.",
        "Just one turn.",
    ]  # the HH row is the same conversation as the second row: a duplicate
    table = tmp_path / "conversations.parquet"
    datasets.Dataset.from_list([{"messages": HH_MESSAGES}, {"messages": [SYSTEM, HH_MESSAGES[0]]}]).to_parquet(table)
    assert read_prompts(table) == [HH_MESSAGES, [SYSTEM, HH_MESSAGES[0]]]
    csv = tmp_path / "messages.csv"
    csv.write_text('messages\n"' + json.dumps(HH_MESSAGES).replace('"', '""') + '"\n')
    assert read_prompts(csv) == [HH_MESSAGES]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}], "message 1 is 'assistant'"),
        ([{"role": "user", "content": ""}], "message 1 \\(user\\) has empty content"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "ends with an assistant turn"),
        ([{"role": "wizard", "content": "a"}], "unknown role 'wizard'"),
    ],
)
def test_a_malformed_conversation_refuses_the_file_naming_the_row(store, tmp_path, bad, reason):
    add_prompts(store, ["already here"], "test")
    before = store.query("SELECT * FROM prompts ORDER BY id")
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": HH_MESSAGES}, {"messages": bad}])
    with pytest.raises(PromptFileError, match=f"bad.jsonl, line 2: malformed conversation: .*{reason}"):
        import_prompts(store, path)
    assert store.query("SELECT * FROM prompts ORDER BY id") == before
    assert store.query("SELECT count(*) FROM prompt_messages") == [(0,)]


def test_duplicates_are_whole_conversations(store):
    other_answer = [HH_MESSAGES[0], {"role": "assistant", "content": "Four."}, HH_MESSAGES[2]]
    report = add_prompts(store, [HH_MESSAGES, HH_MESSAGES, other_answer, "What's 2+2?", HH_MESSAGES[2]["content"]], "t")
    assert (report.added, report.skipped_duplicates) == (4, 1)
    assert add_prompts(store, [[{"role": "user", "content": " What's 2+2? "}]], "t").added == 0  # the plain one


def single_turn_database(path):
    """A database as the release before conversations left it: migrations 1-6, a prompt, a batch, a ranking."""
    connection = duckdb.connect(str(path))
    connection.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    for migration in all_migrations():
        if migration.VERSION <= 6:
            migration.up(connection)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", [migration.VERSION])
    connection.execute("INSERT INTO prompts (text, text_hash, source) VALUES ('Say hi.', 'old-hash', 'old')")
    connection.execute("INSERT INTO annotators (name) VALUES ('alice')")
    connection.execute("INSERT INTO batches (prompt_id, model, params) VALUES (1, 'm', '{}')")
    for position, text in enumerate(["Hi!", "No."]):
        connection.execute(
            "INSERT INTO responses (batch_id, prompt_id, position, text, model, params, finish_reason, num_tokens) "
            "VALUES (1, 1, ?, ?, 'm', '{}', 'eos', 2)",
            [position, text],
        )
    connection.execute("INSERT INTO rankings (batch_id, prompt_id, annotator_id, status, ranking) "
                       "VALUES (1, 1, 1, 'ranked', [[1], [2]])")  # fmt: skip
    connection.close()


def test_a_single_turn_database_migrates_and_still_works(tmp_path):
    single_turn_database(tmp_path / "old.duckdb")
    store = Store(tmp_path / "old.duckdb")
    try:
        assert store.schema_version() == all_migrations()[-1].VERSION
        assert store.query("SELECT id, text, text_hash FROM prompts") == [(1, "Say hi.", "old-hash")]  # untouched
        assert get_prompt(store, 1) == "Say hi."
        assert pairs_dataset(store).to_list() == [
            {"ranking_id": 1, "prompt_id": 1, "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}
        ]  # single-turn data still exports as plain strings
        add_prompts(store, [HH_MESSAGES], "new")
        assert prompt_count(store) == 2 and get_prompt(store, 2) == HH_MESSAGES
    finally:
        store.close()


def ranked_conversation(store, follow_up=None):
    """A conversation with one batch of two responses, ranked by alice (the second best); return (ranking, ids)."""
    add_prompts(store, [[SYSTEM, *HH_MESSAGES]], "test")
    (prompt_id,) = store.query("SELECT max(id) FROM prompts")[0]
    samples = [Sample("It is 7.", "eos", 3), Sample("It is 12.", "eos", 3)]
    batch = annotation.add_batch(store, prompt_id, "tiny", {"k": 2}, samples)
    alice = annotation.ensure_annotator(store, "alice")
    item = annotation.claim_next_item(store, alice)
    assert item.prompt == [SYSTEM, *HH_MESSAGES]
    worse, best = item.response_ids
    ranking_id = annotation.submit_ranking(store, alice, batch, [[best], [worse]], follow_up=follow_up)
    return ranking_id, prompt_id, best


def test_a_follow_up_becomes_a_new_prompt_and_keeps_the_tree(store):
    ranking_id, parent_id, best = ranked_conversation(store, follow_up="Now minus 5?")
    (new_id,) = store.query("SELECT max(id) FROM prompts")[0]
    assert get_prompt(store, new_id) == [
        SYSTEM, *HH_MESSAGES, {"role": "assistant", "content": "It is 12."}, {"role": "user", "content": "Now minus 5?"}
    ]  # fmt: skip
    assert parent_of(store, new_id) == (parent_id, best, ranking_id)
    assert annotation.prompts_to_sample(store, 10)[0][0] == new_id  # no ranking yet: sampled first


def test_a_follow_up_needs_one_best_response(store):
    add_prompts(store, ["Q"], "t")
    batch = annotation.add_batch(store, 1, "tiny", {"k": 3}, [Sample(t, "eos", 1) for t in "abc"])
    alice = annotation.ensure_annotator(store, "alice")
    a, b, c = annotation.claim_next_item(store, alice).response_ids
    with pytest.raises(annotation.RankingError, match="break the tie for first place"):
        annotation.submit_ranking(store, alice, batch, [[a, b], [c]], follow_up="more?")
    assert annotation.counts(store)["rankings"] == 0 and prompt_count(store) == 1


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_the_export_is_trl_conversational_and_reimports_to_the_same_conversations(store, tmp_path, fmt):
    ranked_conversation(store, follow_up="Now minus 5?")
    pairs = pairs_dataset(store).to_list()
    assert pairs == [{
        "ranking_id": 1, "prompt_id": 1, "prompt": [SYSTEM, *HH_MESSAGES],
        "chosen": [{"role": "assistant", "content": "It is 12."}],
        "rejected": [{"role": "assistant", "content": "It is 7."}],
    }]  # fmt: skip
    assert rankings_dataset(store)[0]["prompt"] == [SYSTEM, *HH_MESSAGES]
    export(store, tmp_path / f"pairs.{fmt}", "pairs")
    loaded = datasets.load_dataset(fmt if fmt == "parquet" else "json", data_files=str(tmp_path / f"pairs.{fmt}"))
    assert pair_of_row(loaded["train"][0]) == ([SYSTEM, *HH_MESSAGES], "It is 12.", "It is 7.")
    fresh = Store(tmp_path / "fresh.duckdb")
    try:
        import_prompts(fresh, tmp_path / f"pairs.{fmt}")
        assert [prompt for _, prompt in all_prompts(fresh)] == [[SYSTEM, *HH_MESSAGES]]
    finally:
        fresh.close()


def test_blind_comparisons_keep_the_conversation(store):
    from data import compare

    add_prompts(store, [HH_MESSAGES, "plain"], "t")
    assert sorted(map(str, compare.sample_prompts(store, 5, seed=0))) == sorted(map(str, [HH_MESSAGES, "plain"]))
    compare.add_comparison(store, HH_MESSAGES, "a", "12.", "b", "7.")
    alice = annotation.ensure_annotator(store, "alice")
    shown = compare.next_comparison(store, alice)
    assert shown.prompt == HH_MESSAGES and {shown.left, shown.right} == {"12.", "7."}
