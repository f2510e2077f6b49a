"""DPO reads conversational pairs (TRL conversational, HH, our export) and feeds the chat template over the history."""

import json

import datasets
import pytest

from core.chat import PromptTooLong
from policy.pairs import load_pairs, tokenize_pairs

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Apple."},
    {"role": "user", "content": "Another?"},
]
TRL_ROWS = [
    {"prompt": CONVERSATION, "chosen": [{"role": "assistant", "content": "A pear."}],
     "rejected": [{"role": "assistant", "content": "No."}]},
    {"prompt": [{"role": "user", "content": "Say hi."}], "chosen": [{"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "assistant", "content": "Bye."}]},
]  # fmt: skip


def template(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)


def test_dpo_token_ids_are_the_chat_template_then_the_response(tmp_path, tokenizer):
    path = tmp_path / "pairs.parquet"
    datasets.Dataset.from_list(TRL_ROWS).to_parquet(str(path))
    pairs = load_pairs(str(path))
    assert pairs[0]["chosen"] == "A pear." and pairs[1]["prompt"] == [{"role": "user", "content": "Say hi."}]
    first, second = tokenize_pairs(tokenizer, pairs, max_length=512, max_prompt_tokens=512)
    assert first["prompt_ids"] == template(tokenizer, CONVERSATION)
    assert first["chosen_ids"] == tokenizer("A pear.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert second["prompt_ids"] == template(tokenizer, [{"role": "user", "content": "Say hi."}])


def test_hh_pairs_and_hh_prompts_become_turns(tmp_path, tokenizer):
    hh = "\n\nHuman: Name a fruit.\n\nAssistant: Apple.\n\nHuman: Another?\n\nAssistant:"
    rows = [{"chosen": hh + " A pear.", "rejected": hh + " No."}]
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    [pair] = load_pairs(str(path)).to_list()
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == (CONVERSATION[1:], "A pear.", "No.")
    [pair] = load_pairs([{"prompt": hh, "chosen": "A pear.", "rejected": "No."}]).to_list()
    assert pair["prompt"] == CONVERSATION[1:]  # never one user turn holding "Human:" and "Assistant:"


def test_bad_conversations_and_unfitting_prompts_are_refused_by_row(tokenizer):
    bad = [TRL_ROWS[0] | {"prompt": CONVERSATION[:3]}]
    with pytest.raises(ValueError, match="row 0: .*ends with an assistant turn"):
        load_pairs(bad)
    pairs = load_pairs([TRL_ROWS[0] | {"prompt_id": 42}])
    with pytest.raises(PromptTooLong, match="prompt 42: its last user turn alone"):
        tokenize_pairs(tokenizer, pairs, max_length=64, max_prompt_tokens=4)


def test_trl_conversational_pairs_train_dpo(tmp_path, tiny_model_dir):
    from policy.config import DPOConfig
    from policy.dpo import train_dpo

    rows = [TRL_ROWS[0] | {"prompt": CONVERSATION[:3] + [{"role": "user", "content": f"Q{i}?"}]} for i in range(4)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = DPOConfig(model=str(tiny_model_dir), pairs_file=str(path), output_dir=str(tmp_path / "dpo"),
                       lora_rank=8, batch_prompts=2, epochs=1, max_length=128, device="cpu", log_every=1)  # fmt: skip
    run_dir = train_dpo(config)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if "losses/policy_loss" in r]
