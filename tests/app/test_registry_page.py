"""Models page: base models, reward-model and policy runs with lineage and metrics; any of them picked for annotation."""

import json

from data.registry import record_model
from data.settings import load_settings


def test_registry_lists_lineage_and_closes_the_loop(studio, tiny_model_dir, tmp_path):
    store = studio.store
    base = record_model(store, "base", "default", "default")
    (tmp_path / "rm-1").mkdir()
    (tmp_path / "rm-1" / "data.json").write_text(json.dumps({
        "source": f"rankings:{tmp_path}/rm-1/inputs/rankings.jsonl", "train_ranking_ids": [1, 2, 3],
        "validation_ranking_ids": [4],
    }))  # fmt: skip
    reward = record_model(store, "reward", "rm-1", str(tmp_path / "rm-1"), base, {"backbone": "default"},
                          {"val/accuracy": 0.75, "val/loss": 0.52, "val/pairs": 40, "val/rankings": 10})  # fmt: skip
    record_model(store, "base", "all-MiniLM-L6-v2", "all-MiniLM-L6-v2")  # an encoder reward backbone
    record_model(store, "policy", "ppo-1", str(tmp_path / "ppo-1"), reward,
                 {"algo": "ppo", "prompts_file": "/runs/ppo-1/inputs/prompts.jsonl"}, {"objective/reward_mean": 1.5})  # fmt: skip
    at = studio.open("registry")
    table = at.dataframe[0].value.set_index("name")
    assert list(table.index) == [
        str(tiny_model_dir),
        "ppo-1",
        "all-MiniLM-L6-v2",
        "rm-1",
        "default",
    ]  # the generator in use, then runs
    assert table.loc["ppo-1", "parent"] == "rm-1" and table.loc["rm-1", "parent"] == "default"
    assert table.loc["ppo-1", "data"] == "prompts file: /runs/ppo-1/inputs/prompts.jsonl"
    assert table.loc["rm-1", "data"] == "store rankings: 3 train / 1 held-out rankings"
    # 30 of 40 pairs: Wilson 95% interval 0.598 to 0.858
    assert table.loc["rm-1", "held-out accuracy"] == "75% (95% CI 60%–86%, 40 pairs from 10 rankings)"
    assert table.loc["ppo-1", "objective/reward_mean"] == 1.5

    at.selectbox(key="registry_pick").set_value("all-MiniLM-L6-v2").run()
    assert not [b for b in at.button if b.label == "Use as generator"]  # an encoder writes word salad
    assert any("BertModel, not a causal language model" in c.value for c in at.caption)

    at.selectbox(key="registry_pick").set_value("ppo-1").run()
    studio.click(at, "Use as generator")
    assert load_settings(store)["generator_model"] == str(tmp_path / "ppo-1")

    at.selectbox(key="registry_pick").set_value("rm-1").run()
    assert not [b for b in at.button if b.label == "Use as generator"]  # a reward model cannot generate
    studio.click(at, "Use for suggestions")
    assert load_settings(store)["suggestion_model"] == "rm-1"
    assert "suggestions from: **rm-1**" in at.caption[0].value
