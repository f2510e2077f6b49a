"""`rlhf-studio serve` stops the app it started: SIGTERM or Ctrl-C ends Streamlit too, with no traceback, whether the
app is serving or still starting (where a SIGINT once left Streamlit running on a busy machine)."""

import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from data.store import Store
from tests.browser.serving import REPO, free_port, wait_for_port


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def read_line_starting(stream, prefix: bytes, seconds: float = 60) -> bytes:
    """Return the first line of `stream` starting with `prefix`, waiting for it at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([stream], [], [], deadline - time.monotonic())[0]:
            line = stream.readline()
            if line.startswith(prefix) or not line:
                return line
    raise TimeoutError(f"no line starting {prefix!r} within {seconds} s")


@pytest.mark.parametrize("when", ["serving", "starting"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_serve_stops_streamlit_and_frees_the_database(tmp_path, signum, when):
    db = tmp_path / "studio.duckdb"
    Store(db).close()
    port = free_port()
    command = [sys.executable, "-m", "orchestration.cli", "--db", str(db), "serve", "--port", str(port)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    serve = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        if when == "serving":
            wait_for_port(port, serve)
        else:  # the announcement comes once Streamlit is started, while it is still importing
            assert read_line_starting(serve.stdout, b"RLHF Studio on http").startswith(b"RLHF Studio on http")
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
