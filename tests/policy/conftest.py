"""Policy-test fixtures: a tiny model that sometimes stops, so "prefer short answers" is learnable in 20 steps.

A random 2-layer model over a 49k vocabulary samples EOS about once in 49k tokens, so no reward about length
could teach it anything in a few steps. A few seconds of supervised warm-up on "prompt, a few words from a small
set, EOS after a random length" gives it a stopping probability near 1/6 per token, like a real chat model's.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from policy.rollout import left_pad_prompts

PROMPTS = ["hi", "tell me a story", "what is 2+2?", "name a color", "say something", "why is the sky blue?"]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Run policy tests on one intra-op thread: on a shared 2-core machine, two threads contend and run ~5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _warm_up_batch(tokenizer, generator: torch.Generator, batch: int = 8):
    words = tokenizer(" the a cat dog runs fast blue red sky is and of to", add_special_tokens=False)["input_ids"]
    prompt_ids, prompt_mask = left_pad_prompts(tokenizer, [PROMPTS[i % len(PROMPTS)] for i in range(batch)], 64, "cpu")
    completions = torch.full((batch, 17), tokenizer.pad_token_id)
    completion_mask = torch.zeros((batch, 17), dtype=torch.long)
    for row in range(batch):
        length = int(torch.randint(1, 16, (1,), generator=generator))
        picks = torch.randint(0, len(words), (length,), generator=generator)
        completions[row, :length] = torch.tensor(words)[picks]
        completions[row, length] = tokenizer.eos_token_id
        completion_mask[row, : length + 1] = 1
    input_ids = torch.cat([prompt_ids, completions], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    labels = torch.where(torch.cat([torch.zeros_like(prompt_mask), completion_mask], dim=1).bool(), input_ids, -100)
    return input_ids, attention_mask, labels


@pytest.fixture(scope="session")
def stopping_model_dir(tmp_path_factory, tiny_model_dir, tokenizer):
    """A tiny model folder that answers with a few common words and stops after ~6 tokens on average."""
    folder = tmp_path_factory.mktemp("tiny-stopping-lm")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        input_ids, attention_mask, labels = _warm_up_batch(tokenizer, generator)
        # Logits for the completion columns only: the 49k-wide vocabulary is most of the cost.
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=18).logits
        shifted = labels[:, -logits.shape[1] :]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), shifted[:, 1:].flatten(), ignore_index=-100
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
