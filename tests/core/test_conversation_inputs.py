"""The sampler feeds a conversation to the model as the chat template over its whole history."""

import torch
from transformers import AutoModelForCausalLM

from core.generation import Engine, sample_prompts

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Apple."},
    {"role": "user", "content": "Another?"},
]


def test_the_sampler_feeds_the_chat_template_of_the_whole_history(tiny_model_dir, tokenizer, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    engine = Engine(model, tokenizer)
    fed = []
    generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda rows, *args, **kwargs: fed.append(rows) or generate(rows, *args))
    torch.manual_seed(0)
    found = sample_prompts(engine, [CONVERSATION, "Say hi."], k=2, temperature=1.0, top_p=1.0, max_new_tokens=3)
    expected = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_dict=False)
    single = tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True,
                                           return_dict=False)  # fmt: skip
    assert fed == [[expected, expected, single, single]]
    assert [len(samples) for samples in found] == [2, 2]
