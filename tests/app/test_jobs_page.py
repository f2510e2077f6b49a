"""Jobs page: the job table, one job's progress, metric plots and log tail, and cancelling a queued job."""

import json
import os
import time

import pytest

from data import jobs


@pytest.fixture
def jobs_studio(studio, monkeypatch):
    monkeypatch.setenv("RLHF_STUDIO_MAX_JOBS", "0")  # queued jobs stay queued
    return studio


def finished_reward_job(store, tmp_path) -> int:
    """A train-rm job that ended well, with the files rm/train.py leaves: config, data split, metrics, log."""
    run = tmp_path / "runs" / "rm-1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"backbone": "default", "epochs": 2, "batch_size": 2}))
    (run / "data.json").write_text(json.dumps({"train_ranking_ids": [1, 2, 3, 4]}))
    records = [
        {"event": "train", "epoch": 1, "step": 1, "train/loss": 0.7},
        {"event": "epoch", "epoch": 1, "step": 2, "train/loss": 0.65, "val/loss": 0.6, "val/accuracy": 0.5},
        {"event": "epoch", "epoch": 2, "step": 4, "train/loss": 0.4, "val/loss": 0.5, "val/accuracy": 1.0},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    (run / "summary.json").write_text(json.dumps(records[-1] | {"val/pairs": 6, "val/rankings": 2}))
    log = tmp_path / "runs" / "rm-1.log"
    log.write_text("$ rlhf-studio train-rm\nepoch 1/2: 100%\rreward model run: rm-1\n")
    job_id = jobs.add_job(store, "train-rm", ["train-rm", "--epochs", "2"], str(run), str(log))
    jobs.mark_running(store, job_id, 123)
    jobs.mark_finished(store, job_id, "done", 0)
    return job_id


def test_job_page_shows_progress_plots_and_log(jobs_studio, tmp_path):
    job_id = finished_reward_job(jobs_studio.store, tmp_path)
    at = jobs_studio.open("jobs")
    table = at.dataframe[0].value
    assert table["job"].tolist() == [job_id] and table["status"].tolist() == ["✅ done"]
    assert at.code[0].value == "rlhf-studio train-rm --epochs 2"
    assert at.get("progress")[0].proto.text == "step 4 / 4"
    [chart] = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["facet"]["field"] == "metric"
    assert "reward model run: rm-1" in at.code[1].value and "\r" not in at.code[1].value
    # The kept epoch's accuracy with its count and Wilson interval (6/6: 0.61 to 1), and a warning: 6 pairs is few.
    assert any(
        m.value == "**Accuracy on held-out rankings** (kept epoch, 2): 100% (95% CI 61%–100%, 6 pairs from 2 rankings)"
        for m in at.markdown
    )
    assert at.warning[0].value.startswith("Only 6 pairs from 2 rankings: too few to tell this accuracy from chance")
    assert not [b for b in at.button if b.label == "Cancel job"]  # a finished job has nothing to cancel


def test_cancel_a_queued_job_and_the_choice_survives_a_refresh(jobs_studio, tmp_path):
    first = finished_reward_job(jobs_studio.store, tmp_path)
    queued = jobs.add_job(jobs_studio.store, "train-rm", ["train-rm"], str(tmp_path / "r2"), str(tmp_path / "r2.log"))
    at = jobs_studio.open("jobs")
    assert at.selectbox(key="jobs_pick").value == queued  # the newest job is followed by default
    assert at.query_params["job"] == str(queued)
    assert "No metrics yet" in at.caption[-2].value
    jobs_studio.click(at, "Cancel job")
    assert jobs.get_job(jobs_studio.store, queued)["status"] == "cancelled"
    assert at.error[0].value == "cancelled by the user"

    at = jobs_studio.open("jobs")
    at.selectbox(key="jobs_pick").set_value(first).run()
    refreshed = jobs_studio.open()  # a refresh opens the page from its URL, ?job=ID included
    refreshed.query_params["job"] = str(first)
    refreshed.switch_page("views/jobs.py").run()
    assert refreshed.selectbox(key="jobs_pick").value == first


def test_no_jobs_yet(jobs_studio):
    assert "No jobs yet" in jobs_studio.open("jobs").info[0].value


def test_after_a_restart_a_job_whose_process_died_is_failed_with_its_log(jobs_studio, tmp_path):
    log = tmp_path / "gone.log"
    log.write_text("$ rlhf-studio train-rm\nepoch 1/1:  50%\n")
    job_id = jobs.add_job(jobs_studio.store, "train-rm", ["train-rm"], str(tmp_path / "gone"), str(log))
    jobs.mark_running(jobs_studio.store, job_id, os.getpid())  # a live pid, but not a job wrapper: no job runs
    jobs_studio.open("jobs")  # the app starts its job runner, which settles the table within a tick
    deadline = time.monotonic() + 20
    while jobs.get_job(jobs_studio.store, job_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    job = jobs.get_job(jobs_studio.store, job_id)
    assert (job["status"], job["error"]) == ("failed", "the process died (killed or out of memory)")
    at = jobs_studio.open("jobs")
    assert at.error[0].value == "the process died (killed or out of memory)"
    assert "epoch 1/1:  50%" in at.code[1].value
