"""Train page: a blocked launch shows its problems and queues nothing; a good one queues a job and shows the command."""

import pytest

from data import annotation, jobs
from data.registry import record_model


@pytest.fixture
def train_studio(studio, tmp_path, monkeypatch):
    """The app with job starts paused (queued jobs stay queued) and runs written under tmp_path."""
    monkeypatch.setenv("RLHF_STUDIO_MAX_JOBS", "0")
    monkeypatch.setenv("RLHF_STUDIO_RUNS", str(tmp_path / "runs"))
    return studio


def rank(studio, count: int, prompts: int) -> None:
    """Rank `count` hand-made items over `prompts` prompts, each by its own annotator: B first, A and C tied."""
    for number in range(count):
        _, (a, b, c) = studio.add_item(f"Question {number % prompts}?", ["No idea.", f"It is {number}.", "Maybe."])
        annotator = annotation.ensure_annotator(studio.store, f"annotator {number}")
        item = annotation.claim_next_item(studio.store, annotator)
        annotation.submit_ranking(studio.store, annotator, item.batch_id, [[b], [a, c]])


def launch_reward_model(studio, at, backbone: str, **numbers):
    next(t for t in at.text_input if t.key == "train_rm_backbone_typed").set_value(backbone)
    for name, value in numbers.items():
        next(n for n in at.number_input if n.key == f"train_rm_{name}").set_value(value)
    next(b for b in at.button if b.label == "Check and launch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_blocked_launch_shows_every_problem_and_queues_nothing(train_studio, tmp_path):
    rank(train_studio, 3, prompts=1)
    at = train_studio.open("train")
    needs = next(c.value for c in at.caption if c.value.startswith("Needs at least 4 ranked items"))
    assert needs.endswith("The store has 3 (0 all-tied rankings do not count).")
    assert "rank 25 or more" in needs  # 5 held-out rankings at the default 20% held out
    assert [i.value for i in at.info][0].startswith("only 3 ranked item(s)")  # said before any launch
    at = launch_reward_model(train_studio, at, str(tmp_path / "no-such-model"))
    problems = [e.value for e in at.error]
    assert problems[0].startswith("only 3 ranked item(s) with at least one comparison")
    assert "cover 1 prompt(s)" in problems[1]
    assert "does not exist" in problems[2]
    assert jobs.list_jobs(train_studio.store) == [] and not at.success


def test_good_launch_queues_a_job_and_shows_its_command(train_studio, tiny_model_dir):
    rank(train_studio, 4, prompts=2)
    at = launch_reward_model(train_studio, train_studio.open("train"), str(tiny_model_dir), epochs=2, batch_size=2)
    assert not at.error, [e.value for e in at.error]
    [job] = jobs.list_jobs(train_studio.store)
    assert job["status"] == "queued" and job["kind"] == "train-rm"
    assert at.success[0].value.startswith(f"Queued as job {job['id']}")
    command = at.code[0].value
    assert command.startswith(f"rlhf-studio train-rm --backbone {tiny_model_dir} --epochs 2 --batch-size 2 ")
    assert "--rankings " in command and job["run_dir"] in command


def test_policy_form_asks_for_a_reward_model_then_launches_ppo(train_studio, tiny_model_dir):
    rank(train_studio, 4, prompts=2)
    at = train_studio.open("train")
    assert any("No reward-model run yet" in info.value for info in at.info)
    policy_launch = [b for b in at.button if b.label == "Check and launch"][1]
    policy_launch.click().run()
    assert "reward-model run" in at.error[0].value and jobs.list_jobs(train_studio.store) == []

    record_model(train_studio.store, "reward", "rm-tiny", str(tiny_model_dir))  # a causal LM: loads, has weights
    at = train_studio.open("train")
    next(t for t in at.text_input if t.key == "train_policy_model_typed").set_value(str(tiny_model_dir))
    next(n for n in at.number_input if n.key == "train_ppo_steps").set_value(2)
    [b for b in at.button if b.label == "Check and launch"][1].click().run()
    assert not at.error, [e.value for e in at.error]
    [job] = jobs.list_jobs(train_studio.store)
    assert job["argv"][:3] == ["train-policy", "--algo", "ppo"]
    assert at.code[-1].value.startswith("rlhf-studio train-policy --algo ppo --model ")
    assert f"--reward-model {tiny_model_dir}" in at.code[-1].value


def test_dpo_form_shows_its_own_settings(train_studio):
    at = train_studio.open("train")
    assert "KL coef" in {n.label for n in at.number_input}  # PPO is the first choice
    at.radio(key="train_algo").set_value("dpo").run()
    labels = {n.label for n in at.number_input}
    assert {"Beta", "Label smoothing", "Epochs"} <= labels and "KL coef" not in labels
    [b for b in at.button if b.label == "Check and launch"][1].click().run()
    assert "DPO needs at least 4 chosen/rejected pairs; the rankings give 0" in [e.value for e in at.error]


def test_a_run_too_big_for_the_memory_is_blocked_and_its_estimate_shown(train_studio, tiny_model_dir, monkeypatch):
    from orchestration import preflight

    rank(train_studio, 4, prompts=2)
    monkeypatch.setattr(preflight, "available_memory", lambda _device: 2**20)  # 1 MiB free
    at = train_studio.open("train")
    next(c for c in at.checkbox if c.key == "train_rm_gradient_checkpointing").uncheck()
    at = launch_reward_model(train_studio, at, str(tiny_model_dir))
    [problem] = [e.value for e in at.error]
    assert problem.startswith("not enough memory on cpu (one process): a step needs about")
    assert "reward model weights" in problem and "0.00 GiB are free" in problem
    assert any(c.value.startswith("Memory estimate per device: about") for c in at.caption)
    assert jobs.list_jobs(train_studio.store) == []
