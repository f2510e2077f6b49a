"""Model resolution (aliases, folders, run folders, hub ids) and a pad token that is never EOS."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core import models
from core.distributed import make_accelerator
from core.models import DEFAULT_MODEL, ModelNotFound, ensure_pad_token, resolve_model


def test_default_alias_resolves_to_the_cached_model_folder(default_model_dir):
    for alias in ("default", DEFAULT_MODEL, f"HuggingFaceTB/{DEFAULT_MODEL}"):
        assert resolve_model(alias) == str(default_model_dir)
    assert (default_model_dir / "config.json").exists()
    assert (default_model_dir / "model.safetensors").exists()


def test_model_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == str(tiny_model_dir)


def test_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotFound, match=r"holds no config\.json: not a model folder"):
        resolve_model(tmp_path)


@pytest.mark.parametrize("name", ["./no-such-model", "/no/such/model", "runs/ppo/missing"])
def test_missing_local_path_raises(name):
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(name)


def test_missing_tmp_folder_raises(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(tmp_path / "gone")


@pytest.mark.parametrize("hub_id", ["HuggingFaceTB/SmolLM2-360M-Instruct", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct"])
def test_hub_id_passes_through_unchanged(hub_id):
    assert resolve_model(hub_id) == hub_id


def test_policy_run_folder_resolves_to_its_merged_model(tmp_path, tiny_model_dir):
    run = tmp_path / "ppo-run"
    shutil.copytree(tiny_model_dir, run / "merged")
    (run / "metrics.jsonl").write_text("{}\n")
    assert resolve_model(run) == str(run / "merged")
    (run / "config.json").write_text('{"algorithm": "ppo", "learning_rate": 1e-5}')  # the run's training config
    assert resolve_model(run) == str(run / "merged")


def test_smollm2_pad_is_endoftext_not_eos(default_model_dir):
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(default_model_dir))
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 0)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)


def test_pad_equal_to_eos_is_replaced(default_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_without_pad_or_unk_gets_a_new_pad_and_the_model_grows(default_model_dir, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    tokenizer.pad_token = None
    tokenizer.unk_token = None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows_before = model.get_input_embeddings().num_embeddings
    assert len(tokenizer) == rows_before

    ensure_pad_token(tokenizer, model)

    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id == rows_before  # a brand-new id, so nothing already in use is masked
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == rows_before + 1
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_only_causal_language_models_are_generators(tiny_model_dir, tmp_path):
    from core.models import generator_problem, load_causal_lm

    assert generator_problem(tiny_model_dir) is None
    assert generator_problem("HuggingFaceTB/SmolLM2-360M-Instruct") is None  # not here to read: loading will tell
    problem = generator_problem("all-MiniLM-L6-v2")
    assert problem == "all-MiniLM-L6-v2 is a BertModel, not a causal language model: it cannot generate text"
    reward_run = tmp_path / "rm-run" / "model"  # a reward model: a sequence classifier
    shutil.copytree(tiny_model_dir, reward_run)
    config = json.loads((reward_run / "config.json").read_text())
    (reward_run / "config.json").write_text(json.dumps(config | {"architectures": ["LlamaForSequenceClassification"]}))
    assert "LlamaForSequenceClassification, not a causal language model" in generator_problem(tmp_path / "rm-run")
    with pytest.raises(ValueError, match="BertModel, not a causal language model"):
        load_causal_lm("all-MiniLM-L6-v2", device="cpu")  # the sampler and the playground load through this


@pytest.mark.parametrize(("precision", "native", "dtype"), [
    ("auto", True, torch.bfloat16), ("auto", False, torch.float32), ("fp32", True, torch.float32),
    ("bf16", False, torch.bfloat16),
])  # fmt: skip
def test_a_cpu_run_computes_in_bf16_where_the_cpu_does_natively_or_when_asked(precision, native, dtype, monkeypatch):
    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: native)
    assert models.training_choice("cpu", precision) == models.DeviceChoice(torch.device("cpu"), dtype)


def test_deepspeed_on_a_cpu_trains_in_float32(monkeypatch):
    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: True)
    assert models.training_choice("cpu", "auto", deepspeed=True).dtype == torch.float32
    with pytest.raises(ValueError, match="not supported under DeepSpeed on a CPU"):
        models.training_choice("cpu", "bf16", deepspeed=True)


def test_a_bf16_cpu_run_autocasts_and_an_fp32_one_does_not():
    for precision, expected in (("bf16", "bf16"), ("fp32", "no")):
        accelerator, choice = make_accelerator("cpu", precision)
        assert accelerator.mixed_precision == expected
        with accelerator.autocast():
            product = torch.nn.Linear(4, 4)(torch.ones(2, 4))
        assert product.dtype == choice.dtype
