"""Users with roles and scrypt password hashes, login sessions, and failed-login tracking."""

VERSION = 3

STATEMENTS = [
    """CREATE TABLE users (
        name VARCHAR PRIMARY KEY,
        role VARCHAR NOT NULL,  -- 'admin' or 'annotator'
        password_hash VARCHAR NOT NULL,  -- scrypt$n$r$p$salt_hex$hash_hex; never the password
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
    """CREATE TABLE sessions (
        token_hash VARCHAR PRIMARY KEY,  -- sha256 of the session token: a leaked table grants no login
        user_name VARCHAR NOT NULL,
        expires_at TIMESTAMP NOT NULL
    )""",
    """CREATE TABLE login_failures (
        user_name VARCHAR NOT NULL,
        failed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
    )""",
]


def up(cursor):
    for statement in STATEMENTS:
        cursor.execute(statement)
