"""In a real browser: launch a tiny reward-model run, watch it reach "done" with its plot, then pick it on Models."""

import re

import pytest

from core.generation import Sample
from data import annotation
from data.prompts import add_prompts
from data.registry import list_models
from data.settings import load_settings, save_settings
from data.store import Store
from tests.browser.serving import launch_chromium, running_app, stop

SCREENSHOT = "/tmp/train-job.png"
TRAIN_SCREENSHOT = "/tmp/train-launch.png"


def rank_items(store, count: int, prompts: int) -> None:
    """Rank `count` hand-made batches over `prompts` prompts, each by its own annotator: B first, then A and C tied."""
    add_prompts(store, [f"Question {n}: what is {n} plus {n}?" for n in range(prompts)], "test")
    prompt_ids = [row[0] for row in store.query("SELECT id FROM prompts ORDER BY id")]
    for number in range(count):
        samples = [Sample(text, "eos", 3) for text in ["No idea.", f"It is {2 * number}.", "Maybe five?"]]
        annotation.add_batch(store, prompt_ids[number % prompts], "hand", {}, samples)
        annotator = annotation.ensure_annotator(store, f"annotator {number}")
        item = annotation.claim_next_item(store, annotator)
        ids = item.response_ids
        annotation.submit_ranking(store, annotator, item.batch_id, [[ids[1]], [ids[0], ids[2]]])


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """The app over a database holding 6 rankings of 3 prompts; runs go to tmp_path; always stopped."""
    db = tmp_path / "studio.duckdb"
    store = Store(db)
    rank_items(store, 6, prompts=3)
    save_settings(store, {"ready_per_annotator": 0})  # no background sampling: this test trains
    store.close()  # the server process must be the only one holding the file
    env = {"RLHF_STUDIO_MODEL": str(tiny_model_dir), "RLHF_STUDIO_RUNS": str(tmp_path / "runs")}
    with running_app(db, env) as (url, process):
        yield url, db, process


@pytest.mark.browser
def test_launch_watch_and_pick_a_reward_model(server, tiny_model_dir):
    from playwright.sync_api import expect, sync_playwright

    url, db, process = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{url}/train")
            form = page.get_by_test_id("stForm").first
            form.get_by_role("textbox", name="…or another model (folder or hub id)").fill(str(tiny_model_dir))
            form.get_by_role("spinbutton", name="Batch size").fill("2")
            form.get_by_role("spinbutton", name="Max length").fill("32")
            form.get_by_role("spinbutton", name="Epochs").fill("1")  # not the step-based default: one pass
            form.get_by_role("button", name="Check and launch").click()
            expect(page.get_by_text("Queued as job 1.")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("rlhf-studio train-rm --backbone")).to_be_visible()
            page.screenshot(path=TRAIN_SCREENSHOT, full_page=True)

            page.goto(f"{url}/jobs?job=1")
            expect(page.get_by_text("Job 1: train-rm — done")).to_be_visible(timeout=120_000)
            expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("step 2 / 2")).to_be_visible()  # 4 training rankings, batches of 2, 1 epoch
            page.screenshot(path=SCREENSHOT, full_page=True)

            page.goto(f"{url}/registry")
            page.get_by_test_id("stSelectbox").filter(has_text="Model").click()
            page.get_by_role("option", name=re.compile(r"^rm-")).click()
            page.get_by_role("button", name="Use for suggestions").click()
            expect(page.get_by_text("New responses will be scored by rm-")).to_be_visible(timeout=30_000)
        finally:
            browser.close()

    stop(process)  # before opening the database here: DuckDB lets one process hold it
    store = Store(db)
    try:
        [reward] = list_models(store, "reward")
        [base] = list_models(store, "base")
        settings = load_settings(store)
    finally:
        store.close()
    assert reward["name"].startswith("rm-") and reward["parent_id"] == base["id"]
    assert base["name"] == str(tiny_model_dir) and 0 <= reward["metrics"]["val/accuracy"] <= 1
    assert reward["config"]["batch_size"] == 2 and settings["suggestion_model"] == reward["name"]
