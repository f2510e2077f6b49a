"""In a real browser: model or user text holding HTML runs nothing; several sessions rank at once, exactly once each."""

import pytest

from data.store import Store
from tests.browser.serving import launch_chromium, open_as_annotator, running_app, settled, stop, wait_until_stored
from tests.reliability.helpers import prepare

HOSTILE_PROMPT = (
    'Hi <script>window.__xss = "prompt"</script> <img src="http://127.0.0.1:9/prompt.png" onerror="window.__xss = 1">'
)
HOSTILE_RESPONSE = (
    '<img src="http://127.0.0.1:9/response.png" onerror="window.__xss = 2"> <b>bold?</b> '
    "![a markdown image](http://127.0.0.1:9/markdown.png)"
)


@pytest.mark.browser
def test_html_in_prompts_and_responses_is_shown_as_text_and_runs_nothing(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    db = tmp_path / "studio.duckdb"
    prepare(db, [HOSTILE_PROMPT], [HOSTILE_RESPONSE, "plain answer"])
    requests = []
    with running_app(db) as (url, _), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url)
            expect(page.get_by_role("radiogroup", name="Rank of B")).to_be_visible(timeout=60_000)
            expect(page.get_by_role("paragraph").filter(has_text="plain answer")).to_be_visible()  # not its edit box
            page.wait_for_timeout(1000)
            assert page.evaluate("window.__xss") is None
            assert page.locator('img[src*="127.0.0.1:9"]').count() == 0
            assert page.locator("b", has_text="bold?").count() == 0
            page.screenshot(path=str(tmp_path / "hostile.png"), full_page=True)
        finally:
            browser.close()
    assert not [u for u in requests if "127.0.0.1:9" in u], "the page tried to load an image from model text"


@pytest.mark.browser
def test_three_browser_sessions_rank_at_once_with_exact_counts(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    db = tmp_path / "studio.duckdb"
    prepare(db, [f"Question {i}?" for i in range(12)], ["first answer", "second answer"])
    names = ["ann", "ben", "cat"]
    with running_app(db) as (url, process), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            pages = [open_as_annotator(browser, url, name) for name in names]
            for done in (1, 2):  # interleave the sessions: each ranks one item per round
                for page in pages:  # ranks clicked on a form a rerun is replacing would be lost: wait for it to end
                    expect(page.get_by_role("radiogroup", name="Rank of B")).to_be_visible(timeout=60_000)
                    settled(page)
                    page.get_by_role("radiogroup", name="Rank of A").get_by_text("2", exact=True).click()
                    page.get_by_role("radiogroup", name="Rank of B").get_by_text("1", exact=True).click()
                for page in pages:
                    page.get_by_role("button", name="Submit ranking").click()
                for page in pages:
                    wait_until_stored(page, done)
                    assert page.get_by_test_id("stException").count() == 0
                    assert page.get_by_test_id("stAlertContentError").count() == 0
        finally:
            browser.close()
        stop(process)
    store = Store(db)
    rows = store.query("SELECT a.name, k.batch_id FROM rankings k JOIN annotators a ON a.id = k.annotator_id")
    store.close()
    assert sorted(name for name, _ in rows) == sorted(names * 2)
    assert len({batch for _, batch in rows}) == 6, "two sessions ranked the same item"
