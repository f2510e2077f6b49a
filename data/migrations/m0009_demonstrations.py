"""Demonstrations: responses an annotator wrote or edited, ranked with the sampled ones.

A side table, so no existing row is rewritten: the text lives in `responses` (same batch and prompt, model
'human'), so rankings, exports and follow-ups read it like any response; a row here says it is human-written,
who wrote it, in which submission, and the model response it was edited from. A response without a row here
was sampled by a model (every response stored before this migration).
"""

VERSION = 9


def up(cursor):
    cursor.execute(
        """CREATE TABLE human_responses (
            response_id BIGINT PRIMARY KEY REFERENCES responses(id),
            ranking_id BIGINT NOT NULL UNIQUE REFERENCES rankings(id),  -- the submission that stored and ranked it
            annotator_id BIGINT NOT NULL REFERENCES annotators(id),
            parent_response_id BIGINT REFERENCES responses(id),  -- the model response it was edited from; NULL: written
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )
