"""Start the real app (`streamlit run`) on a free localhost port, and headless Debian Chromium to look at it."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run",
]  # fmt: skip


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


@contextlib.contextmanager
def running_app(db: Path, env: dict | None = None):
    """Yield (url, process) of the app serving `db` on 127.0.0.1; the process is always stopped afterwards.

    Close every Store on `db` first: the server must be the only process holding the file.
    """
    port = free_port()
    full_env = os.environ | {"RLHF_STUDIO_DB": str(db)} | (env or {})
    command = [
        sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# Streamlit marks its root with the script's state ("running", "notRunning", ...). While a run is drawing, the
# previous run's elements stay on screen (marked stale): a click on them acts on a form that is about to vanish.
APP_ROOT = '[data-testid="stApp"]'
COUNT_RUNS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    window.__studioRuns = 0;
    new MutationObserver(() => {
        if (app.getAttribute('data-test-script-state') === 'running') window.__studioRuns += 1;
    }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""


def settled(page, timeout_ms: int = 60_000):
    """Wait until the app's script is not running: everything on screen belongs to the latest run."""
    from playwright.sync_api import expect

    expect(page.locator(APP_ROOT)).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout_ms)
    return page


def rerun_and_settle(page, action, timeout_ms: int = 60_000):
    """Do `action()` (a press that makes the app rerun), then wait until that rerun has started and finished."""
    settled(page, timeout_ms)
    page.evaluate(COUNT_RUNS)
    action()
    page.wait_for_function("window.__studioRuns > 0", timeout=timeout_ms)
    return settled(page, timeout_ms)


def wait_until_stored(page, count: int) -> None:
    """Wait until the page shows `count` rankings read back from the database, and has finished drawing."""
    from playwright.sync_api import expect

    you_ranked = page.get_by_test_id("stMetric").filter(has_text="You ranked")
    try:
        expect(you_ranked).to_contain_text(str(count), timeout=60_000)
    except AssertionError as error:
        shown = page.get_by_test_id("stAlertContentError").all_inner_texts()
        raise AssertionError(f"{error}\nerrors on the page: {shown}") from None
    settled(page)


def open_as_annotator(browser, url: str, name: str):
    """Return a page of a fresh browser session on the app, ranking under `name` (the no-login local mode)."""
    page = browser.new_context().new_page()
    page.goto(url)
    field = page.get_by_role("textbox", name="Annotator")
    field.fill(name)
    rerun_and_settle(page, lambda: field.press("Enter"))  # the page is now drawn for `name`, not "local"
    return page
