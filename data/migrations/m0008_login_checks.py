"""Sign-ins whose password is being checked: failures are recorded only after the check, these rows meanwhile."""

VERSION = 8


def up(cursor):
    cursor.execute(
        """CREATE TABLE login_checks (
            attempt VARCHAR PRIMARY KEY,  -- one sign-in attempt: its row goes when its check ends
            name_key VARCHAR NOT NULL,  -- keyed hashes, as in login_throttle: never the name or address as typed
            client_key VARCHAR NOT NULL,
            started_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )"""
    )
