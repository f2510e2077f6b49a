"""Where the reward is read, how a response is encoded, and that the backbone is built as a reward model."""

import pytest
import torch

from core.batching import pad_right
from core.models import FAST_ENCODER, enable_gradient_checkpointing
from rm.model import (
    causal_attention,
    encode,
    head_name,
    load_backbone,
    pack_rankings,
    packed_rewards,
    packs,
    reads_last_token,
    sequence_rewards,
    shared_prefix_length,
    unwrap,
)

PROMPT = "Name a fruit."
RESPONSES = ["An apple.", "A ripe banana, which is yellow and sweet and good for breakfast."]


def left_padded(sequences, pad_id):
    width = max(len(s) for s in sequences)
    input_ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences])
    attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_model_dir):
    torch.manual_seed(0)
    return load_backbone(str(tiny_model_dir), lora_rank=0)


@pytest.fixture(scope="module")
def encoder_reward_model():
    torch.manual_seed(0)
    return load_backbone(FAST_ENCODER, lora_rank=0)


@pytest.mark.parametrize("backbone", ["tiny_reward_model", "encoder_reward_model"])  # tiny: SmolLM2's architecture
def test_reward_is_the_same_padded_left_right_or_not_at_all(backbone, request):
    model, tokenizer = request.getfixturevalue(backbone)
    model.eval()
    sequences = [encode(tokenizer, PROMPT, r, 64, reads_last_token(model)) for r in RESPONSES]
    assert len(sequences[0]) < len(sequences[1])  # so the short one gets padding
    with torch.no_grad():
        right = sequence_rewards(model, *pad_right(sequences, tokenizer.pad_token_id, "cpu"))
        left = sequence_rewards(model, *left_padded(sequences, tokenizer.pad_token_id))
        alone = torch.cat(
            [sequence_rewards(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in sequences]
        )
        # transformers' own pooling (last non-pad token for decoders, CLS for encoders) on right padding
        own = model(*pad_right(sequences, tokenizer.pad_token_id, "cpu")).logits[:, 0]
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, right, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(own, right, atol=1e-5, rtol=1e-5)


def test_decoder_input_is_the_chat_prompt_then_the_response_then_eos(tiny_reward_model):
    model, tokenizer = tiny_reward_model
    ids = encode(tokenizer, PROMPT, RESPONSES[1], 512, last_token=True)
    assert ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(ids)
    assert text.index(PROMPT) < text.index(RESPONSES[1])
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    # Too long: the prompt loses its start first, and the EOS the reward is read at always stays.
    short = encode(tokenizer, "word " * 200 + PROMPT, RESPONSES[1], 40, last_token=True)
    assert len(short) == 40 and short[-1] == tokenizer.eos_token_id
    assert RESPONSES[1] in tokenizer.decode(short)
    tiny = encode(tokenizer, PROMPT, "word " * 100, 16, last_token=True)
    assert len(tiny) == 16 and tiny[-1] == tokenizer.eos_token_id


def test_encoder_input_is_a_cls_prompt_sep_response_pair(encoder_reward_model):
    model, tokenizer = encoder_reward_model
    assert not reads_last_token(model) and head_name(model) == "classifier"
    ids = encode(tokenizer, PROMPT, RESPONSES[0], 512, last_token=False)
    assert ids[0] == tokenizer.cls_token_id and ids.count(tokenizer.sep_token_id) == 2
    assert len(encode(tokenizer, "word " * 600, RESPONSES[0], 128, last_token=False)) == 128


def test_dropout_is_off_even_in_training_mode(encoder_reward_model):
    model, tokenizer = encoder_reward_model
    model.train()
    batch = pad_right([encode(tokenizer, PROMPT, r, 64, False) for r in RESPONSES], tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        first, second = sequence_rewards(model, *batch), sequence_rewards(model, *batch)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    assert model.config.hidden_dropout_prob == 0.0  # MiniLM ships with 0.1
    model.eval()


def test_lora_trains_adapters_and_the_whole_score_head(tiny_model_dir):
    torch.manual_seed(0)
    model, _ = load_backbone(str(tiny_model_dir), lora_rank=4)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in name for name in trainable)
    assert any(name.endswith("score.modules_to_save.default.weight") for name in trainable)
    assert not any("embed_tokens" in name for name in trainable)
    assert reads_last_token(model) and head_name(model) == "score"


@pytest.mark.parametrize(("checkpointing", "attention"), [(False, "sdpa"), (True, "sdpa"), (False, "eager")])
def test_packed_rankings_give_each_response_its_own_reward_and_gradients(tiny_model_dir, checkpointing, attention):
    """Rankings packed in one row (each one's shared prompt once) score and train as their responses apart; under
    sdpa every layer computes only what each response sees, other attention reads the responses apart."""
    torch.manual_seed(0)
    model, tokenizer = load_backbone(str(tiny_model_dir), lora_rank=4)
    unwrap(model).set_attn_implementation(attention)
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    rankings = [
        [encode(tokenizer, PROMPT, response, 64, True) for response in (*RESPONSES, "A pear.")],  # K=3
        [encode(tokenizer, "Name a colour.", response, 64, True) for response in ("Blue.", "Red, like a rose.")],
        [[5, 6, 7], [8, 9]],  # nothing shared
        [[5, 6, 7], [5, 6, 7, 8]],  # one response is the other's start: it keeps its last token
    ]
    sequences = [ids for ranking in rankings for ids in ranking]
    weights = torch.linspace(-1.0, 1.0, len(sequences))

    def rewards_and_gradients(score):
        model.zero_grad()
        rewards = score()
        (rewards * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and "lora" in n}
        return rewards.detach(), grads

    apart, apart_grads = rewards_and_gradients(
        lambda: sequence_rewards(model, *pad_right(sequences, tokenizer.pad_token_id, "cpu"))
    )
    packed = pack_rankings(rankings, tokenizer.pad_token_id, "cpu")
    together, together_grads = rewards_and_gradients(lambda: packed_rewards(model, packed))
    shares = [shared_prefix_length(ranking) for ranking in rankings]
    assert packed.input_ids.shape == (
        1,
        sum(s + sum(len(ids) - s for ids in r) for s, r in zip(shares, rankings, strict=True)),
    )
    assert packs(model) == (attention == "sdpa")
    passes = (2 if checkpointing else 1) if attention == "sdpa" else 0  # checkpointing: recomputed ones too
    assert packed.attention.calls == passes * unwrap(model).config.num_hidden_layers
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)
    lora_b = [grad for name, grad in apart_grads.items() if "lora_B" in name]  # B starts at 0, so A gets none
    assert lora_b and all(grad.abs().sum() > 0 for grad in lora_b)
    for name, grad in apart_grads.items():
        torch.testing.assert_close(together_grads[name], grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_causal_attention_over_a_prefix_matches_one_masked_pass(fused):
    """A response's attention over its prompt's keys and its own, as plain products (a CPU) or sdpa (a GPU): the
    rows of one causal pass over prompt + response, with query heads sharing key heads."""
    torch.manual_seed(0)
    prefix, own, heads, kv_heads, head_dim = 5, 4, 6, 2, 8
    query = torch.randn(1, heads, prefix + own, head_dim, dtype=torch.float64)
    key, value = torch.randn(2, 1, kv_heads, prefix + own, head_dim, dtype=torch.float64)
    whole = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(3, 1), value.repeat_interleave(3, 1), is_causal=True, scale=0.3
    )  # (1, heads, prefix + own, head_dim)
    mine = causal_attention(query[:, :, prefix:], key, value, 0.3, fused=fused)  # (own, heads, head_dim)
    torch.testing.assert_close(mine, whole[0, :, prefix:].transpose(0, 1))
    torch.testing.assert_close(causal_attention(query, key, value, 0.3, fused=fused), whole[0].transpose(0, 1))
