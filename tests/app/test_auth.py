"""Sign-in and roles in the app: local no-login mode, login form, admin and annotator navigation."""

import pytest
from streamlit.testing.v1 import AppTest

from data import users
from tests.app.conftest import APP_MAIN


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input[0].input(name)
    at.text_input[1].input(password)
    at.button[0].click().run()
    return at


def test_localhost_without_users_is_the_local_admin(studio):
    at = studio.open()
    assert at.title[0].value == "Annotate"
    assert not any("Password" == t.label for t in at.text_input)


def test_open_address_without_users_refuses(studio, monkeypatch):
    monkeypatch.setenv("RLHF_STUDIO_HOST", "0.0.0.0")
    at = AppTest.from_file(APP_MAIN, default_timeout=30).run()
    assert "no users" in at.error[0].value
    assert not at.title


def test_login_required_once_users_exist(studio):
    users.add_user(studio.store, "ada", "admin", "correct horse")
    at = AppTest.from_file(APP_MAIN, default_timeout=30).run()
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    sign_in(at, "ada", "wrong password")
    assert "wrong user name or password" in at.error[0].value
    sign_in(at, "ada", "correct horse")
    assert "try again in" in at.error[0].value  # right away after a failure: refused unchecked
    studio.store.write(lambda c: c.execute("UPDATE login_throttle SET failed_at = failed_at - INTERVAL 1 HOUR"))
    sign_in(at, "ada", "correct horse")
    assert not at.exception and at.title[0].value == "Annotate"
    at.switch_page("views/settings.py").run()
    assert at.title[0].value == "Settings"


def test_annotator_sees_only_annotation_and_ranks_as_themselves(studio):
    users.add_user(studio.store, "bob", "annotator", "battery staple")
    batch_id, ids = studio.add_item("Say hi", ["hi", "hello"])
    at = sign_in(AppTest.from_file(APP_MAIN, default_timeout=30).run(), "bob", "battery staple")
    assert at.title[0].value == "Annotate"
    assert not any(t.label == "Annotator" for t in at.text_input)  # the name is the signed-in user's
    at.radio[0].set_value(2)
    at.radio[1].set_value(1)
    studio.click(at, "Submit ranking")
    assert studio.rankings()[0][5] == "bob"
    with pytest.raises(ValueError, match="Known pages: \\['[^,]*annotate.py', '[^,]*compare.py'\\]"):
        at.switch_page("views/data.py")  # admin pages are not even registered for an annotator


def test_polling_sections_recheck_the_session(studio):
    """A fragment reruns without app/main.py: it must notice an ended session and redraw the whole page."""
    import streamlit as st

    from app import auth

    users.add_user(studio.store, "ada", "admin", "correct horse")
    token = users.login(studio.store, "ada", "correct horse")
    st.session_state["auth_token"], st.session_state["auth_user"] = token, users.User("ada", "admin")
    assert not auth.session_changed(studio.store)
    users.add_user(studio.store, "ada", "annotator", "correct horse", replace=True)  # demoted: sessions end
    assert auth.session_changed(studio.store)
