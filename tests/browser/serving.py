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


def open_as_annotator(browser, url: str, name: str):
    """Return a page of a fresh browser session on the app, ranking under `name` (the no-login local mode)."""
    page = browser.new_context().new_page()
    page.goto(url)
    field = page.get_by_role("textbox", name="Annotator")
    field.fill(name)
    field.press("Enter")
    page.wait_for_timeout(1500)  # let the rerun under the new name finish before ranking
    return page
