"""Launch training commands as background processes, one at a time, and keep the job table true.

The job table in DuckDB is the truth; processes are re-attached by pid after an app restart. A job's command
is the same `rlhf-studio ...` line a user could run by hand (or under `torchrun`/`accelerate launch`).
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.paths import runs_dir
from data import jobs
from data.store import Store

JOB_KINDS = ("train-rm", "train-policy", "sample")
_MARKER = "orchestration.jobrun"


def command_line(argv: list[str]) -> str:
    """Return the job's command as a user would type it."""
    return shlex.join(["rlhf-studio", *argv])


def new_run_dir(kind: str) -> Path:
    """Return a fresh, absolute run folder name for a job of this kind (not created yet)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (runs_dir() / f"{kind.removeprefix('train-')}-{stamp}-{time.monotonic_ns() % 10**6:06d}").resolve()


def submit(store: Store, kind: str, args: list[str], run_dir: Path, global_args: list[str] = ()) -> int:
    """Queue `rlhf-studio <global args> <kind> <args>` writing into run_dir, and return the job id.

    The job must not open the app's DuckDB file: DuckDB lets one process write a file, and the app holds it.
    So callers pass the job its data as files (exported rankings, pairs, prompts) inside run_dir, and the app
    records the finished run in the registry (`on_done`).
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {JOB_KINDS}")
    log_path = Path(run_dir).with_name(Path(run_dir).name + ".log")
    return jobs.add_job(store, kind, [*global_args, kind, *args], str(run_dir), str(log_path))


def _pid_alive(pid: int) -> bool:
    """Return whether pid is a live job wrapper (not a zombie, not a recycled pid of another program)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    stat = Path(f"/proc/{pid}/stat")
    if cmdline.exists():
        try:
            if stat.read_text().split(") ", 1)[1].startswith("Z"):
                return False
            return _MARKER in cmdline.read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class JobRunner:
    """Start queued jobs (at most `max_running` at once) and settle the ones whose process ended."""

    def __init__(self, store: Store, max_running: int = 1, on_done=None):
        self.store = store
        self.max_running = max_running
        self.on_done = on_done  # called with the job dict when a job ends well (to record its run)
        self._children: dict[int, subprocess.Popen] = {}

    def _exit_file(self, job: dict) -> Path:
        return Path(job["log_path"]).with_suffix(".exit")

    def settle(self) -> None:
        """Mark running jobs whose process is gone as done or failed (by the exit code they left, if any)."""
        for job in jobs.list_jobs(self.store, ("running",)):
            child = self._children.get(job["id"])
            if child is not None and child.poll() is None:
                continue
            if child is None and job["pid"] and _pid_alive(job["pid"]):
                continue  # started by an earlier app process and still going: re-attached
            self._children.pop(job["id"], None)
            exit_file = self._exit_file(job)
            if exit_file.exists():
                code = int(exit_file.read_text())
                error = None if code == 0 else f"exited with code {code}; see the log"
                jobs.mark_finished(self.store, job["id"], "done" if code == 0 else "failed", code, error)
                if code == 0 and self.on_done is not None:
                    self.on_done(job)
            else:
                jobs.mark_finished(self.store, job["id"], "failed", None, "the process died (killed or out of memory)")

    def start_queued(self) -> None:
        running = len(jobs.list_jobs(self.store, ("running",)))
        for job in sorted(jobs.list_jobs(self.store, ("queued",)), key=lambda j: j["id"]):
            if running >= self.max_running:
                return
            self._start(job)
            running += 1

    def _start(self, job: dict) -> None:
        log_path = Path(job["log_path"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", _MARKER, str(self._exit_file(job)), "--"]
        command += [sys.executable, "-m", "orchestration.cli", *job["argv"]]
        with open(log_path, "ab") as log:
            log.write(f"$ {command_line(job['argv'])}\n".encode())
            log.flush()
            child = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        if not jobs.mark_running(self.store, job["id"], child.pid):
            _stop_process_group(child.pid, child)  # cancelled between the queue read and the start
            return
        self._children[job["id"]] = child

    def tick(self) -> None:
        """Settle finished jobs, then start queued ones: call this periodically."""
        self.settle()
        self.start_queued()

    def cancel(self, job_id: int) -> None:
        """Stop a job: a queued one never starts; a running one gets SIGTERM, then SIGKILL after 10 s."""
        job = jobs.get_job(self.store, job_id)
        if job["status"] in jobs.FINISHED:
            return
        jobs.mark_finished(self.store, job_id, "cancelled", None, "cancelled by the user")
        if job["status"] == "running" and job["pid"]:
            _stop_process_group(job["pid"], self._children.pop(job_id, None))


def _stop_process_group(pid: int, child: subprocess.Popen | None, grace_seconds: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return
        if child is None and not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if child is not None:
        child.wait()


def log_tail(job: dict, lines: int = 40) -> str:
    """Return the last lines of a job's log (progress bars' carriage returns folded)."""
    path = Path(job["log_path"])
    if not path.exists():
        return ""
    text = path.read_bytes()[-200_000:].decode(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
