"""Sampling K responses: count, reproducibility, finish reasons, EOS cutting, parameter checks, the sampler."""

import json

import pytest
from transformers import AutoModelForCausalLM

from core.chat import chat_prompt_ids, cut_at_eos, eos_token_ids
from core.generation import SamplingParams, sample_responses
from core.models import load_causal_lm, load_tokenizer
from data import annotation
from data.prompts import add_prompts
from data.settings import save_settings
from orchestration.sampler import Generator, fill


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return load_causal_lm(tiny_model_dir, device="cpu")


def test_k_samples_reproducible_with_a_seed(tiny_lm):
    model, tokenizer = tiny_lm
    params = SamplingParams(k=3, max_new_tokens=6, seed=123)
    first = sample_responses(model, tokenizer, "Name a colour.", params)
    second = sample_responses(model, tokenizer, "Name a colour.", params)
    assert len(first) == 3
    assert first == second
    other = sample_responses(model, tokenizer, "Name a colour.", SamplingParams(k=3, max_new_tokens=6, seed=124))
    assert [s.text for s in other] != [s.text for s in first]


def test_cut_by_max_new_tokens_reports_length(tiny_lm):
    model, tokenizer = tiny_lm
    samples = sample_responses(model, tokenizer, "Tell me a story.", SamplingParams(k=2, max_new_tokens=4, seed=0))
    # A random tiny model over a 49k vocabulary essentially never picks EOS within 4 tokens (seeded here).
    assert [s.finish_reason for s in samples] == ["length", "length"]
    assert [s.num_tokens for s in samples] == [4, 4]
    assert all(s.text for s in samples)


def test_eos_ends_a_sample_and_is_cut_from_its_text(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    steps = []

    def force_eos_on_third_token(module, inputs, logits):  # the shared prompt prefill, then once per token
        steps.append(1)
        if len(steps) == 1 + 3:
            logits[..., tokenizer.eos_token_id] += 1e4
        return logits

    model.lm_head.register_forward_hook(force_eos_on_third_token)
    samples = sample_responses(model, tokenizer, "Hi", SamplingParams(k=2, max_new_tokens=8, seed=0))
    assert [(s.finish_reason, s.num_tokens) for s in samples] == [("eos", 2), ("eos", 2)]
    assert len(steps) == 1 + 3  # generation stopped once every row had ended
    assert all(s.text and tokenizer.eos_token not in s.text for s in samples)


def test_cut_at_eos():
    eos, pad = {2, 7}, 0
    assert cut_at_eos([5, 6, 2, 9, 0, 0], eos, pad) == ([5, 6], "eos")
    assert cut_at_eos([5, 7, 2], eos, pad) == ([5], "eos")  # the first of several EOS ids wins
    assert cut_at_eos([2, 5], eos, pad) == ([], "eos")  # an immediate EOS is an empty response
    assert cut_at_eos([5, 6, 9], eos, pad) == ([5, 6, 9], "length")
    assert cut_at_eos([5, 6, 0, 0], eos, pad) == ([5, 6], "length")  # trailing padding is dropped
    assert cut_at_eos([5, 0, 6], eos, None) == ([5, 0, 6], "length")
    assert cut_at_eos([], eos, pad) == ([], "length")


def test_chat_template_and_eos_ids(tiny_lm):
    model, tokenizer = tiny_lm
    ids = chat_prompt_ids(tokenizer, "Hello there")
    text = tokenizer.decode(ids)
    assert "Hello there" in text and text.rstrip().endswith("assistant")  # generation prompt opens the reply
    assert tokenizer.eos_token_id in eos_token_ids(model, tokenizer)
    assert tokenizer.pad_token_id not in eos_token_ids(model, tokenizer)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("k", 1, "between 2 and 8"),
        ("k", 9, "between 2 and 8"),
        ("temperature", 0.0, "temperature must be > 0"),
        ("temperature", -1.0, "temperature must be > 0"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
        ("max_new_tokens", 0, "max_new_tokens must be >= 1"),
    ],
)
def test_sampling_params_refuse_out_of_range_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value})


