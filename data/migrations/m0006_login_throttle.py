"""Failed sign-ins kept as keyed hashes of the name and the client, never as typed (a password typed as a name)."""

VERSION = 6


def up(cursor):
    # login_failures held each failed name as typed: sometimes a password typed into the name field.
    cursor.execute("DROP TABLE login_failures")
    cursor.execute(
        """CREATE TABLE login_throttle (
            key VARCHAR NOT NULL,  -- HMAC of 'name:<name>' or 'client:<address>' under a key the app keeps in memory
            attempt VARCHAR NOT NULL,  -- one sign-in attempt: its rows go when it succeeds
            failed_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )"""
    )
