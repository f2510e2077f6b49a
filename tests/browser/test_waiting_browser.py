"""In a real browser: with nothing sampled yet, the waiting box says what the sampler is doing, then the item comes."""

import re

import pytest

from data.prompts import add_prompts
from data.settings import save_settings
from data.store import Store
from tests.browser.serving import launch_chromium, running_app

STATUS = re.compile(r"(Loading the generator model|Sampling \d+ responses for \d+ prompt|Waiting for the next prompt)")


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    db = tmp_path / "studio.duckdb"
    store = Store(db)
    add_prompts(store, ["Name three colours."], source="test")
    save_settings(store, {"k": 2, "max_new_tokens": 8, "ready_per_annotator": 1})
    store.close()
    with running_app(db, {"RLHF_STUDIO_MODEL": str(tiny_model_dir)}) as (url, process):
        yield url


@pytest.mark.browser
def test_the_waiting_box_says_what_the_sampler_does_until_the_item_arrives(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(server)
            box = page.get_by_text("This page refreshes by itself.")
            ranks = page.get_by_role("radiogroup")
            expect(box.or_(ranks.first)).to_be_visible(timeout=60_000)
            if box.is_visible():  # a fast machine may have the item ready before the first draw
                assert STATUS.search(box.inner_text()), box.inner_text()
            expect(ranks.first).to_be_visible(timeout=120_000)  # the item replaced the box by itself
            expect(box).to_have_count(0)
        finally:
            browser.close()
