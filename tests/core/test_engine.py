"""The generation engine against plain `model.generate`: same greedy tokens padded or bucketed, live LoRA weights,
several prompts per call."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from core.chat import chat_prompt_ids
from core.generation import Engine, bucket
from data import annotation
from data.prompts import add_prompts
from data.settings import save_settings
from orchestration.sampler import Generator, fill

PROMPTS = ["hi", "tell me a story about a cat", "what is 2+2?", "why is the sky blue? explain it to a child please"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tokenizer):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def plain_greedy(model, tokenizer, rows: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy tokens of each prompt generated alone, unpadded: the reference every layout must reproduce."""
    found = []
    for row in rows:
        output = model.generate(
            input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long),
            do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
        )  # fmt: skip
        found.append(output[0, len(row) :].tolist())
    return found


def engine_greedy(engine: Engine, rows: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    engine.eos_ids = {-1}  # run every row to max_new_tokens, so the whole sequence is compared
    generated = engine.generate(rows, max_new_tokens, greedy=True)
    return generated.completion_ids.tolist()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager-dynamic-cache", "bucketed-static-cache"])
@pytest.mark.parametrize("count", [1, 3, 4, 6])
def test_greedy_tokens_equal_plain_generate_for_mixed_prompt_lengths(tiny, tokenizer, compiled, count):
    """Left padding, rows padded up to a bucket (3 -> 4, 6 -> 8), prompt width padded to a multiple, shared prompts."""
    rows = [chat_prompt_ids(tokenizer, PROMPTS[i % len(PROMPTS)]) for i in range(count)]
    assert len({len(row) for row in rows[:2]}) == 2 or count == 1  # mixed lengths from the second row on
    engine = Engine(tiny, tokenizer, compiled=compiled)  # on CPU "compiled" is the bucketed static-cache path
    assert engine_greedy(engine, rows, 12) == plain_greedy(tiny, tokenizer, rows, 12)


def test_sampled_logprobs_agree_with_a_full_forward_pass(tiny, tokenizer):
    from policy.logprobs import token_logprobs

    torch.manual_seed(0)
    rows = [chat_prompt_ids(tokenizer, PROMPTS[i % 3]) for i in range(6)]  # mixed lengths, shared prompts
    generated = Engine(tiny, tokenizer).generate(rows, 10, temperature=0.7, logprobs=True)
    input_ids = torch.cat([generated.prompt_ids, generated.completion_ids], dim=1)
    attention_mask = torch.cat([generated.prompt_mask, generated.completion_mask], dim=1)
    completion_mask = torch.cat([torch.zeros_like(generated.prompt_mask), generated.completion_mask], dim=1)
    with torch.no_grad():
        full, _ = token_logprobs(tiny, input_ids, attention_mask, completion_mask, temperature=0.7)
    width = generated.prompt_ids.shape[1]
    assert generated.completion_mask.sum() > 0
    torch.testing.assert_close(generated.logprobs, full[:, width:], atol=1e-4, rtol=1e-4)


def test_rows_and_prompt_width_are_bucketed_on_the_compiled_path(tiny, tokenizer):
    assert [bucket(n) for n in (1, 3, 5, 16, 17, 300)] == [1, 4, 8, 16, 32, 512]
    rows = [chat_prompt_ids(tokenizer, prompt) for prompt in PROMPTS[:3]]
    generated = Engine(tiny, tokenizer, compiled=True).generate(rows, 4)
    assert generated.completion_ids.shape[0] == 3  # the padding rows are dropped
    assert generated.prompt_ids.shape[1] % 64 == 0
    assert generated.prompt_mask.sum(1).tolist() == [len(row) for row in rows]


def test_generation_follows_the_weights_of_the_current_lora_step(tiny_model_dir, tokenizer):
    """A stale graph or cache would keep answering with the old weights: the same engine must follow each step."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "lm_head"]))
    engine = Engine(policy, tokenizer)
    rows = [chat_prompt_ids(tokenizer, prompt) for prompt in PROMPTS[:2]]
    before = engine_greedy(engine, rows, 6)

    target = tokenizer(" blue", add_special_tokens=False)["input_ids"][0]
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=0.05)
    policy.train()
    ids = torch.tensor([rows[0] + [target] * 6])
    for _ in range(5):  # teach "blue blue blue ..." after the first prompt
        logits = policy(input_ids=ids).logits[0, len(rows[0]) - 1 : -1]
        loss = torch.nn.functional.cross_entropy(logits, torch.full((6,), target))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    after = engine_greedy(engine, rows, 6)
    assert after != before
    assert after[0] == [target] * 6
    assert after == plain_greedy(policy.eval(), tokenizer, rows, 6)  # exactly what the current weights say


def test_the_sampler_fills_several_prompts_per_generate_call(store, tiny_model_dir, monkeypatch):
    add_prompts(store, [f"prompt number {i}" for i in range(6)], "test")
    save_settings(store, {"generator_model": str(tiny_model_dir), "k": 2, "max_new_tokens": 3, "batch_rows": 8})
    generator = Generator("cpu")
    model, _ = generator.get(str(tiny_model_dir))
    calls = []
    real_generate = model.generate
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: calls.append(1) or real_generate(*args, **kwargs))

    assert fill(store, generator, 6) == 6
    assert len(calls) == 2  # 8 rows per call at K=2: 4 prompts, then 2
    assert annotation.prompts_to_sample(store, 10) == []
    counts = store.query("SELECT count(*) FROM responses GROUP BY batch_id")
    assert sorted(count for (count,) in counts) == [2] * 6
