"""Verifiable rewards in the app: prompts show their columns, the Train page launches a weighted mix with the
columns in the job's inputs, and the Jobs page plots each reward component beside the total."""

import json

import pytest

from data import jobs
from data.importers import import_prompts


@pytest.fixture
def queued_studio(studio, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_STUDIO_MAX_JOBS", "0")  # queued jobs stay queued
    monkeypatch.setenv("RLHF_STUDIO_RUNS", str(tmp_path / "runs"))
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {n} + 1?", "answer": str(n + 1)}) + "\n" for n in range(8)))
    import_prompts(studio.store, path)
    return studio


def test_the_prompts_page_shows_each_prompts_columns(queued_studio):
    at = queued_studio.open("prompts")
    assert not at.exception
    table = at.dataframe[0].value
    assert table["columns"].tolist()[:2] == ["answer=1", "answer=2"]


def test_the_train_page_launches_grpo_with_weighted_rewards(queued_studio, tiny_model_dir):
    at = queued_studio.open("train")
    at.radio(key="train_algo").set_value("grpo").run()
    next(t for t in at.text_input if t.key == "train_policy_model_typed").set_value(str(tiny_model_dir))
    mix = "policy.rewards:exact_answer=1,policy.rewards:format_answer_line=0.5"
    at.text_input(key="train_policy_rewards").set_value(mix)
    next(n for n in at.number_input if n.key == "train_grpo_steps").set_value(2)
    [b for b in at.button if b.label == "Check and launch"][1].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [job] = jobs.list_jobs(queued_studio.store)
    assert "--rewards policy.rewards:exact_answer=1,policy.rewards:format_answer_line=0.5" in at.code[-1].value
    rows = [json.loads(line) for line in open(f"{job['run_dir']}/inputs/prompts.jsonl")]
    assert rows[0] == {"prompt": "What is 0 + 1?", "answer": "1"}


def test_a_bad_rewards_string_is_refused_before_anything_is_queued(queued_studio, tiny_model_dir):
    at = queued_studio.open("train")
    at.radio(key="train_algo").set_value("grpo").run()
    at.text_input(key="train_policy_rewards").set_value("policy.rewards:exact_answer=heavy")
    [b for b in at.button if b.label == "Check and launch"][1].click().run()
    assert "weight 'heavy' is not a number" in at.error[0].value
    assert jobs.list_jobs(queued_studio.store) == []


def test_the_jobs_page_plots_each_reward_component(queued_studio, tmp_path):
    run = tmp_path / "runs" / "grpo-1"
    run.mkdir(parents=True)
    mix = "policy.rewards:exact_answer=1,policy.rewards:format_answer_line=0.5"
    (run / "config.json").write_text(json.dumps({"algo": "grpo", "steps": 2, "rewards": mix}))
    records = [
        {"step": step, "objective/reward_mean": 0.1 * step, "rewards/exact_answer/mean": 0.1 * step,
         "rewards/format_answer_line/mean": 0.0, "charts/response_length": 10.0}
        for step in (1, 2)
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    log = tmp_path / "runs" / "grpo-1.log"
    log.write_text("$ rlhf-studio train-policy\n")
    job_id = jobs.add_job(queued_studio.store, "train-policy", ["train-policy", "--algo", "grpo"], str(run), str(log))
    jobs.mark_running(queued_studio.store, job_id, 123)
    jobs.mark_finished(queued_studio.store, job_id, "done", 0)
    at = queued_studio.open("jobs")
    [chart] = at.get("vega_lite_chart")
    shown = str(chart.proto)  # the spec and its data (inline or as Arrow datasets)
    for metric in ("objective/reward_mean", "rewards/exact_answer/mean", "rewards/format_answer_line/mean"):
        assert metric in shown, metric
