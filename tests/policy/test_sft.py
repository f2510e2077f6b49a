"""Supervised fine-tuning: the loss is TRL's completion-only loss, prompt tokens carry none, training lowers the
held-out loss, and a DPO run started from an SFT run uses it as its reference and says so in its lineage."""

import json

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from core.runs import read_metrics
from data.registry import list_models
from orchestration.cli import main
from policy.config import DPOConfig, SFTConfig
from policy.dpo import train_dpo
from policy.sft import as_demonstration, batch_loss, collate_demonstrations, tokenize_demonstrations, train_sft

ROWS = [
    {"prompt": "What is 2 plus 2?", "completion": "It is 4."},
    {"prompt": "Name a color, please, and say why you like it.", "completion": "Blue, like the sky on a clear day."},
    {
        "prompt": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a fruit."},
        ],
        "completion": "An apple.",
    },
]


def demonstrations(count: int) -> list[dict]:
    return [{"prompt": f"What is {n} plus {n}?", "completion": f"It is {2 * n}."} for n in range(count)]


def sft_config(model_dir, tmp_path, **changes) -> SFTConfig:
    values = dict(model=str(model_dir), lora_rank=8, lora_alpha=16, learning_rate=3e-3, batch_prompts=4, epochs=3,
                  max_length=64, device="cpu", log_every=1, output_dir=str(tmp_path / "sft"))  # fmt: skip
    return SFTConfig(**(values | changes))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_the_loss_is_trls_completion_only_loss(tiny_model, tokenizer, tmp_path):
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    examples = tokenize_demonstrations(tokenizer, ROWS, max_length=128)
    ours = batch_loss(tiny_model, collate_demonstrations(examples, tokenizer.pad_token_id))
    # TRL's own collator and loss over the same token ids, with its completion mask.
    table = datasets.Dataset.from_list(
        [
            {"input_ids": e["prompt_ids"] + e["completion_ids"],
             "completion_mask": [0] * len(e["prompt_ids"]) + [1] * len(e["completion_ids"])}
            for e in examples
        ]
    )  # fmt: skip
    args = TRLSFTConfig(output_dir=str(tmp_path / "trl"), report_to="none", completion_only_loss=True, use_cpu=True,
                        bf16=False, per_device_train_batch_size=len(ROWS))  # fmt: skip
    trainer = SFTTrainer(model=tiny_model, args=args, train_dataset=table, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    with torch.no_grad():
        theirs = trainer.compute_loss(tiny_model, batch)
    tiny_model.eval()
    assert float(ours) == pytest.approx(float(theirs), abs=1e-4)


def test_prompt_tokens_carry_no_loss(tiny_model, tokenizer):
    [example] = tokenize_demonstrations(tokenizer, ROWS[1:2], max_length=128)
    prompt, answer = example["prompt_ids"], example["completion_ids"]
    assert prompt == tokenizer.apply_chat_template(
        [{"role": "user", "content": ROWS[1]["prompt"]}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert answer[-1] == tokenizer.eos_token_id  # the model learns to stop
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = tiny_model(input_ids=ids).logits[0]
        by_hand = F.cross_entropy(logits[len(prompt) - 1 : -1], ids[0, len(prompt) :])  # answer tokens only
        ours = batch_loss(tiny_model, collate_demonstrations([example], tokenizer.pad_token_id))
    assert float(ours) == pytest.approx(float(by_hand), abs=1e-5)
    # Another prompt of the same length changes the context, not which tokens are scored: still the answer's.
    other = tokenize_demonstrations(tokenizer, [{"prompt": ROWS[1]["prompt"], "completion": "x"}], 128)[0]
    assert other["prompt_ids"] == prompt and len(other["completion_ids"]) == 2


def test_demonstrations_come_as_trl_writes_them():
    messages = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert as_demonstration(messages, 0, "f") == {"prompt": [{"role": "user", "content": "hi"}], "completion": "hello"}
    conversational = {
        "prompt": [{"role": "user", "content": "hi"}],
        "completion": [{"role": "assistant", "content": "yo"}],
    }
    assert as_demonstration(conversational, 0, "f")["completion"] == "yo"
    with pytest.raises(ValueError, match="f row 3: the answer must be non-empty text"):
        as_demonstration({"prompt": "p", "completion": " "}, 3, "f")
    with pytest.raises(ValueError, match="f row 1: 'messages' must be a list of turns ending with an assistant turn"):
        as_demonstration({"messages": [{"role": "user", "content": "hi"}]}, 1, "f")


def test_sft_lowers_the_held_out_loss_and_a_dpo_run_from_it_uses_it_as_reference(tiny_model_dir, tmp_path, store):
    run_dir = train_sft(sft_config(tiny_model_dir, tmp_path), store=store, demonstrations=demonstrations(24))
    records = read_metrics(run_dir)
    held_out = records[-1]
    assert held_out["eval/loss"] < held_out["eval/loss_before"] - 0.5, held_out  # it learned the pattern
    assert json.loads((run_dir / "config.json").read_text())["algo"] == "sft"
    [recorded] = list_models(store, kind="policy")
    assert recorded["config"]["lineage"] == {"base_model": str(tiny_model_dir), "demonstrations": "given"}
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["algo"] == "sft" and checkpoint["base_model"] == str(tiny_model_dir)

    pairs = [
        {"prompt": f"What is {n} plus {n}?", "chosen": f"It is {2 * n}.", "rejected": "No idea."} for n in range(8)
    ]
    dpo = DPOConfig(model=str(run_dir), lora_rank=4, lora_alpha=8, batch_prompts=4, max_length=64, device="cpu",
                    log_every=1, output_dir=str(tmp_path / "dpo"))  # fmt: skip
    dpo_dir = train_dpo(dpo, store=store, pairs=pairs)
    lineage = next(model for model in list_models(store, kind="policy") if model["path"] == str(dpo_dir.resolve()))
    assert lineage["config"]["lineage"]["base_model"] == str(run_dir)
    # The reference is the SFT model: at the first step the policy is the reference, so the implicit rewards are 0.
    first = read_metrics(dpo_dir)[0]
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_sft_learns_in_either_precision_and_saves_float32_weights(precision, tiny_model_dir, tmp_path):
    run_dir = train_sft(sft_config(tiny_model_dir, tmp_path, precision=precision), demonstrations=demonstrations(24))
    held_out = read_metrics(run_dir)[-1]
    assert held_out["eval/loss"] < held_out["eval/loss_before"] - 0.5, held_out
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged")
    assert {parameter.dtype for parameter in merged.parameters()} == {torch.float32}


def test_train_sft_command_trains_from_a_file(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in demonstrations(6)))
    code = main(["--db", str(tmp_path / "s.duckdb"), "train-sft", "--model", str(tiny_model_dir), "--sft-file",
                 str(path), "--lora-rank", "4", "--epochs", "1", "--batch-prompts", "4", "--device", "cpu", "--output-dir", str(tmp_path / "r")])  # fmt: skip
    assert code == 0
    assert "policy run:" in capsys.readouterr().out
    assert (tmp_path / "r" / "merged" / "config.json").exists()
    assert [record["step"] for record in read_metrics(tmp_path / "r")] == [1, 2]  # 6 examples, 4 per step
