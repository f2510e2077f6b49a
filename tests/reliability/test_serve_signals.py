"""`rlhf-studio serve` stops the app it started: SIGTERM or Ctrl-C ends Streamlit too, with no traceback."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from data.store import Store
from tests.browser.serving import REPO, free_port, wait_for_port


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_serve_stops_streamlit_and_frees_the_database(tmp_path, signum):
    db = tmp_path / "studio.duckdb"
    Store(db).close()
    port = free_port()
    command = [sys.executable, "-m", "orchestration.cli", "--db", str(db), "serve", "--port", str(port)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    serve = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for_port(port, serve)
        serve.send_signal(signum)  # to `serve` alone, as `kill` does; its own group is not signalled
        _, stderr = serve.communicate(timeout=60)
        assert not listening(port), "Streamlit kept serving after `serve` exited"
        assert "Traceback" not in stderr.decode(), stderr.decode()
        Store(db).close()  # nothing holds the file any more
    finally:
        try:
            os.killpg(serve.pid, signal.SIGKILL)  # the group started above: `serve` and anything it left
        except ProcessLookupError:
            pass
        serve.wait()
