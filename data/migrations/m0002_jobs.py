"""Background training jobs launched from the app: queued, running, done, failed, cancelled."""

VERSION = 2

STATEMENTS = [
    "CREATE SEQUENCE job_ids START 1",
    """CREATE TABLE jobs (
        id BIGINT PRIMARY KEY DEFAULT nextval('job_ids'),
        kind VARCHAR NOT NULL,  -- 'train-rm', 'train-policy'
        argv JSON NOT NULL,  -- the exact `rlhf-studio ...` command, shown to the user so it can be re-run by hand
        run_dir VARCHAR NOT NULL,
        log_path VARCHAR NOT NULL,
        status VARCHAR NOT NULL DEFAULT 'queued',
        pid INTEGER,
        exit_code INTEGER,
        error VARCHAR,
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        started_at TIMESTAMP,
        ended_at TIMESTAMP
    )""",
]


def up(cursor):
    for statement in STATEMENTS:
        cursor.execute(statement)
