"""Export rankings as a Hugging Face `datasets` table, listwise or expanded to prompt/chosen/rejected pairs, and
SFT sets (each ranking's best response, an annotator's own answer included) in TRL's `messages` format.

Single-turn data exports as plain strings (TRL's standard format). Once any prompt is a conversation, the whole
export is TRL's conversational format (a column holds one type): each prompt a list of messages, and in pairs
chosen/rejected one assistant message each. Every reader here imports an export back to the same conversations.
"""

from pathlib import Path

import datasets

from core.chat import conversation
from data.conversations import from_stored
from data.prompt_columns import export_prompts
from data.prompts import MESSAGES_JOIN
from data.store import Store

MESSAGE = datasets.Features({"role": datasets.Value("string"), "content": datasets.Value("string")})

FORMATS = ("parquet", "jsonl")
KINDS = ("rankings", "pairs", "sft", "prompts")  # prompts: each with its columns (answer, ...), as imported


def ranked_items(store: Store) -> list[dict]:
    """Return every ranking with its prompt and its responses as tie groups of texts, best group first."""
    rows = store.query(
        f"""
        SELECT k.id, k.prompt_id, p.text, pm.messages, k.ranking, a.name, k.created_at, b.model
        FROM rankings k JOIN prompts p ON p.id = k.prompt_id {MESSAGES_JOIN} JOIN annotators a ON a.id = k.annotator_id
        JOIN batches b ON b.id = k.batch_id
        WHERE k.status = 'ranked' ORDER BY k.id
        """
    )
    texts = dict(
        store.query("SELECT id, text FROM responses WHERE id IN (SELECT unnest(flatten(ranking)) FROM rankings)")
    )
    return [
        {
            "ranking_id": ranking_id,
            "prompt_id": prompt_id,
            "prompt": from_stored(text, messages),
            "ranked_responses": [[texts[i] for i in group] for group in groups],
            "ranked_response_ids": groups,
            "annotator": annotator,
            "model": model,
            "created_at": created_at.isoformat(),
        }
        for ranking_id, prompt_id, text, messages, groups, annotator, created_at, model in rows
    ]


def expand_to_pairs(item: dict) -> list[dict]:
    """Return the K·(K−1)/2 ordered pairs of one ranking, minus tied ones: each better group beats each worse."""
    pairs = []
    groups = item["ranked_responses"]
    for better_rank, better_group in enumerate(groups):
        for worse_group in groups[better_rank + 1 :]:
            for chosen in better_group:
                for rejected in worse_group:
                    pairs.append(
                        {
                            "ranking_id": item["ranking_id"],
                            "prompt_id": item["prompt_id"],
                            "prompt": item["prompt"],
                            "chosen": chosen,
                            "rejected": rejected,
                        }
                    )
    return pairs


def _table(rows: list[dict], features: datasets.Features) -> datasets.Dataset:
    """Return rows as a Dataset; column-wise, so that no rows still gives a table with its columns."""
    return datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def conversational(rows: list[dict]) -> bool:
    """Return whether any row's prompt is a conversation: then the export is in TRL's conversational format."""
    return any(not isinstance(row["prompt"], str) for row in rows)


def as_conversational_pair(pair: dict) -> dict:
    """Return a pair in TRL's conversational format: prompt as messages, chosen/rejected one assistant message each."""
    return pair | {
        "prompt": conversation(pair["prompt"]),
        "chosen": [{"role": "assistant", "content": pair["chosen"]}],
        "rejected": [{"role": "assistant", "content": pair["rejected"]}],
    }


def _prompt_feature(rows: list[dict]):
    return datasets.List(MESSAGE) if conversational(rows) else datasets.Value("string")


def rankings_dataset(store: Store) -> datasets.Dataset:
    items = ranked_items(store)
    if conversational(items):
        items = [item | {"prompt": conversation(item["prompt"])} for item in items]
    features = datasets.Features(
        {
            "ranking_id": datasets.Value("int64"),
            "prompt_id": datasets.Value("int64"),
            "prompt": _prompt_feature(items),
            "ranked_responses": datasets.List(datasets.List(datasets.Value("string"))),
            "ranked_response_ids": datasets.List(datasets.List(datasets.Value("int64"))),
            "annotator": datasets.Value("string"),
            "model": datasets.Value("string"),
            "created_at": datasets.Value("string"),
        }
    )
    return _table(items, features)


