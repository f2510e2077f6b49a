"""The reward model reads a conversation as the chat template over its history (decoders) or as a plain
transcript (encoders), and trains on TRL conversational pairs."""

import json

import torch

from core.chat import plain_layout
from core.models import FAST_ENCODER
from rm.model import encode, load_backbone

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Apple."},
    {"role": "user", "content": "Another?"},
]


def test_decoder_ids_are_the_chat_template_then_the_response_then_eos(tiny_model_dir):
    torch.manual_seed(0)
    _, tokenizer = load_backbone(str(tiny_model_dir))
    template = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_dict=False)
    response = tokenizer("A pear.", add_special_tokens=False)["input_ids"]
    assert encode(tokenizer, CONVERSATION, "A pear.", 512, last_token=True) == template + response + [
        tokenizer.eos_token_id
    ]
    # Too long: the oldest exchange goes, the system message and the last user turn stay.
    kept = [CONVERSATION[0], CONVERSATION[3]]
    short = tokenizer.apply_chat_template(kept, add_generation_prompt=True, return_dict=False)
    budget = len(short) + len(response) + 1
    assert encode(tokenizer, CONVERSATION, "A pear.", budget, last_token=True) == short + response + [
        tokenizer.eos_token_id
    ]


def test_encoder_reads_the_plain_transcript():
    _, tokenizer = load_backbone(FAST_ENCODER)
    ids = encode(tokenizer, CONVERSATION, "A pear.", 512, last_token=False)
    assert ids == tokenizer(plain_layout(CONVERSATION, generation_prompt=False), "A pear.")["input_ids"]
    assert "User: Name a fruit." in plain_layout(CONVERSATION)


def test_trl_conversational_pairs_train_the_reward_model(tmp_path, tiny_model_dir):
    from rm.config import RewardConfig
    from rm.train import train_reward_model

    rows = [
        {
            "prompt": CONVERSATION[:-1] + [{"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": "A short, kind answer."}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for i in range(8)
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = RewardConfig(backbone=str(tiny_model_dir), pairs=str(pairs), output_dir=str(tmp_path / "rm"),
                          epochs=1, batch_size=4, lora_rank=0, device="cpu")  # fmt: skip
    result = train_reward_model(config)
    assert (result.run_dir / "normalization.json").exists()
    assert json.loads((result.run_dir / "data.json").read_text())["train_comparisons"] > 0
