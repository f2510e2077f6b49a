"""Launch checks: each problem that would fail a job later is found before anything is queued; runs get recorded."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from core.chat import chat_prompt_ids
from core.generation import Sample
from core.models import FAST_ENCODER, fast_encoder_dir, load_tokenizer
from core.runs import read_metrics
from data import annotation, jobs, registry
from data.export import ranked_items
from data.prompts import add_prompts
from orchestration import follow, launch, preflight
from rm.config import RewardConfig


def rank_items(store, count: int, prompts: int | None = None) -> None:
    """Store `count` batches of 3 hand-written responses over `prompts` prompts; rank each B first, A = C."""
    prompts = prompts or count
    add_prompts(store, [f"Question {n}: what is {n} plus {n}?" for n in range(prompts)], "test")
    prompt_ids = [row[0] for row in store.query("SELECT id FROM prompts ORDER BY id")]
    already = store.query("SELECT count(*) FROM rankings")[0][0]
    for number in range(count):
        annotator = annotation.ensure_annotator(store, f"annotator {already + number}")  # one ranking per prompt each
        texts = ["No idea.", f"It is {2 * number}.", "Maybe five?"]
        samples = [Sample(text, "eos", 3) for text in texts]
        annotation.add_batch(store, prompt_ids[number % prompts], "hand", {}, samples)
        item = annotation.claim_next_item(store, annotator)
        ids = item.response_ids
        annotation.submit_ranking(store, annotator, item.batch_id, [[ids[1]], [ids[0], ids[2]]])


def item(prompt_id: int, groups: list[list[str]]) -> dict:
    return {"prompt_id": prompt_id, "prompt": "p", "ranked_responses": groups}


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_STUDIO_RUNS", str(tmp_path / "runs"))


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, tiny_model_dir):
    """A finished reward-model run folder as rm/train.py leaves it: model/ with a 1-output head and its tokenizer."""
    run = tmp_path_factory.mktemp("rm-run")
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(run / "model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / "model")
    (run / "config.json").write_text(json.dumps({"backbone": str(tiny_model_dir), "epochs": 1, "batch_size": 2}))
    return run


def test_rankings_need_four_compared_items_over_two_prompts():
    tied = item(1, [["a", "b"]])  # one tie group: no comparison
    assert preflight.check_rankings([item(1, [["a"], ["b"]]), item(2, [["a"], ["b"]]), tied, tied]) == [
        "only 2 ranked item(s) with at least one comparison (all-tied rankings do not count); "
        "rank at least 4 on the Annotate page"
    ]
    [problem] = preflight.check_rankings([item(7, [["a"], ["b", "c"]])] * 4)
    assert "cover 1 prompt(s)" in problem
    assert preflight.check_rankings([item(n % 2, [["a"], ["b"]]) for n in range(4)]) == []
    assert preflight.check_pairs(3) and not preflight.check_pairs(4)
    assert preflight.check_prompts(0) and not preflight.check_prompts(1)


def test_model_checks_name_the_problem(tmp_path, tiny_model_dir):
    assert preflight.check_model(str(tiny_model_dir), online=False) == []
    [missing] = preflight.check_model(str(tmp_path / "nowhere"), online=False)
    assert "does not exist" in missing
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    [broken] = preflight.check_model(str(tmp_path / "broken"), online=False, role="backbone")
    assert broken.startswith("backbone") and "does not load as a model" in broken
    [offline] = preflight.check_model("nobody/no-such-model", online=False)
    assert "not in the local Hugging Face cache" in offline and "offline" in offline
    assert preflight.check_model("nobody/no-such-model", online=True) == []  # the job would download it


def test_reward_run_must_hold_a_loadable_model(tmp_path, reward_run):
    assert preflight.check_reward_run(str(reward_run)) == []
    assert "choose a reward-model run" in preflight.check_reward_run(None)[0]
    assert "does not exist" in preflight.check_reward_run(str(tmp_path / "gone"))[0]
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")  # training config only: the model never got saved
    [problem] = preflight.check_reward_run(str(tmp_path / "unfinished"))
    assert "lacks model weights" in problem and "did its training finish?" in problem


def test_tokenizer_warnings_flag_other_vocabularies_and_missing_chat_templates(tokenizer):
    encoder = AutoTokenizer.from_pretrained(fast_encoder_dir())
    assert preflight.check_tokenizer(tokenizer, "policy") == []
    assert preflight.tokenizer_warnings(tokenizer, tokenizer) == []
    [vocab, template] = preflight.tokenizer_warnings(encoder, tokenizer)
    assert "different tokenizers (30522 vs 49152 tokens)" in vocab
    assert "no chat template" in template


def test_parameter_count(default_model_dir):
    config = AutoConfig.from_pretrained(default_model_dir)
    assert preflight.count_parameters(config) == 134_515_008  # SmolLM2-135M's published size, counted on meta


def test_blocked_reward_model_launch_queues_nothing(store, tiny_model_dir, tmp_path):
    rank_items(store, 3)
    result = launch.launch_reward_model(store, {"backbone": str(tiny_model_dir)}, online=False)
    assert result.job_id is None and "only 3 ranked item(s)" in result.problems[0]
    result = launch.launch_reward_model(store, {"backbone": str(tiny_model_dir), "epochs": 0}, online=False)
    assert result.problems == ["epochs must be >= 1, got 0"]
    assert jobs.list_jobs(store) == [] and not (tmp_path / "runs").exists()


def test_too_big_a_batch_is_refused_for_memory(store, tiny_model_dir):
    rank_items(store, 4)
    result = launch.launch_reward_model(store, {"backbone": str(tiny_model_dir), "batch_size": 10**6}, online=False)
    assert result.job_id is None and result.problems[0].startswith("not enough memory on cpu")


def test_reward_model_launch_exports_rankings_and_queues_the_command(store, tiny_model_dir):
    rank_items(store, 4, prompts=2)
    result = launch.launch_reward_model(store, {"backbone": str(tiny_model_dir), "epochs": 2}, online=False)
    assert result.problems == [] and result.job_id is not None
    [job] = jobs.list_jobs(store)
    rankings = result.run_dir / "inputs" / "rankings.jsonl"
    assert job["argv"] == ["train-rm", "--backbone", str(tiny_model_dir), "--epochs", "2",
                           "--rankings", str(rankings), "--output-dir", str(result.run_dir)]  # fmt: skip
    assert result.command.startswith("rlhf-studio train-rm --backbone ")
    lines = [json.loads(line) for line in rankings.read_text().splitlines()]
    assert len(lines) == 4 and lines[0]["ranked_responses"] == [["It is 0."], ["No idea.", "Maybe five?"]]


def test_policy_launch_checks_the_reward_run_and_exports_prompts(store, tiny_model_dir, reward_run):
    rank_items(store, 4, prompts=2)
    values = {"model": str(tiny_model_dir), "steps": 3, "batch_prompts": 2}
    blocked = launch.launch_policy(store, "ppo", values, online=False)
    assert blocked.job_id is None and "reward-model run" in blocked.problems[0]
    chosen = {"reward_model": str(reward_run), "adaptive_kl": True, "accelerate_config": "zero3-8gpu"}
    result = launch.launch_policy(store, "ppo", values | chosen, False)
    assert result.problems == [], result.problems
    argv = jobs.get_job(store, result.job_id)["argv"]
    assert argv[:3] == ["train-policy", "--algo", "ppo"] and "--adaptive-kl" in argv
    # The job runs `rlhf-studio train-policy ... --accelerate-config zero3-8gpu`, which relaunches itself under
    # `accelerate launch` (tests/policy/test_sharded.py runs that path for real).
    assert argv[argv.index("--accelerate-config") + 1] == "zero3-8gpu"
    unknown = launch.launch_policy(store, "ppo", values | chosen | {"accelerate_config": "zero9"}, False)
    assert "neither a shipped layout" in unknown.problems[0] and unknown.job_id is None
    assert argv[argv.index("--reward-model") + 1] == str(reward_run)
    prompts_file = argv[argv.index("--prompts-file") + 1]
    assert [json.loads(line)["prompt"] for line in open(prompts_file)] == [
        "Question 0: what is 0 plus 0?",
        "Question 1: what is 1 plus 1?",
    ]


def test_reward_model_memory_check_counts_one_process_share_of_the_batch(store, tiny_model_dir, monkeypatch):
    """A reward-model batch is split between the processes, so each device holds 1/8 of its activations. A decoder
    packs each ranking in one row (the prompt once, then its K responses); an encoder runs a row per response."""
    rank_items(store, 4, prompts=2)
    shapes = []
    monkeypatch.setattr(preflight, "check_memory", lambda _config, shape: shapes.append(shape) or ([], [], None))
    for backbone, layout in ((str(tiny_model_dir), None), (str(tiny_model_dir), "zero3-8gpu"), (FAST_ENCODER, None)):
        values = {"backbone": backbone, "batch_size": 16, "accelerate_config": layout}
        preflight.reward_model_checks(RewardConfig(**values), ranked_items(store), online=False)
    assert [(shape.sequences, shape.packed) for shape in shapes] == [(16, True), (2, True), (16 * 3, False)]  # K = 3
    tokenizer = load_tokenizer(tiny_model_dir)
    pieces = [
        (
            len(chat_prompt_ids(tokenizer, item["prompt"])),
            [
                len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
                for group in item["ranked_responses"]
                for text in group
            ],
        )  # fmt: skip
        for item in ranked_items(store)
    ]
    assert shapes[0].length == max(prompt + sum(answers) for prompt, answers in pieces)  # each answer with its EOS
    # each head's attention: the prompt over itself, each answer over the prompt and itself
    assert shapes[0].scores == max(prompt**2 + sum(n * (prompt + n) for n in answers) for prompt, answers in pieces)


def test_reward_model_launch_takes_a_layout(store, tiny_model_dir):
    rank_items(store, 4, prompts=2)
    values = {"backbone": str(tiny_model_dir), "accelerate_config": "zero3-8gpu"}
    result = launch.launch_reward_model(store, values, online=False)
    assert result.problems == [], result.problems
    argv = jobs.get_job(store, result.job_id)["argv"]
    # `train-rm --accelerate-config` relaunches under `accelerate launch` (tests/rm/test_sharded.py runs it).
    assert argv[argv.index("--accelerate-config") + 1] == "zero3-8gpu"


def test_dpo_needs_four_pairs(store, tiny_model_dir):
    rank_items(store, 1)  # one ranking of B over A and C: 2 pairs
    result = launch.launch_policy(store, "dpo", {"model": str(tiny_model_dir)}, online=False)
    assert result.problems == ["DPO needs at least 4 chosen/rejected pairs; the rankings give 2"]
    assert jobs.list_jobs(store) == []
    rank_items(store, 2)
    result = launch.launch_policy(store, "dpo", {"model": str(tiny_model_dir)}, online=False)
    argv = jobs.get_job(store, result.job_id)["argv"]
    assert len(open(argv[argv.index("--pairs-file") + 1]).readlines()) == 6


def write_run(run_dir, config: dict, records: list[dict], summary: dict | None = None):
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records) + '{"step": 9')
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))


def test_finished_runs_are_recorded_with_their_lineage(store, tmp_path):
    rm_dir, policy_dir = tmp_path / "rm-1", tmp_path / "ppo-1"
    write_run(rm_dir, {"backbone": "default", "epochs": 1}, [{"event": "epoch", "step": 2, "val/accuracy": 0.75}],
              summary={"val/accuracy": 0.75, "val/loss": 0.5})  # fmt: skip
    write_run(policy_dir, {"algo": "ppo", "model": "default", "reward_model": str(rm_dir), "steps": 2},
              [{"step": 1, "objective/kl": 0.1}, {"step": 2, "objective/reward_mean": 1.5}])  # fmt: skip
    rm_id = follow.record_finished_run(store, {"kind": "train-rm", "run_dir": str(rm_dir)})
    policy_id = follow.record_finished_run(store, {"kind": "train-policy", "run_dir": str(policy_dir)})
    reward_model, policy = registry.get_model(store, rm_id), registry.get_model(store, policy_id)
    assert (reward_model["kind"], reward_model["name"], reward_model["metrics"]) == (
        "reward", "rm-1", {"val/accuracy": 0.75, "val/loss": 0.5},
    )  # fmt: skip
    assert registry.get_model(store, reward_model["parent_id"])["name"] == "default"  # its base model, recorded
    assert (policy["kind"], policy["parent_id"], policy["config"]["algo"]) == ("policy", rm_id, "ppo")
    assert policy["metrics"] == {"step": 2, "objective/kl": 0.1, "objective/reward_mean": 1.5}  # every metric's last
    assert follow.record_finished_run(store, {"kind": "sample", "run_dir": str(tmp_path)}) is None


def test_progress_and_plotted_metrics_follow_metrics_jsonl(tmp_path):
    run = tmp_path / "rm-run"
    records = [{"event": "train", "step": 2, "train/loss": 0.6}, {"event": "epoch", "epoch": 1, "step": 3,
               "train/loss": 0.5, "val/accuracy": 0.5, "val/on_training_data": False}]  # fmt: skip
    write_run(run, {"epochs": 2, "batch_size": 2}, records)
    (run / "data.json").write_text(json.dumps({"train_ranking_ids": [1, 2, 3, 4, 5]}))
    assert follow.progress("train-rm", run, read_metrics(run)) == (0.5, "step 3 / 6")
    rows = follow.metric_rows(read_metrics(run), follow.plotted_metrics("train-rm", {}))
    assert rows == [
        {"step": 2, "metric": "train/loss", "value": 0.6},
        {"step": 3, "metric": "train/loss", "value": 0.5},
        {"step": 3, "metric": "val/accuracy", "value": 0.5},
    ]
    dpo = tmp_path / "dpo-run"
    write_run(dpo, {"algo": "dpo", "epochs": 2}, [{"step": 4, "epoch": 0.5, "losses/policy_loss": 0.69}])
    assert follow.progress("train-policy", dpo, read_metrics(dpo)) == (0.25, "epoch 0.50 / 2 (step 4)")


def test_config_flags_list_only_changed_fields():
    from policy.config import PPOConfig

    config = PPOConfig(output_dir="/runs/x", steps=5, adaptive_kl=True)
    assert launch.config_flags(config) == ["--steps", "5", "--output-dir", "/runs/x", "--adaptive-kl"]


def test_cuda_is_a_problem_only_without_a_gpu(tiny_model_dir):
    from policy.config import GRPOConfig

    problems, _, _ = preflight.check_memory(
        GRPOConfig(model=str(tiny_model_dir), device="cuda"), preflight.RunShape(0, 8)
    )
    assert problems == ([] if torch.cuda.is_available() else ["device 'cuda' was asked for but torch sees no GPU"])
