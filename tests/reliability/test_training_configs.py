"""Training configs that cannot work fail at once with a clear message, and leave no run folder behind."""

import json
import os
import subprocess
import sys

import pytest

from data.prompts import add_prompts
from data.store import Store

OFFLINE = os.environ | {"HF_HUB_OFFLINE": "1"}  # as on a machine without the hub: no request is even tried


def studio(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args], capture_output=True, text=True, env=OFFLINE, cwd=cwd
    )


@pytest.fixture
def workdir(tmp_path):
    store = Store(tmp_path / "studio.duckdb")
    add_prompts(store, ["Say hi.", "Name a colour."], "test")
    store.close()
    pairs = [{"prompt": p, "chosen": "Hi!", "rejected": "No."} for p in ("Say hi.", "Name a colour.")]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    (tmp_path / "empty.jsonl").write_text("")
    return tmp_path


def assert_refused(result, message, run_dir):
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_missing_reward_model_run(workdir):
    run = workdir / "grpo-run"
    result = studio("--db", "studio.duckdb", "train-policy", "--algo", "grpo", "--reward-model", "runs/none",
                    "--output-dir", str(run), cwd=workdir)  # fmt: skip
    assert_refused(result, "'runs/none' is neither a run folder nor a recorded reward-model run", run)


def test_unknown_model_id_while_offline(workdir):
    run = workdir / "rm-run"
    result = studio("train-rm", "--backbone", "nobody/no-such-model", "--pairs", "pairs.jsonl",
                    "--validation-fraction", "0", "--output-dir", str(run), cwd=workdir)  # fmt: skip
    assert_refused(result, "cannot load model 'nobody/no-such-model'", run)


def test_dataset_with_no_pairs(workdir):
    run = workdir / "dpo-run"
    result = studio("train-policy", "--algo", "dpo", "--pairs-file", "empty.jsonl", "--output-dir", str(run),
                    cwd=workdir)  # fmt: skip
    assert_refused(result, "empty.jsonl holds no pairs", run)
