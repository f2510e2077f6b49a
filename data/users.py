"""Users, roles and login sessions: scrypt password hashes, expiring session tokens, slowed failed logins."""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from data.store import Store

ROLES = ("admin", "annotator")
MIN_PASSWORD_CHARS = 8
SESSION_HOURS = 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # the interactive-login parameters recommended for scrypt


class LoginError(ValueError):
    """Wrong name or password (the message never says which, nor echoes the password)."""


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


def _recent_failures(store: Store, name: str, minutes: int = 15) -> int:
    return store.query(
        f"SELECT count(*) FROM login_failures WHERE user_name = ? AND failed_at >= now() - INTERVAL {minutes} MINUTE",
        [name],
    )[0][0]


def login(store: Store, name: str, password: str, base_delay: float = 0.5) -> str:
    """Return a new session token, or raise LoginError after a delay that doubles with recent failures."""
    rows = store.query("SELECT password_hash FROM users WHERE name = ?", [name])
    if rows and verify_password(password, rows[0][0]):
        token = secrets.token_urlsafe(32)

        def start_session(cursor):
            cursor.execute("DELETE FROM sessions WHERE expires_at < now()")
            cursor.execute("DELETE FROM login_failures WHERE user_name = ?", [name])
            cursor.execute(
                f"INSERT INTO sessions VALUES (?, ?, now() + INTERVAL {SESSION_HOURS} HOUR)", [_token_hash(token), name]
            )

        store.write(start_session)
        return token
    failures = _recent_failures(store, name)
    store.write(lambda cursor: cursor.execute("INSERT INTO login_failures (user_name) VALUES (?)", [name]))
    time.sleep(min(base_delay * 2**failures, 30.0))
    raise LoginError("wrong user name or password")


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
