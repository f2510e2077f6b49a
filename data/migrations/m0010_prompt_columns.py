"""Prompt columns: the other columns of an imported prompts file (answer, solution, tests, difficulty, ...).

A side table, so no prompt row is rewritten: a prompt without a row here has no columns. Numbered 9: main's
conversations (7) and sign-in checks (8) come first.
"""

VERSION = 10


def up(cursor):
    cursor.execute(
        """CREATE TABLE prompt_columns (
            prompt_id BIGINT PRIMARY KEY REFERENCES prompts(id),
            columns JSON NOT NULL  -- {"answer": "42", "difficulty": 3, ...}: the file's values, JSON types kept
        )"""
    )
