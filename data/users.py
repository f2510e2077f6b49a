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


def _reserve_attempt(cursor, keys: list[str], attempt: str, base_delay: float) -> float:
    """Return the seconds these keys must still wait; when none, record this attempt as failed until it succeeds.

    Recorded before the password is checked, in one write transaction: parallel attempts on one name or from one
    client see each other, so only the first is checked and the rest wait.
    """
    cursor.execute(f"DELETE FROM login_throttle WHERE failed_at < now() - INTERVAL {THROTTLE_MINUTES} MINUTE")
    wait = 0.0
    for key in keys:
        failures, since_last = cursor.execute(
            "SELECT count(*), epoch(now()) - epoch(max(failed_at)) FROM login_throttle WHERE key = ?", [key]
        ).fetchone()
        if failures:
            wait = max(wait, min(base_delay * 2 ** (failures - 1), MAX_WAIT_SECONDS) - since_last)
    if wait <= 0:
        cursor.executemany("INSERT INTO login_throttle (key, attempt) VALUES (?, ?)", [(k, attempt) for k in keys])
    return max(wait, 0.0)


def login(store: Store, name: str, password: str, client: str = "local", base_delay: float = 0.5) -> str:
    """Return a new session token, or raise LoginError; attempts after a failure wait, doubling with each one.

    The wait is per user name and per client (address), across sessions, and is enforced before the password is
    checked: an attempt during it is refused unchecked, so neither retries nor parallel sessions guess faster.
    An unknown name is checked against a dummy hash, so it takes as long as a wrong password.
    """
    name_key, client_key = _throttle_key("name", name), _throttle_key("client", client)
    attempt = secrets.token_hex(16)
    wait = store.write(_reserve_attempt, [name_key, client_key], attempt, base_delay)
    if wait > 0:
        raise LoginThrottled(
            f"too many failed sign-ins for this name or from this address: try again in {ceil(wait)} s"
        )
    rows = store.query("SELECT password_hash FROM users WHERE name = ?", [name])
    matches = verify_password(password, rows[0][0] if rows else _DUMMY_HASH)
    if not (rows and matches):
        raise LoginError("wrong user name or password")
    token = secrets.token_urlsafe(32)

    def start_session(cursor):
        cursor.execute("DELETE FROM sessions WHERE expires_at < now()")
        cursor.execute("DELETE FROM login_throttle WHERE key = ? OR attempt = ?", [name_key, attempt])
        cursor.execute(
            f"INSERT INTO sessions VALUES (?, ?, now() + INTERVAL {SESSION_HOURS} HOUR)", [_token_hash(token), name]
        )

    store.write(start_session)
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
