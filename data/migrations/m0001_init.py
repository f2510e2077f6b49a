"""Prompts, sampled response batches, responses, annotators and rankings; room for models and runs."""

VERSION = 1

STATEMENTS = [
    "CREATE SEQUENCE prompt_ids START 1",
    """CREATE TABLE prompts (
        id BIGINT PRIMARY KEY DEFAULT nextval('prompt_ids'),
        text VARCHAR NOT NULL,
        text_hash VARCHAR NOT NULL UNIQUE,  -- sha256 of the whitespace-trimmed text: duplicates are skipped
        source VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE annotator_ids START 1",
    """CREATE TABLE annotators (
        id BIGINT PRIMARY KEY DEFAULT nextval('annotator_ids'),
        name VARCHAR NOT NULL UNIQUE,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE batch_ids START 1",
    """CREATE TABLE batches (  -- the K responses sampled together for one prompt: one item to rank
        id BIGINT PRIMARY KEY DEFAULT nextval('batch_ids'),
        prompt_id BIGINT NOT NULL REFERENCES prompts(id),
        model VARCHAR NOT NULL,
        params JSON NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    # Claims live apart from batches: DuckDB cannot UPDATE a row that foreign keys point at.
    """CREATE TABLE claims (  -- which annotator holds which batch, so two people never rank the same item
        batch_id BIGINT PRIMARY KEY REFERENCES batches(id),
        annotator_id BIGINT NOT NULL REFERENCES annotators(id),
        claimed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE response_ids START 1",
    """CREATE TABLE responses (
        id BIGINT PRIMARY KEY DEFAULT nextval('response_ids'),
        batch_id BIGINT NOT NULL REFERENCES batches(id),
        prompt_id BIGINT NOT NULL REFERENCES prompts(id),
        position INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        params JSON NOT NULL,
        finish_reason VARCHAR NOT NULL,  -- 'eos' or 'length'
        num_tokens INTEGER NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE ranking_ids START 1",
    """CREATE TABLE rankings (
        id BIGINT PRIMARY KEY DEFAULT nextval('ranking_ids'),
        batch_id BIGINT NOT NULL REFERENCES batches(id),
        prompt_id BIGINT NOT NULL REFERENCES prompts(id),
        annotator_id BIGINT NOT NULL REFERENCES annotators(id),
        status VARCHAR NOT NULL,  -- 'ranked', 'skipped' or 'flagged'
        ranking BIGINT[][] NOT NULL,  -- tie groups of response ids, best group first; empty unless ranked
        comment VARCHAR,
        seconds_spent DOUBLE,
        submission_token VARCHAR UNIQUE,  -- a retried or double-clicked submit is stored once
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE model_ids START 1",
    """CREATE TABLE models (  -- base models, reward-model runs and policy runs, with lineage
        id BIGINT PRIMARY KEY DEFAULT nextval('model_ids'),
        kind VARCHAR NOT NULL,  -- 'base', 'reward', 'policy'
        name VARCHAR NOT NULL UNIQUE,
        path VARCHAR,
        parent_id BIGINT,  -- models.id of the base or previous run (no FK: rows get updated)
        config JSON,
        metrics JSON,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE TABLE settings (key VARCHAR PRIMARY KEY, value JSON NOT NULL)",
]


def up(cursor):
    for statement in STATEMENTS:
        cursor.execute(statement)