def test_sampling_params_accept_the_edges():
    assert SamplingParams(k=2, top_p=1.0, max_new_tokens=1).to_dict()["k"] == 2
    assert SamplingParams(k=8).to_dict() == {
        "k": 8,
        "temperature": 0.8,
        "top_p": 0.95,
        "max_new_tokens": 256,
        "seed": None,
    }


def test_fill_stores_batches_with_model_and_params(store, tiny_model_dir):
    add_prompts(store, ["first prompt", "second prompt", "third prompt"], "test")
    save_settings(store, {"generator_model": str(tiny_model_dir), "k": 2, "max_new_tokens": 3, "seed": 7})
    made = []
    assert fill(store, Generator("cpu"), 2, progress=made.append) == 2
    assert made == [1, 2]

    rows = store.query("SELECT prompt_id, model, params FROM batches ORDER BY id")
    assert [row[0] for row in rows] == [1, 2]
    assert {row[1] for row in rows} == {str(tiny_model_dir)}
    assert json.loads(rows[0][2]) == {"k": 2, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 3, "seed": 7}
    responses = store.query("SELECT batch_id, finish_reason, num_tokens FROM responses ORDER BY id")
    assert [row[0] for row in responses] == [1, 1, 2, 2]
    assert all(row[1] in ("eos", "length") and row[2] <= 3 for row in responses)

    # Prompts with a batch waiting are not sampled again; the third one is.
    assert [pid for pid, _ in annotation.prompts_to_sample(store, 10)] == [3]
    assert fill(store, Generator("cpu"), 5) == 1
    assert fill(store, Generator("cpu"), 5) == 0


def test_generator_loads_once_per_model_name(tiny_model_dir):
    generator = Generator("cpu")
    model, tokenizer = generator.get(str(tiny_model_dir))
    assert generator.get(str(tiny_model_dir))[0] is model
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert load_tokenizer(tiny_model_dir).padding_side == "left"


@pytest.mark.integration
def test_default_model_samples_two_non_empty_responses():
    model, tokenizer = load_causal_lm("default", device="cpu")
    samples = sample_responses(
        model, tokenizer, "What is the capital of France?", SamplingParams(k=2, max_new_tokens=8, seed=0)
    )
    assert len(samples) == 2
    assert all(sample.text.strip() for sample in samples)
    assert all(1 <= sample.num_tokens <= 8 for sample in samples)


def test_sampler_keeps_each_active_annotator_supplied_with_prompts_they_can_take(store):
    """Waiting items for prompts an annotator already ranked must not leave that annotator waiting."""
    from core.generation import Sample
    from orchestration.sampler import BackgroundSampler

    add_prompts(store, [f"p{i}" for i in range(1, 7)], "test")
    ada, bob = annotation.ensure_annotator(store, "ada"), annotation.ensure_annotator(store, "bob")
    samples = [Sample("x", "eos", 1), Sample("y", "eos", 1)]

    def rank(annotator_id, prompt_id):
        annotation.add_batch(store, prompt_id, "m", {}, samples)
        item = annotation.claim_next_item(store, annotator_id)
        annotation.submit_ranking(store, annotator_id, item.batch_id, [[i] for i in item.response_ids])

    for prompt_id in range(1, 6):
        rank(ada, prompt_id)
    rank(bob, 6)
    for prompt_id in (1, 2):  # waiting items, but for prompts ada has done
        annotation.add_batch(store, prompt_id, "m", {}, samples)
    sampler = BackgroundSampler(store)
    assert annotation.claimable_count(store, ada) == 0
    assert sampler.next_prompt(ready=2) == (6, "p6")  # the one prompt ada can still rank
    annotation.add_batch(store, 6, "m", {}, samples)
    assert annotation.claimable_count(store, ada) == 1
    assert sampler.next_prompt(ready=2) is None  # nothing else ada can take; bob has 2 waiting (p1, p2)
    assert sampler.next_prompt(ready=0) is None  # ready 0 pauses sampling
