"""Shared fixtures: a DuckDB store in tmp_path and a tiny 2-layer model with the real SmolLM2 tokenizer."""

import pytest
import torch
from playwright.sync_api import expect
from transformers import AutoModelForCausalLM, LlamaConfig

from core.models import load_tokenizer, prepare_default_model
from data.store import Store

# A page draws slowly on a loaded machine (CI shares its cores): what a browser test expects to see may take up to
# a minute, not Playwright's default 5 s. Each wait still ends as soon as the page shows it.
expect.set_options(timeout=60_000)


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "studio.duckdb")
    yield store
    store.close()


@pytest.fixture(scope="session")
def default_model_dir():
    """The real default model, converted once into the user cache (as `make run` does)."""
    return prepare_default_model()


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    return load_tokenizer(default_model_dir)


def tiny_llama_config(tokenizer) -> LlamaConfig:
    """A 2-layer Llama shaped like SmolLM2 but ~1000x smaller, over the real tokenizer's vocabulary."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A folder holding a tiny random causal LM and the real tokenizer: loads like any model folder."""
    folder = tmp_path_factory.mktemp("tiny-lm")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def zero3_config(tmp_path_factory):
    """An accelerate config: DeepSpeed ZeRO-3 over two CPU processes (gloo)."""
    from tests.sharding import ZERO3_TWO_CPU_PROCESSES

    path = tmp_path_factory.mktemp("layouts") / "zero3-2cpu.yaml"
    path.write_text(ZERO3_TWO_CPU_PROCESSES)
    return path
