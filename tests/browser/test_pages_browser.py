"""In a real browser: ranking by keyboard, the truncation marker, code that stays readable, only generators offered,
and a page that fetches nothing from outside the machine."""

from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.generation import Sample
from data import annotation
from data.prompts import add_prompts
from data.registry import record_model
from data.settings import save_settings
from data.store import Store
from tests.browser.serving import launch_chromium, running_app, settled, stop

SCREENSHOT = Path("/tmp/annotate-keys.png")
LONG_LINE = "values = [" + ", ".join(str(n) for n in range(60)) + "]"
RESPONSES = [
    # A: a long code line, and a block "closed" by a fence with an info string, which markdown would not close
    f"Here is the code:\n```python\n{LONG_LINE}\nif values:\n    print(len(values))\n```python\nProse after the code.",
    # B: cut by the token limit mid-sentence
    "The first step is to",
    # C: a plain answer
    "A short, complete answer.",
]

# The rank picker's label of the card an element sits in: the nearest ancestor holding a radio group.
CARD_OF = """element => {
    let node = element;
    while (node && !node.querySelector('[role="radiogroup"]')) node = node.parentElement;
    return node.querySelector('[role="radiogroup"]').getAttribute("aria-label");
}"""


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """The app over one hand-made item (K=3; B cut off by the token limit) and a recorded encoder backbone."""
    db = tmp_path / "studio.duckdb"
    store = Store(db)
    add_prompts(store, ["Show me some Python."], source="test")
    samples = [Sample(RESPONSES[0], "eos", 60), Sample(RESPONSES[1], "length", 5), Sample(RESPONSES[2], "eos", 6)]
    annotation.add_batch(store, store.query("SELECT id FROM prompts")[0][0], "hand", {}, samples)
    record_model(store, "base", "all-MiniLM-L6-v2", "all-MiniLM-L6-v2")  # as a reward run's backbone records it
    save_settings(store, {"k": 3, "ready_per_annotator": 0})  # nothing sampled: the item above is the one shown
    store.close()  # the server process must be the only one holding the file
    with running_app(db, {"RLHF_STUDIO_MODEL": str(tiny_model_dir)}) as (url, process):
        yield url, db, process


def off_machine(requests: list[str]) -> list[str]:
    return [url for url in requests if urlparse(url).hostname not in ("127.0.0.1", "localhost", None)]


@pytest.mark.browser
def test_rank_by_keyboard_see_cut_responses_and_only_generators(server):
    from playwright.sync_api import expect, sync_playwright

    url, db, process = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1100})
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url)
            expect(page.get_by_role("radiogroup", name="Rank of C")).to_be_visible(timeout=60_000)
            settled(page)  # keys and clicks below go to the final form, not one a rerun is replacing

            # Toolbar: no Deploy button or developer menu; the favicon is served by the app itself.
            expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
            expect(page.get_by_test_id("stMainMenu")).to_have_count(0)
            icon = page.locator("link[rel*='icon']").first.get_attribute("href")
            assert icon and urlparse(icon).hostname in (None, "127.0.0.1"), icon

            # B was cut by the token limit, and says so; A and C ended on their own.
            marker = page.get_by_text("✂ Cut off")
            expect(marker).to_have_count(1)
            assert marker.evaluate(CARD_OF) == "Rank of B"
            # A's block ends where the model meant it: the prose after it is prose, the indentation is kept.
            expect(page.locator("pre").get_by_text("Prose after the code.")).to_have_count(0)
            expect(page.get_by_text("Prose after the code.", exact=True)).to_be_visible()  # not its edit box
            code = page.locator("pre").filter(has_text="print(len(values))")
            assert "    print(len(values))" in code.inner_text()
            # The long line wraps inside its card instead of being cut off.
            fits = code.evaluate("pre => pre.scrollWidth <= pre.clientWidth + 1")
            assert fits, "the long code line overflows its card"

            # The shortcuts are shown; Enter with nothing ranked names the missing ones beside Submit.
            expect(page.get_by_text("Keyboard: type the ranks of A, B, C")).to_be_visible()
            page.get_by_text("Give each response a rank").click()  # focus on the page, not a field
            page.keyboard.press("Enter")
            missing = page.get_by_text("missing: A, B, C.")
            expect(missing).to_be_visible(timeout=30_000)
            submit = page.get_by_role("button", name="Submit ranking")
            missing_box, submit_box = missing.bounding_box(), submit.bounding_box()
            assert abs(missing_box["y"] - submit_box["y"]) < submit_box["height"] * 2  # on the Submit row

            # 3, 1, 2 rank A, B, C in order; "a" then 2 re-ranks A, tying it with C; Enter submits.
            for key in ["3", "1", "2", "a", "2"]:
                page.keyboard.press(key)
            for label, rank in {"A": "2", "B": "1", "C": "2"}.items():
                expect(
                    page.get_by_role("radiogroup", name=f"Rank of {label}").get_by_role("radio", name=rank)
                ).to_be_checked()
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.keyboard.press("Enter")
            expect(page.get_by_text("Ranking saved.")).to_be_visible(timeout=30_000)

            # Playground offers causal language models only: not the encoder recorded as a reward backbone.
            page.goto(f"{url}/playground")
            page.get_by_test_id("stSelectbox").filter(has_text="Model A").click()
            options = page.get_by_role("option")
            expect(options.first).to_be_visible(timeout=30_000)
            names = [option.inner_text() for option in options.all()]
            assert "default" in names and "all-MiniLM-L6-v2" not in names, names
            assert not off_machine(requests), off_machine(requests)
        finally:
            browser.close()

    stop(process)
    store = Store(db)
    try:
        [(ranking, batch_id)] = store.query("SELECT ranking, batch_id FROM rankings")
        position = dict(store.query("SELECT id, position FROM responses WHERE batch_id = ?", [batch_id]))
    finally:
        store.close()
    assert [[position[i] for i in group] for group in ranking] == [[1], [0, 2]]  # B first, then A and C tied
