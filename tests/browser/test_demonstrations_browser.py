"""In a real browser: an annotator edits a response and submits; the Data page counts one demonstration; an admin
launches an SFT run from the Train page, the job queue runs it, and the Models page offers it as a generator."""

import re
from pathlib import Path

import pytest

from core.generation import Sample
from data import annotation
from data.demonstrations import human_answers
from data.prompts import add_prompts
from data.registry import list_models
from data.settings import load_settings, save_settings
from data.store import Store
from tests.browser.serving import launch_chromium, rerun_and_settle, running_app, settled, stop, wait_until_stored

SCREENSHOT = "/tmp/demonstration.png"


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """The app over one hand-made item of two responses (no background sampling); runs go to tmp_path."""
    db = tmp_path / "studio.duckdb"
    store = Store(db)
    add_prompts(store, ["Name a colour."], "test")
    samples = [Sample("Red.", "eos", 2), Sample("Bleu.", "eos", 2)]
    annotation.add_batch(store, store.query("SELECT id FROM prompts")[0][0], "hand", {}, samples)
    save_settings(store, {"ready_per_annotator": 0})
    store.close()  # the server process must be the only one holding the file
    env = {"RLHF_STUDIO_MODEL": str(tiny_model_dir), "RLHF_STUDIO_RUNS": str(tmp_path / "runs")}
    with running_app(db, env) as (url, process):
        yield url, db, process


def rank(page, ranks: dict[str, str]) -> None:
    for label, value in ranks.items():
        page.get_by_role("radiogroup", name=f"Rank of {label}").get_by_text(value, exact=True).click()


@pytest.mark.browser
def test_edit_a_response_count_it_train_sft_and_offer_it_as_generator(server, tiny_model_dir):
    from playwright.sync_api import expect, sync_playwright

    url, db, process = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(url)
            expect(page.get_by_role("radiogroup", name="Rank of B")).to_be_visible(timeout=60_000)
            settled(page)
            rank(page, {"A": "2", "B": "1"})
            page.get_by_text("Edit this response").nth(1).click()  # B's box
            box = page.get_by_role("textbox", name="Your edit of B")
            expect(box).to_have_value("Bleu.")
            box.fill("Blue.")
            rerun_and_settle(page, lambda: page.get_by_role("button", name="Submit ranking").click())
            wait_until_stored(page, 1)

            page.goto(f"{url}/data")
            demonstrations = page.get_by_test_id("stMetric").filter(has_text="Demonstrations")
            expect(demonstrations).to_contain_text("1", timeout=60_000)

            page.goto(f"{url}/train")
            page.get_by_role("tab", name="Policy").click()
            page.get_by_role("radiogroup", name="Algorithm").get_by_text("SFT", exact=True).click()
            form = page.get_by_test_id("stForm").filter(has_text="SFT settings")
            expect(form).to_be_visible(timeout=30_000)
            settled(page)
            form.get_by_role("textbox", name="…or another model (folder or hub id)").fill(str(tiny_model_dir))
            form.get_by_role("spinbutton", name="Max length").fill("96")  # the chat template adds ~30 tokens
            form.get_by_role("spinbutton", name="Epochs").fill("1")
            form.get_by_role("button", name="Check and launch").click()
            expect(page.get_by_text("Queued as job 1.")).to_be_visible(timeout=60_000)

            page.goto(f"{url}/jobs?job=1")
            expect(page.get_by_text("Job 1: train-policy — done")).to_be_visible(timeout=240_000)

            page.goto(f"{url}/registry")
            page.get_by_test_id("stSelectbox").filter(has_text="Model").click()
            page.get_by_role("option", name=re.compile(r"^sft-")).click()
            page.get_by_role("button", name="Use as generator").click()
            expect(page.get_by_text("New items to rank will be sampled from sft-")).to_be_visible(timeout=30_000)
            page.screenshot(path=SCREENSHOT, full_page=True)
        finally:
            browser.close()

    stop(process)  # before opening the database here: DuckDB lets one process hold it
    store = Store(db)
    try:
        [answer] = human_answers(store)
        [run] = list_models(store, "policy")
        settings = load_settings(store)
    finally:
        store.close()
    assert (answer["text"], answer["parent_text"]) == ("Blue.", "Bleu.")
    assert run["name"].startswith("sft-") and run["config"]["algo"] == "sft"
    assert settings["generator_model"] == run["path"]
    trained_on = Path(run["config"]["sft_file"]).read_text()
    assert '"Blue."' in trained_on and "Bleu." not in trained_on  # the annotator's answer, ranked best