def pairs_dataset(store: Store) -> datasets.Dataset:
    pairs = [pair for item in ranked_items(store) for pair in expand_to_pairs(item)]
    response = datasets.Value("string")
    if conversational(pairs):
        pairs, response = [as_conversational_pair(pair) for pair in pairs], datasets.List(MESSAGE)
    features = datasets.Features(
        {
            "ranking_id": datasets.Value("int64"),
            "prompt_id": datasets.Value("int64"),
            "prompt": _prompt_feature(pairs),
            "chosen": response,
            "rejected": response,
        }
    )
    return _table(pairs, features)


def as_messages(prompt, completion: str) -> list[dict]:
    """Return a prompt (text or messages) and its answer as one TRL `messages` conversation, the answer last."""
    return conversation(prompt) + [{"role": "assistant", "content": completion}]


SFT_FEATURES = datasets.Features(
    {
        "prompt_id": datasets.Value("int64"),
        "messages": datasets.List(MESSAGE),
        "source": datasets.Value("string"),  # 'human' (an annotator's answer), 'model', or how it was chosen
    }
)


def sft_table(rows: list[dict]) -> datasets.Dataset:
    """Return {"prompt_id", "prompt", "completion", "source"} rows as an SFT set in TRL's `messages` format."""
    rows = [
        {
            "prompt_id": row["prompt_id"],
            "messages": as_messages(row["prompt"], row["completion"]),
            "source": row["source"],
        }
        for row in rows
    ]
    return _table(rows, SFT_FEATURES)


def sft_rows(store: Store) -> list[dict]:
    """Return each ranking's best response (each of a tied best group) with its prompt and whether a person wrote it."""
    human = {row[0] for row in store.query("SELECT response_id FROM human_responses")}
    return [
        {
            "prompt_id": item["prompt_id"],
            "prompt": item["prompt"],
            "completion": text,
            "source": "human" if response_id in human else "model",
        }  # fmt: skip
        for item in ranked_items(store)
        for response_id, text in zip(item["ranked_response_ids"][0], item["ranked_responses"][0], strict=True)
    ]


def sft_dataset(store: Store) -> datasets.Dataset:
    return sft_table(sft_rows(store))


DATASETS = {"rankings": rankings_dataset, "pairs": pairs_dataset, "sft": sft_dataset}


def export(store: Store, path: str | Path, kind: str = "pairs", fmt: str | None = None) -> int:
    """Write rankings, pairs, the SFT set or the prompts with their columns to a Parquet or JSONL file; return the
    number of rows written."""
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r}; expected one of {KINDS}")
    if kind == "prompts":
        fmt = fmt or Path(path).suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
        return export_prompts(store, path, fmt)
    return write_table(DATASETS[kind](store), path, fmt)


def write_table(table: datasets.Dataset, path: str | Path, fmt: str | None = None) -> int:
    """Write a table to a Parquet or JSONL file (the suffix's, unless `fmt`); return the number of rows written."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if fmt == "parquet":
        table.to_parquet(str(tmp))
    else:
        table.to_json(str(tmp), lines=True, force_ascii=False)
    tmp.replace(path)  # a crash mid-export never leaves a truncated file under the real name
    return len(table)


def export_bytes(store: Store, kind: str, fmt: str) -> bytes:
    """Return an export as bytes, for the app's download buttons."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"{kind}.{fmt}"
        export(store, target, kind, fmt)
        return target.read_bytes()


def best_ranked_demonstrations(store: Store) -> list[dict]:
    """Return the best-ranked response of each ranking as a TRL prompt/completion row (rejection sampling by
    people); each response of a tied best group is one, and an annotator's own answer ranked best is one."""
    return [{"prompt": row["prompt"], "completion": row["completion"]} for row in sft_rows(store)]
