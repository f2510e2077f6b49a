"""In a real browser: a team behind one address signs in at the same moment and ranks; a guesser is still slowed."""

import time

import pytest

from data import users
from data.store import Store
from tests.browser.serving import launch_chromium, running_app, settled, stop, wait_until_stored
from tests.reliability.helpers import prepare

# Presses "Sign in" at a wall-clock moment (ms since the epoch): every session's press leaves at once, as a
# team's would when told "sign in now", instead of one after another as Playwright's clicks go.
PRESS_SIGN_IN_AT = """at => setTimeout(
    () => [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Sign in').click(),
    Math.max(0, at - Date.now()))"""


@pytest.fixture
def server(tmp_path):
    """The app over 12 hand-made items, with annotator accounts ann0..ann3 (password '<name> password') and ada."""
    db = tmp_path / "studio.duckdb"
    prepare(db, [f"Question {i}?" for i in range(12)], ["first answer", "second answer"])
    store = Store(db)
    for i in range(4):
        users.add_user(store, f"ann{i}", "annotator", f"ann{i} password")
    users.add_user(store, "ada", "admin", "correct horse")
    store.close()  # the server process must be the only one holding the file
    with running_app(db) as (url, process):
        yield url, db, process


def sign_in_at_once(browser, url: str, credentials: list[tuple[str, str]]) -> list:
    """Return one page per (name, password), each a fresh browser session, all pressing Sign in at one moment."""
    pages = []
    for name, password in credentials:
        page = browser.new_context().new_page()  # its own cookies and connection: another person's browser
        page.goto(url)
        page.get_by_role("textbox", name="User name").fill(name)
        page.get_by_role("textbox", name="Password").fill(password)
        pages.append(settled(page))
    press_at = int(time.time() * 1000) + 500  # clock time, shared by every page on this machine
    for page in pages:
        page.evaluate(PRESS_SIGN_IN_AT, press_at)
    return pages


def outcome(page) -> str:
    """Wait until the page has answered the sign-in, and return 'Annotate' or the error it shows."""
    from playwright.sync_api import expect

    annotate = page.get_by_role("heading", name="Annotate")
    error = page.get_by_test_id("stAlertContentError")
    expect(annotate.or_(error).first).to_be_visible(timeout=60_000)
    settled(page)
    return error.first.inner_text() if error.count() else "Annotate"


@pytest.mark.browser
def test_four_annotators_behind_one_address_sign_in_at_once_and_rank(server):
    from playwright.sync_api import expect, sync_playwright

    url, db, process = server
    names = [f"ann{i}" for i in range(4)]
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            pages = sign_in_at_once(browser, url, [(name, f"{name} password") for name in names])
            assert [outcome(page) for page in pages] == ["Annotate"] * 4  # none refused, none throttled
            for done in (1, 2):
                for page in pages:  # ranks clicked on a form a rerun is replacing would be lost: wait for it to end
                    expect(page.get_by_role("radiogroup", name="Rank of B")).to_be_visible(timeout=60_000)
                    settled(page)
                    page.get_by_role("radiogroup", name="Rank of A").get_by_text("2", exact=True).click()
                    page.get_by_role("radiogroup", name="Rank of B").get_by_text("1", exact=True).click()
                for page in pages:
                    page.get_by_role("button", name="Submit ranking").click()
                for page in pages:
                    wait_until_stored(page, done)  # acknowledged: the page read its count back from the database
                    assert page.get_by_test_id("stAlertContentError").count() == 0
        finally:
            browser.close()
        stop(process)
    store = Store(db)
    rows = store.query("SELECT a.name, k.batch_id FROM rankings k JOIN annotators a ON a.id = k.annotator_id")
    store.close()
    assert sorted(name for name, _ in rows) == sorted(names * 2)  # stored = acknowledged
    assert len({batch for _, batch in rows}) == 8, "two sessions ranked the same item"


@pytest.mark.browser
def test_parallel_wrong_passwords_for_one_name_get_one_check(server):
    from playwright.sync_api import sync_playwright

    url, _, _ = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            pages = sign_in_at_once(browser, url, [("ada", f"guess number {i}") for i in range(3)])
            outcomes = [outcome(page) for page in pages]
            checked = [text for text in outcomes if text == "wrong user name or password"]
            assert len(checked) == 1, outcomes  # one guess checked
            assert sum("try again in" in text for text in outcomes) == 2, outcomes  # the others refused unchecked
        finally:
            browser.close()
