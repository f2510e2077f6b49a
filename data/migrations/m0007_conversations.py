"""Conversations: the messages of a multi-turn prompt, and where a continued conversation came from.

A side table, so no existing row is rewritten: a prompt without a row here is the one user message in
`prompts.text` (every prompt stored before this migration). For a conversation, `prompts.text` holds its plain
transcript (for search) and `prompts.text_hash` the hash of its messages (duplicates are whole conversations).
"""

VERSION = 7

STATEMENTS = [
    """CREATE TABLE prompt_messages (
        prompt_id BIGINT PRIMARY KEY REFERENCES prompts(id),
        messages JSON NOT NULL,  -- [{"role", "content"}, ...]: optional system, user/assistant alternating, user last
        parent_prompt_id BIGINT REFERENCES prompts(id),  -- a continued conversation: the prompt it continues
        parent_response_id BIGINT REFERENCES responses(id),  -- ... and the response ranked best there
        parent_ranking_id BIGINT REFERENCES rankings(id)  -- ... in this ranking
    )""",
    """CREATE TABLE comparison_messages (  -- the conversation of a blind comparison whose prompt has history
        comparison_id BIGINT PRIMARY KEY REFERENCES comparisons(id),
        messages JSON NOT NULL
    )""",
]


def up(cursor):
    for statement in STATEMENTS:
        cursor.execute(statement)
