"""Benchmark: a team in real browsers. N annotators sign in at the same moment from one address, then rank.

One `rlhf-studio serve` over a fresh database of pre-sampled items (K hand-written responses each, so no model
runs and the sampler stays idle), one annotator account per session, and one headless Chromium with a browser
session (its own cookies and connection) per annotator, all on this machine: as an office behind one address.
Every session presses Sign in at the same moment with the right password, then ranks M items as fast as the page
allows (no reading time). Reports:
- sign-in refusals (right passwords refused, and how many annotators were refused at least once),
- Submit to next item: from the press until the page shows the new count and the next item, settled (p50/p95/max),
- items per minute over the whole team, and the server's CPU seconds per Submit (the serve process and its
  children, less what the same open sessions cost while idle), and script runs of the page per item,
- stored vs acknowledged: rankings in the database after the server stopped, against those each page showed.

    python bench/annotators.py                                 # 12 annotators x 5 items, K=4
    python bench/annotators.py --annotators 20 --items 5
"""

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from core.generation import Sample
from data import annotation, users
from data.prompts import add_prompts
from data.settings import save_settings
from data.store import Store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
APP_ROOT = '[data-testid="stApp"]'
SIGN_IN_TRIES = 5  # refusals after which a session gives up signing in
IDLE_SECONDS = 5.0  # the server's CPU with every session open and nobody pressing anything, measured this long
RESPONSE = (
    "Answer {n}: start with the question itself, then the one fact that settles it, then an example a reader can "
    "check. Keep it short; a list helps when there are several steps.\n\n- first step\n- second step\n- done"
)
# Presses "Sign in" at a wall-clock moment (ms since the epoch), in every session at once.
PRESS_SIGN_IN_AT = """at => setTimeout(
    () => [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Sign in').click(),
    Math.max(0, at - Date.now()))"""
# Notes when the page's script starts running (Streamlit marks its root "running"): a press got its answer.
COUNT_RUNS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (window.__studioObserver) window.__studioObserver.disconnect();
    window.__studioRuns = 0;
    window.__studioObserver = new MutationObserver(() => {
        if (app.getAttribute('data-test-script-state') === 'running') window.__studioRuns += 1;
    });
    window.__studioObserver.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
# Every script run starts with a new-session message naming the main script; back-to-back runs (a rerun) show as
# one stretch of "running" on the page, so runs are counted from the connection instead.
RUN_STARTED = b"main.py"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=12)
    parser.add_argument("--items", type=int, default=5, help="items each annotator ranks")
    parser.add_argument("--k", type=int, default=4, help="responses per item")
    parser.add_argument("--port", type=int, default=8599)
    return parser.parse_args()


def prepare(db: Path, names: list[str], items: int, k: int) -> None:
    """Store enough pre-sampled items for everyone, one annotator account per name, and an idle sampler."""
    store = Store(db)
    add_prompts(store, [f"Question {i}: how would you explain this to a newcomer?" for i in range(items)], "bench")
    for i, (prompt_id,) in enumerate(store.query("SELECT id FROM prompts ORDER BY id")):
        samples = [Sample(RESPONSE.format(n=f"{i}.{j}"), "eos", 48) for j in range(k)]
        annotation.add_batch(store, prompt_id, "bench", {"k": k}, samples)
    save_settings(store, {"k": k, "ready_per_annotator": 0})
    for name in names:
        users.add_user(store, name, "annotator", f"{name} password")
    store.close()


