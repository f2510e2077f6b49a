"""Reward-model scores of sampled responses: for suggestions and for the "uncertain first" order."""

VERSION = 5


def up(cursor):
    cursor.execute(
        """CREATE TABLE response_scores (
            response_id BIGINT NOT NULL REFERENCES responses(id),
            reward_model VARCHAR NOT NULL,  -- registry name or run folder of the reward model
            score DOUBLE NOT NULL,
            PRIMARY KEY (response_id, reward_model)
        )"""
    )
