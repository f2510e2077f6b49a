"""Access: scrypt hashes, roles, expiring sessions, slowed failed logins, no password stored or echoed."""

import time

import pytest

from data import users


def test_password_is_stored_as_salted_scrypt_hash(store):
    users.add_user(store, "ada", "admin", "correct horse")
    users.add_user(store, "bob", "annotator", "correct horse")
    hashes = dict(store.query("SELECT name, password_hash FROM users"))
    assert all(h.startswith("scrypt$") and "correct horse" not in h for h in hashes.values())
    assert hashes["ada"] != hashes["bob"]  # same password, different salt
    assert users.verify_password("correct horse", hashes["ada"])
    assert not users.verify_password("correct horsE", hashes["ada"])


def test_login_gives_a_session_with_the_users_role(store):
    users.add_user(store, "ada", "admin", "correct horse")
    users.add_user(store, "bob", "annotator", "battery staple")
    assert users.session_user(store, users.login(store, "ada", "correct horse")).is_admin
    bob = users.session_user(store, users.login(store, "bob", "battery staple"))
    assert bob == users.User("bob", "annotator") and not bob.is_admin


def test_bad_users_are_refused(store):
    with pytest.raises(ValueError, match="at least 8"):
        users.add_user(store, "ada", "admin", "short")
    with pytest.raises(ValueError, match="unknown role"):
        users.add_user(store, "ada", "root", "long enough")
    users.add_user(store, "ada", "admin", "long enough")
    with pytest.raises(ValueError, match="already exists"):
        users.add_user(store, "ada", "admin", "long enough")
    assert users.list_users(store) == [users.User("ada", "admin")]


def test_failed_logins_are_slowed_and_say_nothing_of_the_password(store):
    users.add_user(store, "ada", "admin", "correct horse")
    delays = []
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(users.LoginError) as caught:
            users.login(store, "ada", "guess-guess", base_delay=0.05)
        delays.append(time.monotonic() - started)
        assert "guess-guess" not in str(caught.value)
    assert delays[0] >= 0.05 and delays[2] >= 0.2  # 0.05 · 2^failures
    with pytest.raises(users.LoginError):
        users.login(store, "nobody", "whatever1", base_delay=0.0)


def test_sessions_expire_and_end_on_logout_or_password_reset(store):
    users.add_user(store, "ada", "admin", "correct horse")
    token = users.login(store, "ada", "correct horse")
    users.logout(store, token)
    assert users.session_user(store, token) is None
    token = users.login(store, "ada", "correct horse")
    store.write(lambda c: c.execute("UPDATE sessions SET expires_at = now() - INTERVAL 1 MINUTE"))
    assert users.session_user(store, token) is None
    token = users.login(store, "ada", "correct horse")
    users.add_user(store, "ada", "admin", "new password!", replace=True)
    assert users.session_user(store, token) is None
    assert users.session_user(store, None) is None
