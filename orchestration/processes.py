"""Child processes that must stop when we are told to stop: the app under `serve`, a run under `accelerate launch`."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from core.layouts import LAUNCHED_ENV


def run_forwarding_signals(command: list[str], env: dict) -> int:
    """Run a child (the app, a launcher), pass SIGTERM and SIGINT on to it, and return its status once it has stopped.

    Without this, `kill -TERM` ended only this process and left Streamlit serving and holding the database, and
    Ctrl-C printed a KeyboardInterrupt traceback.
    """
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
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
