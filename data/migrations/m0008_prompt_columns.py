"""Prompt columns: the other columns of an imported prompts file (answer, solution, tests, difficulty, ...).

A side table, so no prompt row is rewritten: a prompt without a row here has no columns. Numbered 8 so it
follows the conversations and sign-in migrations that take 7.
"""

VERSION = 8


def up(cursor):
    cursor.execute(
        """CREATE TABLE prompt_columns (
            prompt_id BIGINT PRIMARY KEY REFERENCES prompts(id),
            columns JSON NOT NULL  -- {"answer": "42", "difficulty": 3, ...}: the file's values, JSON types kept
        )"""
    )
