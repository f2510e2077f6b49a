"""Kill the process that holds the database with SIGKILL mid-submissions: every acknowledged ranking survives,
and so does every annotator's answer submitted with one."""

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
    from data.demonstrations import Demonstration
    from data.store import Store

    store = Store(sys.argv[1])
    with_answers = sys.argv[2:] == ["answers"]
    lock = threading.Lock()

    def annotate(worker):
        annotator = annotation.ensure_annotator(store, f"w{worker}")
        for n in range(10_000):
            item = annotation.claim_next_item(store, annotator)
            if item is None:
                return
            token = f"{worker}-{n}"
            groups = [[i] for i in item.response_ids]
            answer = Demonstration(f"answer {token}", item.response_ids[-1]) if with_answers else None
            annotation.submit_ranking(
                store, annotator, item.batch_id, groups, submission_token=token, demonstration=answer
            )
            with lock:
                print("ACK", token, flush=True)

    threads = [threading.Thread(target=annotate, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)


def run_until_killed(path, *args: str) -> list[str]:
    """Run the stand-in app until 150 submissions are acknowledged, SIGKILL it, return the acknowledged tokens."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path), *args], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
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
    return acknowledged


def test_acknowledged_rankings_survive_sigkill(tmp_path):
    path = tmp_path / "studio.duckdb"
    store = Store(path)
    fill_items(store, 600)
    store.close()
    acknowledged = run_until_killed(path)

    reopened = Store(path)  # replays the write-ahead log; must open cleanly
    stored = [row[0] for row in reopened.query("SELECT submission_token FROM rankings")]
    assert len(stored) == len(set(stored)), "a submission was stored twice"
    assert set(acknowledged) <= set(stored), "an acknowledged submission was lost"
    assert reopened.query("SELECT count(*) FROM rankings WHERE ranking = []") == [(0,)]
    reopened.close()


def test_acknowledged_answers_survive_sigkill_with_their_rankings(tmp_path):
    path = tmp_path / "studio.duckdb"
    store = Store(path)
    fill_items(store, 600)
    store.close()
    acknowledged = run_until_killed(path, "answers")

    reopened = Store(path)
    stored = dict(reopened.query("SELECT submission_token, id FROM rankings"))
    answers = reopened.query(
        "SELECT k.submission_token, r.text, k.ranking[2] = [h.response_id] FROM human_responses h "
        "JOIN rankings k ON k.id = h.ranking_id JOIN responses r ON r.id = h.response_id"
    )
    assert set(acknowledged) <= set(stored), "an acknowledged submission was lost"
    assert sorted(token for token, _, _ in answers) == sorted(stored), "a ranking without its answer, or two"
    assert all(text == f"answer {token}" and placed for token, text, placed in answers)
    assert reopened.query("SELECT count(*) FROM responses WHERE model = 'human'") == [(len(stored),)]
    reopened.close()
