"""Child processes that must stop when we are told to stop: the app under `serve`, a run under `accelerate launch`."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from core.allocator import mimalloc_loaded, with_mimalloc
from core.layouts import LAUNCHED_ENV

STOP_GRACE_S = 30  # seconds a child may take to stop after a signal before it is killed


def run_forwarding_signals(command: list[str], env: dict, announce: str | None = None) -> int:
    """Run a child (the app, a launcher), pass SIGTERM and SIGINT on to it, and return its status once it has stopped.

    Without this, `kill -TERM` ended only this process and left Streamlit serving and holding the database, and
    Ctrl-C printed a KeyboardInterrupt traceback. Either signal goes on as SIGTERM: Streamlit installs its handler
    only after it opens its port, and a SIGINT in between (seen on a busy machine) cancelled asyncio's main task and
    left the server running, while an early SIGTERM simply ends the process. A child still running STOP_GRACE_S
    after the signal is killed. The handlers are in place before the child starts and before `announce` is printed,
    so no signal falls between the two.
    """
    child = None
    stop_asked = threading.Event()

    def stop():
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            timer = threading.Timer(STOP_GRACE_S, lambda: child.poll() is None and child.kill())
            timer.daemon = True
            timer.start()

    def forward(_signum, _frame):
        stop_asked.set()
        stop()

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        child = subprocess.Popen(command, env=env)
        if stop_asked.is_set():  # a signal came while the child was being started
            stop()
        if announce:
            print(announce, flush=True)
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status if status >= 0 else 128 - status  # killed by signal N: the shell's 128 + N


def relaunch_under_accelerate(config_file: Path, argv: list[str]) -> int:
    """Run this same `rlhf-studio` command under `accelerate launch --config_file FILE`; return its exit status.

    The launched processes see LAUNCHED_ENV and train instead of launching again. The app's jobs go through here
    too, so a job cancelled from the Jobs page (SIGTERM) stops every process of the run.
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    command += ["-m", "orchestration.cli", *argv]
    print("$ accelerate launch --config_file", config_file, "-m orchestration.cli", *argv, flush=True)
    return run_forwarding_signals(command, os.environ | {LAUNCHED_ENV: "1"})


def rerun_with_mimalloc() -> None:
    """Replace this process with the same command on mimalloc (`core.allocator`), before it loads any model; return
    only where it runs on mimalloc already, cannot, or is told not to (`RLHF_STUDIO_ALLOCATOR=glibc`)."""
    env = with_mimalloc(os.environ)
    if env is None or mimalloc_loaded():
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
