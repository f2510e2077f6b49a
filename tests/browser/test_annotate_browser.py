"""In a real browser: the app serves an item sampled by the background thread, a ranking with a tie is stored."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.prompts import add_prompts
from data.settings import save_settings
from data.store import Store

REPO = Path(__file__).parents[2]
SCREENSHOT = Path("/tmp/annotate.png")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"streamlit did not listen on port {port} within {seconds} s")


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    """`streamlit run app/main.py` on a free port over a fresh database with two prompts; always terminated."""
    db = tmp_path / "studio.duckdb"
    store = Store(db)
    add_prompts(store, ["Write a *short* greeting.", "Name three fruits."], source="test")
    save_settings(store, {"k": 3, "max_new_tokens": 12, "ready_per_annotator": 1})
    store.close()  # the server process must be the only one holding the file
    port = free_port()
    env = os.environ | {"RLHF_STUDIO_DB": str(db), "RLHF_STUDIO_MODEL": str(tiny_model_dir)}
    command = [
        sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", db, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.browser
def test_rank_in_the_browser_and_find_the_ties_in_duckdb(server):
    from playwright.sync_api import expect, sync_playwright

    url, db, process = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS + ["--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            # The sampler loads the tiny model and samples in the background; the page polls until an item is ready.
            expect(page.get_by_role("radiogroup", name="Rank of C")).to_be_visible(timeout=120_000)
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
