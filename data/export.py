"""Export rankings as a Hugging Face `datasets` table, listwise or expanded to prompt/chosen/rejected pairs."""

from pathlib import Path

import datasets

from data.prompt_columns import export_prompts
from data.store import Store

FORMATS = ("parquet", "jsonl")
KINDS = ("rankings", "pairs", "prompts")  # prompts: each with its columns (answer, ...), as imported


def ranked_items(store: Store) -> list[dict]:
    """Return every ranking with its prompt and its responses as tie groups of texts, best group first."""
    rows = store.query(
        """
        SELECT k.id, k.prompt_id, p.text, k.ranking, a.name, k.created_at, b.model
        FROM rankings k JOIN prompts p ON p.id = k.prompt_id JOIN annotators a ON a.id = k.annotator_id
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
            "prompt": prompt,
            "ranked_responses": [[texts[i] for i in group] for group in groups],
            "ranked_response_ids": groups,
            "annotator": annotator,
            "model": model,
            "created_at": created_at.isoformat(),
        }
        for ranking_id, prompt_id, prompt, groups, annotator, created_at, model in rows
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


def rankings_dataset(store: Store) -> datasets.Dataset:
    items = ranked_items(store)
    features = datasets.Features(
        {
            "ranking_id": datasets.Value("int64"),
            "prompt_id": datasets.Value("int64"),
            "prompt": datasets.Value("string"),
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
    features = datasets.Features(
        {
            "ranking_id": datasets.Value("int64"),
            "prompt_id": datasets.Value("int64"),
            "prompt": datasets.Value("string"),
            "chosen": datasets.Value("string"),
            "rejected": datasets.Value("string"),
        }
    )
    return _table(pairs, features)


def export(store: Store, path: str | Path, kind: str = "pairs", fmt: str | None = None) -> int:
    """Write rankings or pairs to a Parquet or JSONL file; return the number of rows written."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r}; expected one of {KINDS}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    if kind == "prompts":
        return export_prompts(store, path, fmt)
    table = rankings_dataset(store) if kind == "rankings" else pairs_dataset(store)
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
