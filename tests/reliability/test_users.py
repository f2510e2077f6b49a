"""Access: scrypt hashes, roles, expiring sessions, throttled failed logins, no password stored or echoed."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

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


def forget_failures(store) -> None:
    """Move every recorded failure an hour back, as if the wait had passed."""
    store.write(lambda c: c.execute("UPDATE login_throttle SET failed_at = failed_at - INTERVAL 1 HOUR"))


@pytest.fixture
def scrypt_calls(monkeypatch):
    """Return the list of (n, r, p) of every scrypt computed from here on: one per password checked."""
    calls, scrypt = [], hashlib.scrypt
    monkeypatch.setattr(
        hashlib, "scrypt", lambda *a, **kw: calls.append((kw["n"], kw["r"], kw["p"])) or scrypt(*a, **kw)
    )
    return calls


def test_after_a_failure_even_the_right_password_waits_unchecked(store, scrypt_calls):
    users.add_user(store, "ada", "admin", "correct horse")
    scrypt_calls.clear()
    with pytest.raises(users.LoginError) as caught:
        users.login(store, "ada", "guess-guess")
    assert "guess-guess" not in str(caught.value)
    with pytest.raises(users.LoginThrottled, match="try again in"):
        users.login(store, "ada", "correct horse")
    with pytest.raises(users.LoginThrottled):  # per name: another client waits too
        users.login(store, "ada", "correct horse", client="10.0.0.9")
    assert len(scrypt_calls) == 1  # only the first attempt was checked
    forget_failures(store)
    assert users.session_user(store, users.login(store, "ada", "correct horse")) == users.User("ada", "admin")


def pass_seconds(cursor, seconds: int) -> None:
    """Move every recorded failure `seconds` back, as if that much time had passed."""
    cursor.execute("UPDATE login_throttle SET failed_at = failed_at - to_seconds(?)", [seconds])


def test_waits_double_with_each_failure(store):
    users.add_user(store, "ada", "admin", "correct horse")
    waits = []
    for _ in range(4):
        with pytest.raises(users.LoginError):
            users.login(store, "ada", "guess-guess", base_delay=10)
        with pytest.raises(users.LoginThrottled) as caught:
            users.login(store, "ada", "guess-guess", base_delay=10)
        waits.append(int(str(caught.value).split("try again in ")[1].split(" s")[0]))
        store.write(pass_seconds, waits[-1])
    assert waits == [10, 20, 40, 80]


def test_parallel_sessions_get_one_check_between_them(store, scrypt_calls):
    users.add_user(store, "ada", "admin", "correct horse")
    scrypt_calls.clear()

    def attempt(_) -> str:
        try:
            users.login(store, "ada", "guess-guess", base_delay=60)
        except users.LoginThrottled:
            return "throttled"
        except users.LoginError:
            return "checked"
        return "signed in"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(attempt, range(8)))
    assert outcomes == ["checked"] + ["throttled"] * 7
    assert len(scrypt_calls) == 1


def test_a_team_behind_one_address_signs_in_at_once_with_the_right_passwords(store):
    names = [f"annotator{i}" for i in range(8)]
    for name in names:
        users.add_user(store, name, "annotator", f"{name} password")

    def sign_in(name: str) -> users.User | None:
        return users.session_user(store, users.login(store, name, f"{name} password", client="10.0.0.1"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        signed_in = list(pool.map(sign_in, names))
    assert signed_in == [users.User(name, "annotator") for name in names]
    assert store.query("SELECT count(*) FROM login_throttle")[0][0] == 0  # a right password is no failure
    assert store.query("SELECT count(*) FROM login_checks")[0][0] == 0


def test_an_address_guessing_in_parallel_gets_no_more_checks_than_its_limit(store, scrypt_calls, monkeypatch):
    monkeypatch.setattr(users, "CLIENT_FAILURE_LIMIT", 4)
    users.add_user(store, "ada", "admin", "correct horse")
    scrypt_calls.clear()

    def guess(name: str) -> str:
        try:
            users.login(store, name, "guess-guess", client="10.0.0.1", base_delay=60)
        except users.LoginThrottled:
            return "throttled"
        except users.LoginError:
            return "checked"
        return "signed in"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(guess, [f"name{i}" for i in range(8)]))  # one guess on each of 8 names
    assert outcomes == ["checked"] * 4 + ["throttled"] * 4
    assert len(scrypt_calls) == 4
    with pytest.raises(users.LoginThrottled, match="too many failed"):  # even a right password, from there
        users.login(store, "ada", "correct horse", client="10.0.0.1")
    assert users.session_user(store, users.login(store, "ada", "correct horse", client="10.0.0.2")).is_admin


def test_a_failing_check_ends_as_a_failure_and_frees_its_name(store, monkeypatch):
    users.add_user(store, "ada", "admin", "correct horse")
    monkeypatch.setattr(users, "verify_password", lambda *_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        users.login(store, "ada", "correct horse")
    assert store.query("SELECT count(*) FROM login_checks")[0][0] == 0
    assert store.query("SELECT count(*) FROM login_throttle")[0][0] == 2  # the name and the address


def test_an_unknown_name_costs_the_same_hash_as_a_wrong_password(store, scrypt_calls):
    users.add_user(store, "ada", "admin", "correct horse")
    scrypt_calls.clear()
    with pytest.raises(users.LoginError) as unknown:
        users.login(store, "nobody", "whatever1", client="a")
    with pytest.raises(users.LoginError) as wrong:
        users.login(store, "ada", "whatever1", client="b")
    assert scrypt_calls == [(users.SCRYPT_N, users.SCRYPT_R, users.SCRYPT_P)] * 2
    assert str(unknown.value) == str(wrong.value)


def test_a_password_typed_as_the_name_is_stored_nowhere(store):
    users.add_user(store, "ada", "admin", "correct horse")
    with pytest.raises(users.LoginError):
        users.login(store, "correct horse", "ada")  # the two fields swapped
    tables = [t for (t,) in store.query("SELECT table_name FROM information_schema.tables")]
    for table in tables:
        for row in store.query(f'SELECT * FROM "{table}"'):
            assert not any("correct horse" in str(value) for value in row if isinstance(value, str)), table


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
