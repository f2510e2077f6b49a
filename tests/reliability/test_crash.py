"""Kill the process that holds the database with SIGKILL mid-submissions: every acknowledged ranking survives."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from data.store import Store
from tests.reliability.helpers import fill_items

# Stands in for the app process: annotator threads submit through one Store and print an acknowledgement
# only after the transaction committed, as the app answers the browser only after `submit_ranking` returns.
SERVER = textwrap.dedent(
    """
    import sys, threading
    from data import annotation
    from data.store import Store

    store = Store(sys.argv[1])
    lock = threading.Lock()

    def annotate(worker):
        annotator = annotation.ensure_annotator(store, f"w{worker}")
        for n in range(10_000):
            item = annotation.claim_next_item(store, annotator)
            if item is None:
                return
            token = f"{worker}-{n}"
            groups = [[i] for i in item.response_ids]
            annotation.submit_ranking(store, annotator, item.batch_id, groups, submission_token=token)
            with lock:
                print("ACK", token, flush=True)

    threads = [threading.Thread(target=annotate, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)


def test_acknowledged_rankings_survive_sigkill(tmp_path):
    path = tmp_path / "studio.duckdb"
    store = Store(path)
    fill_items(store, 600)
    store.close()

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    acknowledged = []
    deadline = time.monotonic() + 120
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        line = server.stdout.readline()
        if line.startswith("ACK "):
            acknowledged.append(line.split()[1])
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    acknowledged += [line.split()[1] for line in server.stdout.read().splitlines() if line.startswith("ACK ")]
    assert len(acknowledged) >= 150, "the stand-in app did not get going"

    reopened = Store(path)  # replays the write-ahead log; must open cleanly
    stored = [row[0] for row in reopened.query("SELECT submission_token FROM rankings")]
    assert len(stored) == len(set(stored)), "a submission was stored twice"
    assert set(acknowledged) <= set(stored), "an acknowledged submission was lost"
    assert reopened.query("SELECT count(*) FROM rankings WHERE ranking = []") == [(0,)]
    reopened.close()
