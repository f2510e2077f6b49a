"""Users, roles and login sessions: scrypt password hashes, expiring session tokens, throttled failed logins."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from math import ceil

from data.store import Store

ROLES = ("admin", "annotator")
MIN_PASSWORD_CHARS = 8
SESSION_HOURS = 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # the interactive-login parameters recommended for scrypt


THROTTLE_MINUTES = 15  # failed sign-ins older than this are forgotten
MAX_WAIT_SECONDS = 300
# Failed sign-ins a name or an address may have within THROTTLE_MINUTES before every attempt on it waits (the
# base delay, doubling with each further failure). A name is strict: one failure. An address is shared by a team
# behind one office router that signs in together and mistypes a few passwords, so it allows tens; a guesser
# there gets those few dozen guesses per window, spread over names, and no more by guessing in parallel.
NAME_FAILURE_LIMIT = 1
CLIENT_FAILURE_LIMIT = 30
CHECK_SECONDS = 60  # a check recorded longer ago than this died with its thread: it no longer holds its keys
# Keys the throttle's hashes; held only in this process, so the table alone cannot be searched for a guessed
# name or password. A restart forgets the waits, which only whoever can restart the app can do.
_THROTTLE_SECRET = secrets.token_bytes(32)


class LoginError(ValueError):
    """Wrong name or password (the message never says which, nor echoes the password)."""


class LoginThrottled(LoginError):
    """Too many recent failures for this name or client: refused without checking the password."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str) -> str:
    """Return a salted scrypt hash with its parameters, in one string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


# Checked when the name is unknown, so that costs one scrypt as a wrong password does; it matches no password.
_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'00' * 16}${'00' * 64}"


def verify_password(password: str, stored: str) -> bool:
    """Return whether the password matches the stored hash (constant-time comparison)."""
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    computed = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(computed.hex(), digest)


def add_user(store: Store, name: str, role: str, password: str, replace: bool = False) -> None:
    """Create a user (or, with replace, reset their role and password) in one transaction."""
    name = name.strip()
    if not name:
        raise ValueError("user name is empty")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    password_hash = hash_password(password)

    def insert(cursor):
        exists = cursor.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone()
        if exists and not replace:
            raise ValueError(f"user {name!r} already exists")
        cursor.execute("DELETE FROM users WHERE name = ?", [name])
        cursor.execute("INSERT INTO users (name, role, password_hash) VALUES (?, ?, ?)", [name, role, password_hash])
        cursor.execute("DELETE FROM sessions WHERE user_name = ?", [name])  # a reset password ends old sessions

    store.write(insert)


def has_users(store: Store) -> bool:
    return store.query("SELECT count(*) FROM users")[0][0] > 0


def list_users(store: Store) -> list[User]:
    return [User(name, role) for name, role in store.query("SELECT name, role FROM users ORDER BY name")]


def _throttle_key(kind: str, value: str) -> str:
    """Return a keyed hash of a name or client address: the table never holds what was typed."""
    return hmac.new(_THROTTLE_SECRET, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def _key_wait(failures: int, since_last: float | None, checking: int, limit: int, base_delay: float):
    """Return (seconds a key's failures still make it wait, whether checks under way could reach its limit)."""
    wait = 0.0
    if failures >= limit:
        wait = min(base_delay * 2 ** (failures - limit), MAX_WAIT_SECONDS) - since_last
    return wait, checking > 0 and failures + checking >= limit


def _reserve_check(cursor, name_key: str, client_key: str, attempt: str, base_delay: float) -> tuple[float, bool]:
    """Return (seconds to wait, whether a check under way blocks); when neither, record this attempt's check.

    A check under way counts against the limits as if it had failed, until it ends: parallel attempts on one
    name are checked one at a time, and parallel attempts from one address never exceed its limit. One write
    transaction, so parallel attempts see each other.
    """
    cursor.execute(f"DELETE FROM login_throttle WHERE failed_at < now() - INTERVAL {THROTTLE_MINUTES} MINUTE")
    cursor.execute(f"DELETE FROM login_checks WHERE started_at < now() - INTERVAL {CHECK_SECONDS} SECOND")
    wait, busy = 0.0, False
    for key, column, limit in (
        (name_key, "name_key", NAME_FAILURE_LIMIT),
        (client_key, "client_key", CLIENT_FAILURE_LIMIT),
    ):
        failures, since_last = cursor.execute(
            "SELECT count(*), epoch(now()) - epoch(max(failed_at)) FROM login_throttle WHERE key = ?", [key]
        ).fetchone()
        checking = cursor.execute(f"SELECT count(*) FROM login_checks WHERE {column} = ?", [key]).fetchone()[0]
        key_wait, key_busy = _key_wait(failures, since_last, checking, limit, base_delay)
        wait, busy = max(wait, key_wait), busy or key_busy
    if wait <= 0 and not busy:
        cursor.execute(
            "INSERT INTO login_checks (attempt, name_key, client_key) VALUES (?, ?, ?)", [attempt, name_key, client_key]
        )
    return max(wait, 0.0), busy


def _end_check(cursor, attempt: str, name_key: str, client_key: str, user_name: str | None) -> str | None:
    """Return a new session token for `user_name`, or record the attempt as failed when it is None."""
    cursor.execute("DELETE FROM login_checks WHERE attempt = ?", [attempt])
    if user_name is None:
        cursor.executemany(
            "INSERT INTO login_throttle (key, attempt) VALUES (?, ?)", [(name_key, attempt), (client_key, attempt)]
        )
        return None
    cursor.execute("DELETE FROM login_throttle WHERE key = ?", [name_key])  # the address keeps its failures
    cursor.execute("DELETE FROM sessions WHERE expires_at < now()")
    token = secrets.token_urlsafe(32)
    cursor.execute(
        f"INSERT INTO sessions VALUES (?, ?, now() + INTERVAL {SESSION_HOURS} HOUR)", [_token_hash(token), user_name]
    )
    return token


def login(store: Store, name: str, password: str, client: str = "local", base_delay: float = 0.5) -> str:
    """Return a new session token, or raise LoginError; attempts after failures wait, doubling with each one.

    Only a wrong password or an unknown name is a failure, recorded after its check: right passwords from one
    address all get in at once. The wait is per user name (from its first failure) and per client address (from
    its CLIENT_FAILURE_LIMIT-th), across sessions, and is enforced before the password is checked: an attempt
    during it is refused unchecked, and so is one on a name whose password is being checked, so neither retries
    nor parallel sessions guess faster. An unknown name is checked against a dummy hash, so it takes as long as
    a wrong password.
    """
    name_key, client_key = _throttle_key("name", name), _throttle_key("client", client)
    attempt = secrets.token_hex(16)
    wait, busy = store.write(_reserve_check, name_key, client_key, attempt, base_delay)
    if wait > 0:
        raise LoginThrottled(
            f"too many failed sign-ins for this name or from this address: try again in {ceil(wait)} s"
        )
    if busy:
        raise LoginThrottled("another sign-in for this name or from this address is being checked: try again in 1 s")
    signed_in = False
    try:
        rows = store.query("SELECT password_hash FROM users WHERE name = ?", [name])
        signed_in = verify_password(password, rows[0][0] if rows else _DUMMY_HASH) and bool(rows)
    finally:  # also when the check itself failed: the attempt must not hold its keys
        token = store.write(_end_check, attempt, name_key, client_key, name if signed_in else None)
    if token is None:
        raise LoginError("wrong user name or password")
    return token


def session_user(store: Store, token: str | None) -> User | None:
    """Return the user of a live session token, or None if it is unknown or expired."""
    if not token:
        return None
    rows = store.query(
        "SELECT u.name, u.role FROM sessions s JOIN users u ON u.name = s.user_name "
        "WHERE s.token_hash = ? AND s.expires_at > now()",
        [_token_hash(token)],
    )
    return User(*rows[0]) if rows else None


def logout(store: Store, token: str) -> None:
    store.write(lambda cursor: cursor.execute("DELETE FROM sessions WHERE token_hash = ?", [_token_hash(token)]))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
