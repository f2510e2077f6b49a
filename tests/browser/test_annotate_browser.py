"""In a real browser: the app serves an item sampled by the background thread, a ranking with a tie is stored."""

from pathlib import Path

import pytest

from data.prompts import add_prompts
from data.settings import save_settings
from data.store import Store
from tests.browser.serving import launch_chromium, running_app, settled

SCREENSHOT = Path("/tmp/annotate.png")


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """`streamlit run app/main.py` on a free port over a fresh database with two prompts; always terminated."""
    db = tmp_path / "studio.duckdb"
    store = Store(db)
    add_prompts(store, ["Write a *short* greeting.", "Name three fruits."], source="test")
    save_settings(store, {"k": 3, "max_new_tokens": 12, "ready_per_annotator": 1})
    store.close()  # the server process must be the only one holding the file
    env = {"RLHF_STUDIO_MODEL": str(tiny_model_dir)}
    with running_app(db, env) as (url, process):
        yield url, db, process


@pytest.mark.browser
def test_rank_in_the_browser_and_find_the_ties_in_duckdb(server):
    from playwright.sync_api import expect, sync_playwright

    url, db, process = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            # The sampler loads the tiny model and samples in the background; the page polls until an item is ready.
            expect(page.get_by_role("radiogroup", name="Rank of C")).to_be_visible(timeout=120_000)
            settled(page)  # the waiting page reruns until the item is drawn: rank on the final form
            prompt = page.get_by_text("Write a short greeting.").or_(page.get_by_text("Name three fruits."))
            shown_prompt = prompt.first.inner_text()
            for label, rank in {"A": "2", "B": "1", "C": "2"}.items():
                page.get_by_role("radiogroup", name=f"Rank of {label}").get_by_text(rank, exact=True).click()
            page.get_by_label("Comment (optional)").fill("A and C tie")
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.get_by_role("button", name="Submit ranking").click()
            expect(page.get_by_text("Ranking saved.")).to_be_visible(timeout=30_000)

            # A page opened by its URL (a reload, a bookmark) keeps the app's navigation and shows the new ranking.
            page.goto(f"{url}/data")
            expect(page.get_by_test_id("stSidebarNav").get_by_text("Annotate", exact=True)).to_be_visible(
                timeout=30_000
            )
            expect(page.get_by_test_id("stMetric").filter(has_text="Rankings")).to_contain_text("1")
        finally:
            browser.close()

    process.terminate()
    process.wait(timeout=30)
    store = Store(db)
    try:
        [(ranking, status, comment, prompt_text, batch_id)] = store.query(
            "SELECT k.ranking, k.status, k.comment, p.text, k.batch_id FROM rankings k JOIN prompts p ON p.id = k.prompt_id"
        )
        position = dict(store.query("SELECT id, position FROM responses WHERE batch_id = ?", [batch_id]))
    finally:
        store.close()
    assert (status, comment) == ("ranked", "A and C tie")
    assert prompt_text.replace("*", "") == shown_prompt
    assert [[position[i] for i in group] for group in ranking] == [[1], [0, 2]]  # B first, then A and C tied
