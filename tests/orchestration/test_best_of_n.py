"""Best-of-N: N samples per prompt, the reward model's best kept, written as an SFT set that train-sft reads."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from core.models import load_causal_lm
from data.store import Store
from orchestration.best_of_n import BestOfN, best_of_n, pick_best, write_sft_set
from orchestration.cli import main
from policy.sft import load_demonstrations
from rm.score import RewardScorer


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_model_dir, tmp_path_factory):
    """A tiny random one-output reward model over the tiny LM's config and tokenizer: it scores, just not well."""
    folder = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(1)
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    load_causal_lm(str(tiny_model_dir), "cpu")[1].save_pretrained(folder)
    return folder


def test_the_best_is_the_highest_reward_and_never_an_empty_response():
    assert pick_best(["a", "b", "c"], [0.1, 0.7, 0.7]) == 1  # the first of equals
    assert pick_best(["", "b"], [5.0, -1.0]) == 1
    assert pick_best([" ", ""], [1.0, 2.0]) is None
    assert BestOfN(1, "p", ["", ""], [0.0, 0.0]).kept is None


def test_best_of_n_keeps_the_reward_models_best_sample(tiny_model_dir, tiny_reward_model, tmp_path):
    model, tokenizer = load_causal_lm(str(tiny_model_dir), "cpu")
    scorer = RewardScorer.from_run(tiny_reward_model, "cpu")
    prompts = [(1, "Say hello."), (2, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
                                       {"role": "user", "content": "Count to three."}])]  # fmt: skip
    results = best_of_n(model, tokenizer, scorer, prompts, n=4, max_new_tokens=8, seed=0, prompts_per_call=2)

    for result, (_, prompt) in zip(results, prompts, strict=True):
        assert len(result.responses) == len(result.rewards) == 4
        rescored = scorer.score([prompt] * 4, result.responses).tolist()
        assert result.rewards == pytest.approx(rescored, abs=1e-4)
        nonempty = [i for i, text in enumerate(result.responses) if text.strip()]
        assert result.best == max(nonempty, key=lambda i: rescored[i])

    path = tmp_path / "best.jsonl"
    kept = [result for result in results if result.kept is not None]
    assert write_sft_set(results, path) == len(kept)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(row["source"] == "best-of-4" and row["messages"][-1]["role"] == "assistant" for row in rows)
    assert [row["completion"] for row in load_demonstrations(path)] == [result.kept for result in kept]


def test_sample_best_of_writes_an_sft_set_and_stores_nothing(tiny_model_dir, tiny_reward_model, tmp_path, capsys):
    db = tmp_path / "studio.duckdb"
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\nSay hello.\nCount to three.\nName a fruit.\n")
    assert main(["--db", str(db), "import-prompts", str(prompts)]) == 0
    output = tmp_path / "sft" / "best.parquet"
    command = ["--db", str(db), "sample", "--best-of", "3", "--reward-model", str(tiny_reward_model),
               "--model", str(tiny_model_dir), "--prompts", "2", "--max-new-tokens", "6", "--seed", "0",
               "--device", "cpu", "--output", str(output)]  # fmt: skip
    assert main(command) == 0
    assert "best-of-3 responses to" in capsys.readouterr().out
    demonstrations = load_demonstrations(output)
    assert [row["prompt"] for row in demonstrations] == [
        [{"role": "user", "content": "Say hello."}], [{"role": "user", "content": "Count to three."}]
    ][: len(demonstrations)]  # fmt: skip
    store = Store(db)
    assert store.query("SELECT count(*) FROM responses") == [(0,)]
    store.close()

    assert main(["--db", str(db), "sample", "--best-of", "3", "--output", str(output)]) == 2
    assert "--best-of needs --reward-model" in capsys.readouterr().err
