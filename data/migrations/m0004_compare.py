"""Blind side-by-side comparisons of two models' answers, and the votes people cast on them."""

VERSION = 4

STATEMENTS = [
    "CREATE SEQUENCE comparison_ids START 1",
    """CREATE TABLE comparisons (
        id BIGINT PRIMARY KEY DEFAULT nextval('comparison_ids'),
        prompt VARCHAR NOT NULL,
        model_a VARCHAR NOT NULL,
        model_b VARCHAR NOT NULL,
        text_a VARCHAR NOT NULL,
        text_b VARCHAR NOT NULL,
        a_on_left BOOLEAN NOT NULL,  -- drawn at random when created, so position says nothing of the model
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    "CREATE SEQUENCE vote_ids START 1",
    """CREATE TABLE votes (
        id BIGINT PRIMARY KEY DEFAULT nextval('vote_ids'),
        comparison_id BIGINT NOT NULL REFERENCES comparisons(id),
        annotator_id BIGINT NOT NULL REFERENCES annotators(id),
        vote VARCHAR NOT NULL,  -- in model terms: 'a', 'b', 'tie', 'both_bad'
        submission_token VARCHAR UNIQUE,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        UNIQUE (comparison_id, annotator_id)
    )""",
]


def up(cursor):
    for statement in STATEMENTS:
        cursor.execute(statement)
