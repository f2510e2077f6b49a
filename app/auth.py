"""Who is using the app: the single local admin of a localhost app with no users, or a signed-in user.

Sessions are server-side (hashed tokens in DuckDB, expiring after `data.users.SESSION_HOURS`); the token lives
in this browser session's state, so closing the tab signs out.
"""

import os

import streamlit as st

from app.text import as_text
from data import users
from data.store import Store

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_ADMIN = users.User("local", "admin")


def listening_locally() -> bool:
    """Return whether the server only listens on this machine (`rlhf-studio serve` says so through the env)."""
    address = os.environ.get("RLHF_STUDIO_HOST") or st.get_option("server.address") or ""
    return address in LOCAL_HOSTS


def login_form(store: Store) -> None:
    st.title("RLHF Studio")
    with st.form("auth_login"):
        name = st.text_input("User name", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        if st.form_submit_button("Sign in", type="primary"):
            try:
                client = st.context.ip_address or "localhost"  # None when the browser is on this machine
                st.session_state["auth_token"] = users.login(store, name.strip(), password, client=client)
            except users.LoginError as error:
                st.error(str(error))
            else:
                st.rerun()


def sign_in(store: Store) -> users.User:
    """Return the current user, drawing the login form and stopping the page if nobody is signed in."""
    if not users.has_users(store):
        if listening_locally():
            return LOCAL_ADMIN
        st.error(
            "This app listens beyond localhost and has no users: nobody may use it until an admin is created "
            "with `rlhf-studio add-user NAME --role admin`."
        )
        st.stop()
    user = users.session_user(store, st.session_state.get("auth_token"))
    if user is None:
        st.session_state.pop("auth_token", None)  # expired or unknown
        login_form(store)
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as **{as_text(user.name)}** ({user.role})")
        if st.button("Sign out", key="auth_sign_out"):
            users.logout(store, st.session_state.pop("auth_token"))
            st.rerun()
    return user


def recheck(store: Store) -> None:
    """Redraw the whole page if the session expired or the user changed since the page was drawn.

    A fragment that reruns on its own (`st.fragment(run_every=...)`) skips app/main.py and so its sign-in
    check; polling fragments call this first, so an expired or demoted user's open page stops acting.
    """
    if session_changed(store):
        st.rerun(scope="app")


def session_changed(store: Store) -> bool:
    """Return whether the signed-in user of this browser session is no longer the one the page was drawn for."""
    if not users.has_users(store):
        return False
    return users.session_user(store, st.session_state.get("auth_token")) != st.session_state.get("auth_user")


def current_user() -> users.User:
    """Return the user `app/main.py` signed in for this run of the page."""
    return st.session_state["auth_user"]


def require_admin() -> None:
    """Stop a page that only admins may see (navigation hides it; this guards a typed URL too)."""
    if not current_user().is_admin:
        st.error("This page is for admins.")
        st.stop()