def start_server(db: Path, port: int) -> subprocess.Popen:
    """Start `rlhf-studio serve` on the database and wait until it listens."""
    command = [sys.executable, "-m", "orchestration.cli", "--db", str(db), "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serve exited with code {server.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.2)
    raise TimeoutError(f"serve did not listen on port {port}")


def cpu_seconds(pid: int, leave_out: int | None = None) -> float:
    """Return the user + system CPU seconds process `pid` and its children (but `leave_out`'s tree) used so far."""
    root = psutil.Process(pid)
    skipped = set()
    if leave_out is not None:
        skipped = {leave_out} | {child.pid for child in psutil.Process(leave_out).children(recursive=True)}
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        if process.pid not in skipped:
            try:
                total += sum(process.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass  # a Chromium helper that ended meanwhile
    return total


def server_cpu_seconds(server: subprocess.Popen) -> float:
    """Return the CPU seconds the serve process and its children (Streamlit, the app) have used so far."""
    return cpu_seconds(server.pid)


def browser_cpu_seconds(server: subprocess.Popen) -> float:
    """Return the CPU seconds of this process's children but the server: Playwright's driver and Chromium."""
    return cpu_seconds(os.getpid(), leave_out=server.pid) - sum(psutil.Process().cpu_times()[:2])


class RunCounter:
    """Counts the script runs the pages' connections announce while `counting` is set."""

    def __init__(self):
        self.counting, self.runs = False, 0

    def watch(self, page) -> None:
        page.on("websocket", lambda socket: socket.on("framereceived", self.received))

    def received(self, frame) -> None:
        if self.counting and isinstance(frame, bytes) and RUN_STARTED in frame:
            self.runs += 1


async def settled(page) -> None:
    from playwright.async_api import expect

    await expect(page.locator(APP_ROOT)).to_have_attribute("data-test-script-state", "notRunning", timeout=120_000)


async def open_sign_in(browser, url: str, name: str, runs: RunCounter):
    """Return a page of a fresh browser session with the sign-in form filled in for `name`."""
    page = await (await browser.new_context()).new_page()
    runs.watch(page)
    await page.goto(url)
    await page.get_by_role("textbox", name="User name").fill(name)
    await page.get_by_role("textbox", name="Password").fill(f"{name} password")
    await settled(page)
    return page


async def signed_in(page, press_at_ms: int) -> tuple[list[str], bool]:
    """Press Sign in at the given moment, and again after each refusal's wait; return the refusals, and whether
    the session got in (a session refused SIGN_IN_TRIES times gives up)."""
    from playwright.async_api import expect

    refusals = []
    annotate, error = page.get_by_role("heading", name="Annotate"), page.get_by_test_id("stAlertContentError")
    while len(refusals) < SIGN_IN_TRIES:
        await page.evaluate(COUNT_RUNS)
        await page.evaluate(PRESS_SIGN_IN_AT, press_at_ms)
        timeout_ms = max(0, press_at_ms - time.time() * 1000) + 120_000
        await page.wait_for_function("window.__studioRuns > 0", timeout=timeout_ms)  # this press's run, not the last
        await settled(page)
        await expect(annotate.or_(error).first).to_be_visible(timeout=120_000)
        await settled(page)
        if await annotate.count():
            return refusals, True
        refusals.append(await error.first.inner_text())
        wait = re.search(r"try again in (\d+) s", refusals[-1])
        if wait is None:
            raise RuntimeError(f"sign-in failed: {refusals[-1]}")
        press_at_ms = int(time.time() * 1000) + 1000 * int(wait.group(1))
    return refusals, False


async def rank(page, items: int, k: int) -> tuple[list[float], int]:
    """Rank `items` items (A best, then B, ...); return each Submit's latency and how many the page acknowledged."""
    from playwright.async_api import expect

    latencies, acknowledged = [], 0
    count = page.get_by_test_id("stMetric").filter(has_text="You ranked").get_by_test_id("stMetricValue")
    for done in range(1, items + 1):
        last = chr(ord("A") + k - 1)
        await expect(page.get_by_role("radiogroup", name=f"Rank of {last}")).to_be_visible(timeout=120_000)
        await settled(page)
        for index in range(k):
            group = page.get_by_role("radiogroup", name=f"Rank of {chr(ord('A') + index)}")
            await group.get_by_text(str(index + 1), exact=True).click()
        pressed = time.perf_counter()
        await page.get_by_role("button", name="Submit ranking").click()
        await expect(count).to_have_text(str(done), timeout=120_000)  # read back from the database
        await settled(page)
        latencies.append(time.perf_counter() - pressed)
        acknowledged += 1
    return latencies, acknowledged


async def run_team(url: str, server: subprocess.Popen, names: list[str], items: int, k: int) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            runs = RunCounter()
            pages = [await open_sign_in(browser, url, name, runs) for name in names]
            press_at_ms = int(time.time() * 1000) + 1000
            sign_in_cpu = server_cpu_seconds(server)
            outcomes = await asyncio.gather(*(signed_in(page, press_at_ms) for page in pages))
            sign_in_cpu = server_cpu_seconds(server) - sign_in_cpu
            refusals = [page_refusals for page_refusals, _ in outcomes]
            names = [name for name, (_, got_in) in zip(names, outcomes, strict=True) if got_in]
            pages = [page for page, (_, got_in) in zip(pages, outcomes, strict=True) if got_in]
            idle_cpu = server_cpu_seconds(server)
            await asyncio.sleep(IDLE_SECONDS)
            idle_cpu_per_s = (server_cpu_seconds(server) - idle_cpu) / IDLE_SECONDS
            cpu, browsers_cpu, started = server_cpu_seconds(server), browser_cpu_seconds(server), time.perf_counter()
            runs.counting = True
            ranked = await asyncio.gather(*(rank(page, items, k) for page in pages))
            runs.counting = False
            seconds, cpu = time.perf_counter() - started, server_cpu_seconds(server) - cpu
            browsers_cpu = browser_cpu_seconds(server) - browsers_cpu
        finally:
            await browser.close()
    latencies = sorted(latency for page_latencies, _ in ranked for latency in page_latencies) or [float("nan")]
    submits = max(1, sum(count for _, count in ranked))
    return {
        "refusals": sum(len(r) for r in refusals),
        "annotators_refused": sum(bool(r) for r in refusals),
        "server_cpu_s_per_sign_in": sign_in_cpu / len(outcomes),  # the password check and the first Annotate page
        "signed_in": len(pages),
        "refusal_messages": sorted({re.sub(r"\d+ s", "N s", m) for r in refusals for m in r}),
        "acknowledged": {name: count for name, (_, count) in zip(names, ranked, strict=True)},
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": statistics.quantiles(latencies, n=20, method="inclusive")[-1],
        "latency_max_s": latencies[-1],
        "items_per_minute": 60 * submits / seconds,
        "server_cpu_s_per_submit": (cpu - idle_cpu_per_s * seconds) / submits,
        "server_idle_cpu_share": idle_cpu_per_s,
        "browsers_cpu_s_per_submit": browsers_cpu / submits,
        "script_runs_per_item": runs.runs / submits,
    }


def stored_rankings(db: Path) -> tuple[dict[str, int], int]:
    """Return rankings per annotator name in the database, and how many (annotator, item) pairs were stored twice."""
    store = Store(db)
    try:
        per_name = dict(
            store.query(
                "SELECT a.name, count(*) FROM rankings k JOIN annotators a ON a.id = k.annotator_id GROUP BY a.name"
            )
        )
        (twice,) = store.query(
            "SELECT count(*) FROM (SELECT 1 FROM rankings GROUP BY batch_id, annotator_id HAVING count(*) > 1)"
        )[0]
    finally:
        store.close()
    return per_name, twice


def main() -> int:
    args = parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    names = [f"annotator{n:02d}" for n in range(args.annotators)]
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.duckdb"
        prepare(db, names, args.annotators * (args.items + 1), args.k)
        server = start_server(db, args.port)
        try:
            result = asyncio.run(run_team(f"http://127.0.0.1:{args.port}", server, names, args.items, args.k))
        finally:
            server.terminate()  # serve passes it on to Streamlit, which releases the database
            server.wait(timeout=60)
        stored, twice = stored_rankings(db)
    acknowledged = result.pop("acknowledged")
    result |= {
        "annotators": args.annotators,
        "items_each": args.items,
        "k": args.k,
        "stored": sum(stored.values()),
        "acknowledged": sum(acknowledged.values()),
        "stored_equals_acknowledged_per_annotator": stored == {n: c for n, c in acknowledged.items() if c},
        "stored_twice": twice,
    }
    print(
        f"| annotators | right passwords refused | annotators refused | stored vs acknowledged | "
        f"Submit -> next item p50 / p95 / max | items per minute | server CPU per Submit | script runs per item |\n"
        f"| {args.annotators} | {result['refusals']} | {result['annotators_refused']} of {args.annotators} "
        f"({result['signed_in']} signed in) | "
        f"{result['stored']} vs {result['acknowledged']}, {twice} twice | {result['latency_p50_s']:.2f} / "
        f"{result['latency_p95_s']:.2f} / {result['latency_max_s']:.2f} s | {result['items_per_minute']:.0f} | "
        f"{1000 * result['server_cpu_s_per_submit']:.0f} ms | {result['script_runs_per_item']:.1f} |"
    )
    print(json.dumps(result))
    return 0 if result["stored_equals_acknowledged_per_annotator"] and not twice else 1


if __name__ == "__main__":
    sys.exit(main())
