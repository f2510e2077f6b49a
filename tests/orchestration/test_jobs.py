"""The job runner: jobs finish, fail, die, get cancelled, queue one at a time, and survive an app restart."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from data import jobs
from data.prompts import add_prompts
from data.store import Store
from orchestration.jobs import JobRunner, _pid_alive, command_line, log_tail, new_run_dir, submit


@pytest.fixture
def job_db(tmp_path):
    """A separate database for the jobs to sample into: a job never opens the app's own file."""
    path = tmp_path / "job.duckdb"
    side = Store(path)
    add_prompts(side, [f"question {i}" for i in range(200)], "test")
    side.close()
    return path


def sample_job(store, job_db, tiny_model_dir, prompts: int, tokens: int) -> int:
    args = ["--prompts", str(prompts), "--model", str(tiny_model_dir), "--k", "2", "--max-new-tokens", str(tokens)]
    return submit(store, "sample", args, new_run_dir("sample"), global_args=["--db", str(job_db)])


def wait_for(store, job_id, runner, statuses, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runner.tick()
        job = jobs.get_job(store, job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stayed {job['status']}; log:\n{log_tail(job)}")


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_STUDIO_RUNS", str(tmp_path / "runs"))


def test_job_runs_to_done_and_reports(store, job_db, tiny_model_dir):
    finished = []
    runner = JobRunner(store, on_done=finished.append)
    job_id = sample_job(store, job_db, tiny_model_dir, prompts=1, tokens=4)
    job = wait_for(store, job_id, runner, ("done", "failed"))
    assert job["status"] == "done", log_tail(job)
    assert job["exit_code"] == 0 and "sampled 1 batches" in log_tail(job)
    assert [j["id"] for j in finished] == [job_id]
    assert command_line(job["argv"]).startswith("rlhf-studio --db ")
    assert Store(job_db).query("SELECT count(*) FROM batches") == [(1,)]


def test_failing_command_is_marked_failed_with_its_log(store, tmp_path):
    runner = JobRunner(store)
    job_id = jobs.add_job(store, "sample", ["--db", str(tmp_path / "x.duckdb"), "import-prompts", "missing.csv"],
                          str(tmp_path / "r"), str(tmp_path / "r.log"))  # fmt: skip
    job = wait_for(store, job_id, runner, ("done", "failed"))
    assert job["status"] == "failed" and job["exit_code"] == 2
    assert "missing.csv" in log_tail(job)


def test_killed_job_is_failed_and_cancel_stops_the_process(store, job_db, tiny_model_dir):
    runner = JobRunner(store, max_running=2)
    killed = sample_job(store, job_db, tiny_model_dir, prompts=200, tokens=200)
    cancelled = sample_job(store, job_db, tiny_model_dir, prompts=200, tokens=200)
    wait_for(store, killed, runner, ("running",))
    wait_for(store, cancelled, runner, ("running",))
    time.sleep(1)

    os.killpg(jobs.get_job(store, killed)["pid"], signal.SIGKILL)
    job = wait_for(store, killed, runner, ("done", "failed"))
    assert job["status"] == "failed" and "died" in job["error"]

    pid = jobs.get_job(store, cancelled)["pid"]
    runner.cancel(cancelled)
    assert jobs.get_job(store, cancelled)["status"] == "cancelled"
    assert not _pid_alive(pid)
    runner.tick()
    assert jobs.get_job(store, cancelled)["status"] == "cancelled"


def test_one_job_at_a_time_and_restart_reattaches(store, job_db, tiny_model_dir):
    first_runner = JobRunner(store)
    first = sample_job(store, job_db, tiny_model_dir, prompts=3, tokens=64)
    second = sample_job(store, job_db, tiny_model_dir, prompts=1, tokens=4)
    wait_for(store, first, first_runner, ("running",))
    assert jobs.get_job(store, second)["status"] == "queued"

    restarted = JobRunner(store)  # a new app process: it did not start the job, and re-attaches by pid
    restarted.tick()
    assert jobs.get_job(store, first)["status"] == "running"
    assert wait_for(store, first, restarted, ("done", "failed"))["status"] == "done"
    assert wait_for(store, second, restarted, ("done", "failed"))["status"] == "done"
    assert Path(jobs.get_job(store, second)["log_path"]).exists()


def test_a_job_cancelled_while_being_started_does_not_run(store, job_db, tiny_model_dir, monkeypatch):
    """Cancel lands between the runner reading the queue and starting the process: the process is stopped."""
    runner = JobRunner(store)
    job_id = sample_job(store, job_db, tiny_model_dir, prompts=200, tokens=200)
    started = []
    real_popen = subprocess.Popen

    def popen_then_cancel(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        started.append(child)
        runner.cancel(job_id)  # the user's click, racing the start
        return child

    monkeypatch.setattr(subprocess, "Popen", popen_then_cancel)
    runner.tick()
    assert jobs.get_job(store, job_id)["status"] == "cancelled"
    assert started and started[0].poll() is not None, "the cancelled job's process is still running"
