"""The reward network: a sequence-classification backbone with one output, how text becomes its input, where it reads.

Training (`rm.train`) and scoring (`rm.score`) share these functions, so a response is formatted, padded and read
the same way in both.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AttentionInterface, AutoModelForSequenceClassification, AutoTokenizer
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from core.batching import pad_right
from core.chat import PromptTooLong, chat_prompt_ids, fitted_prompt_ids, plain_layout
from core.memory import SERIALIZATION_COPIES, HeldModel, ModelShape
from core.models import DeviceChoice, disable_dropout, ensure_pad_token, load_config, resolve_model, without_dropout


@contextlib.contextmanager
def _quiet_loading():
    """Silence the "score.weight newly initialized" report: a fresh head is the point of a reward model."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def unwrap(model):
    """Return the transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def reads_last_token(model) -> bool:
    """Return whether the head scores each position (decoders: `score`) rather than a pooled first token (encoders)."""
    return isinstance(getattr(unwrap(model), "score", None), torch.nn.Module)


def head_name(model) -> str:
    """Return the name of the freshly initialized head that is trained in full, also under LoRA."""
    for name in ("score", "classifier"):
        if isinstance(getattr(unwrap(model), name, None), torch.nn.Module):
            return name
    raise ValueError(f"{type(model).__name__} has neither a 'score' nor a 'classifier' head; cannot train it")


def load_backbone(name_or_path: str, lora_rank: int = 0, lora_alpha: int = 32, base_dtype=torch.float32):
    """Return (model, tokenizer): a one-output sequence classifier with dropout off, LoRA-wrapped when rank > 0.

    Under LoRA the frozen base is kept in `base_dtype`: bf16 where training computes in bf16 (half the memory, and
    no cast of each weight for each product). What trains (adapters and head, or every weight) stays float32:
    Adam's small updates vanish when rounded to bf16. Call `torch.manual_seed` first: the head starts at random.
    """
    path = resolve_model(name_or_path)
    config = without_dropout(load_config(path, num_labels=1))  # saved that way too
    dtype = base_dtype if lora_rank > 0 else torch.float32
    with _quiet_loading():
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"
    ensure_pad_token(tokenizer, model)
    disable_dropout(model)
    if reads_last_token(model) and tokenizer.eos_token_id is None:
        raise ValueError(f"{name_or_path}: a decoder reward model needs an EOS token to read the reward at")
    if lora_rank > 0:
        lora = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            modules_to_save=[head_name(model)],
            task_type="SEQ_CLS",
        )
        model = get_peft_model(model, lora)
        for parameter in model.parameters():  # the head's trainable copy comes in the base's dtype
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    return model, tokenizer


def backbone_memory(shape: ModelShape, lora_rank: int, weight_bytes: int = 4) -> HeldModel:
    """Return what `load_backbone` keeps: its weights (a LoRA base in bf16: 2 bytes), of which LoRA's adapters and
    the head train (or all). Saving merges in place; a bf16 base is upcast first, which holds about three quarters
    of a float32 copy more (measured, `bench/memory.py`: the floor of a checkpointed run, 0.74 GiB)."""
    trainable = shape.parameters if lora_rank == 0 else shape.lora_weights(lora_rank) + shape.hidden
    upcast = 0.75 if weight_bytes == 2 else 0.0
    return HeldModel("reward model", shape, weight_bytes, trainable, save_copies=SERIALIZATION_COPIES + upcast)


def encode(tokenizer, prompt, response: str, max_length: int, last_token: bool) -> list[int]:
    """Return the token ids the reward model reads for one response to a prompt (`encode_and_cut`'s ids)."""
    return encode_and_cut(tokenizer, prompt, response, max_length, last_token)[0]


def encode_and_cut(tokenizer, prompt, response: str, max_length: int, last_token: bool) -> tuple[list[int], bool]:
    """Return the token ids the reward model reads for one response to a prompt (text or a conversation), and
    whether anything was cut to fit `max_length`.

    Decoders: the whole history in the chat template (as the policy sees it), the response, then EOS, where the
    reward is read. Too long: a long response loses its end (EOS stays), a conversation its oldest whole turns
    (the system message stays); when not even the last user turn fits, the prompt loses its start, so scoring
    never refuses a response.
    Encoders: "[CLS] prompt [SEP] response [SEP]", a conversation as its plain transcript (`plain_layout`), the
    longer part truncated first.
    """
    if not last_token:
        transcript = plain_layout(prompt, generation_prompt=False)
        whole = len(tokenizer(transcript, response)["input_ids"])
        return tokenizer(transcript, response, truncation=True, max_length=max_length)["input_ids"], whole > max_length
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    cut = len(response_ids) > max_length - 1
    response_ids = response_ids[: max_length - 1] + [tokenizer.eos_token_id]
    budget = max_length - len(response_ids)
    if budget <= 0:
        return response_ids, True
    try:
        prompt_ids, dropped_turns = fitted_prompt_ids(tokenizer, prompt, max_tokens=budget)
    except PromptTooLong:
        prompt_ids, dropped_turns = chat_prompt_ids(tokenizer, prompt)[-budget:], True
    return prompt_ids + response_ids, cut or dropped_turns


def right_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the batch moved to right padding: each row's real tokens first, in order (a stable sort on the mask)."""
    order = torch.argsort(1 - attention_mask, dim=-1, stable=True)  # (B, T)
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Return one reward per sequence (B,), whichever side the batch is padded on.

    Decoders are read at the last real token (the appended EOS), found from the attention mask rather than
    from pad-token heuristics; encoders at the first token, as their classification head pools.
    """
    input_ids, attention_mask = right_align(input_ids, attention_mask)
    inner = unwrap(model)
    if not reads_last_token(inner):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    hidden = inner.base_model(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state  # (B, T, H)
    last = attention_mask.sum(dim=-1) - 1  # (B,)
    last_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
    return inner.score(last_hidden)[:, 0].float()


@dataclass(frozen=True)
class PackedRanking:
    """Where one ranking sits in a packed row: its responses' shared prefix, then each response's own tokens."""

    prefix: int
    responses: tuple[int, ...]  # each response's own tokens


@dataclass
class SegmentedAttention:
    """Attention over packed rankings that computes only what each token may see: each ranking's prefix causally
    over itself, then each response over its ranking's prefix and itself causally.

    One masked pass over whole rows computes every (query, key) square, those of a response against its siblings
    included, to throw them away; on HH-shaped pairs this computes about half of them and needs no (length, length)
    mask. It runs a ranking at a time, since one batched call would pad every prefix and response to the longest.
    """

    rankings: list[PackedRanking]
    calls: int = 0  # attention layers that ran it, checked against the model's layers

    def __call__(self, query, key, value, scaling: float | None, dropout: float) -> torch.Tensor:
        """Return the attention output (1, T, heads, head_dim) of the packed row's query (1, heads, T, head_dim) and
        key and value (1, kv heads, T, head_dim), as transformers' attention functions do."""
        self.calls += 1
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        sizes = [size for ranking in self.rankings for size in (ranking.prefix, *ranking.responses)]
        # split rather than sliced: the backward pass joins the pieces' gradients once
        pieces = iter(list(zip(*(t.split(sizes, dim=2) for t in (query, key, value)), strict=True)))
        outputs = []
        for ranking in self.rankings:
            q_prefix, k_prefix, v_prefix = next(pieces)
            if ranking.prefix:
                outputs.append(causal_attention(q_prefix, k_prefix, v_prefix, scale, dropout))
            for _ in ranking.responses:
                q_own, k_own, v_own = next(pieces)
                keys, values = torch.cat([k_prefix, k_own], dim=2), torch.cat([v_prefix, v_own], dim=2)
                outputs.append(causal_attention(q_own, keys, values, scale, dropout))
        return torch.cat(outputs)[None]  # (1, T, heads, head_dim), contiguous


def causal_attention(query, key, value, scale: float, dropout: float = 0.0, fused: bool | None = None) -> torch.Tensor:
    """Return the attention (n, heads, head_dim) of query (1, heads, n, head_dim) over key and value (1, kv heads, m,
    head_dim) whose last n are the queries' own tokens: each query sees the keys before them, and its own tokens up
    to itself.

    On a CPU plain products (`grouped_attention`): for a ranking's pieces (up to some hundreds of tokens) sdpa's
    fused kernel is 2-3x slower, forward and backward (measured, bf16, SmolLM2-135M's heads). On a GPU (`fused`
    by default) sdpa.
    """
    if fused is None:
        fused = query.device.type != "cpu"
    if not fused:
        return grouped_attention(query[0], key[0], value[0], scale, dropout)
    queries, keys = query.shape[2], key.shape[2]
    mask = torch.ones(queries, keys, dtype=torch.bool, device=query.device).tril(keys - queries)
    key, value = (repeat_kv(t, query.shape[1] // t.shape[1]) for t in (key, value))  # as transformers' sdpa
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scale)
    return output[0].transpose(0, 1)


def grouped_attention(query, key, value, scale: float, dropout: float = 0.0) -> torch.Tensor:
    """`causal_attention` as matrix products for query (heads, n, head_dim) and key and value (kv heads, m,
    head_dim), returned as (n, heads, head_dim): the query heads that share a key head in one product (no copies of
    the keys), in the inputs' dtype. It keeps one (heads, n, m) tensor of probabilities for the backward pass."""
    heads, queries, head_dim = query.shape
    kv_heads, keys, _ = key.shape
    group = heads // kv_heads
    scores = (query * scale).reshape(kv_heads, group * queries, head_dim) @ key.transpose(1, 2)
    scores = scores.view(kv_heads, group, queries, keys)
    future = torch.ones(queries, queries, dtype=torch.bool, device=query.device).triu(1)
    scores[..., keys - queries :].masked_fill_(future, float("-inf"))  # its own tokens after it
    probabilities = torch.softmax(scores, dim=-1)
    if dropout:
        probabilities = F.dropout(probabilities, dropout)
    output = probabilities.view(kv_heads, group * queries, keys) @ value  # (kv heads, group x queries, head_dim)
    return output.view(heads, queries, head_dim).transpose(0, 1)


def attention_scores(prefix: int, responses: list[int]) -> int:
    """Return the query-key pairs a head of `SegmentedAttention` computes for a ranking: its prefix over itself,
    each response over the prefix and itself."""
    return prefix * prefix + sum(n * (prefix + n) for n in responses)


def packed_score_bytes(shape: ModelShape, device: DeviceChoice) -> int:
    """Return the bytes a layer keeps per query-key pair of packed rankings for the backward pass: on a CPU each
    head's probabilities (`grouped_attention`), on a GPU sdpa's mask as its additive bias, in the compute dtype."""
    dtype_bytes = 2 if device.dtype == torch.bfloat16 else 4
    return dtype_bytes * (shape.heads if device.device.type == "cpu" else 1)


def _packed_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, segments=None, **kwargs):
    """transformers' sdpa attention, or `SegmentedAttention` where a forward pass over packed rankings passes one."""
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    return segments(query, key, value, scaling, dropout), None


PACKED_SDPA = "sdpa_packed"
AttentionInterface.register(PACKED_SDPA, _packed_sdpa)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)  # every other forward pass: sdpa's masks


@dataclass
class PackedRankings:
    """Rankings packed in one row without padding: each ranking's shared prefix once, then each response's own
    tokens at the positions it would have alone.

    Each response attends to its prefix and to itself (never to a sibling or another ranking), so its reward is the
    one it gets as a sequence of its own: exact for a causal decoder, in fewer tokens (a pair of HH-shaped answers
    to one conversation: about two thirds) and with no padding.
    """

    input_ids: torch.Tensor  # (1, T)
    position_ids: torch.Tensor  # (1, T) each response continues its prefix's positions
    read_columns: torch.Tensor  # (N,) each response's last token (EOS), where its reward is read, in ranking order
    attention: SegmentedAttention
    sequences: list[list[int]]  # the responses apart, for models that do not pack (`packs`)
    pad_id: int


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Return how many leading tokens all the sequences share (what a ranking's responses have in common)."""
    length = min(map(len, sequences))
    for column in range(length):
        if len({ids[column] for ids in sequences}) > 1:
            return column
    return length - 1 if len(sequences) > 1 else length  # each response keeps at least its last token


def pack_rankings(rankings: list[list[list[int]]], pad_id: int, device) -> PackedRankings:
    """Return the rankings (each a list of its responses' token ids) packed in one row (`PackedRankings`)."""
    ids, positions, read_columns, layouts = [], [], [], []
    for sequences in rankings:
        shared = shared_prefix_length(sequences)
        ids += sequences[0][:shared]
        positions += range(shared)
        for sequence in sequences:
            ids += sequence[shared:]
            positions += range(shared, len(sequence))
            read_columns.append(len(ids) - 1)
        layouts.append(PackedRanking(shared, tuple(len(sequence) - shared for sequence in sequences)))
    return PackedRankings(
        torch.tensor([ids], device=device),
        torch.tensor([positions], device=device),
        torch.tensor(read_columns, device=device),
        SegmentedAttention(layouts),
        [sequence for sequences in rankings for sequence in sequences],
        pad_id,
    )


def packs(model) -> bool:
    """Return whether the model can read packed rankings: its attention goes through transformers' attention
    functions (most decoders) and is sdpa, which `PACKED_SDPA` extends."""
    inner = unwrap(model)
    return inner.is_backend_compatible() and inner.config._attn_implementation in ("sdpa", PACKED_SDPA)


def packed_rewards(model, packed: PackedRankings) -> torch.Tensor:
    """Return one reward per response of packed rankings (N,), read at each response's last token (decoders);
    a model that does not pack (`packs`) reads the responses as padded rows of their own."""
    if not packs(model):
        return sequence_rewards(model, *pad_right(packed.sequences, packed.pad_id, packed.input_ids.device))
    inner = unwrap(model)
    inner.config._attn_implementation = PACKED_SDPA  # as sdpa but for packed passes, the recomputed ones too
    packed.attention.calls = 0
    hidden = inner.base_model(
        input_ids=packed.input_ids,
        attention_mask=torch.ones_like(packed.input_ids),  # no padding: no mask built for a packed pass
        position_ids=packed.position_ids,
        segments=packed.attention,
        use_cache=False,
    ).last_hidden_state[0]  # (T, H)
    if packed.attention.calls != inner.config.num_hidden_layers:
        raise RuntimeError(
            f"{type(inner).__name__}: {packed.attention.calls} of {inner.config.num_hidden_layers} attention layers "
            "read the packed rankings' segments; load it with another attention implementation (eager) to train it"
        )
    return inner.score(hidden[packed.read_columns])[:, 0].float()  # (N,)


class RewardNetwork(torch.nn.Module):
    """The reward model as one module whose forward returns the sequence rewards (B,).

    Training prepares this module with accelerate, so the engine that wraps it (DDP syncing gradients, DeepSpeed
    gathering split weights) sees every forward pass; `model` is the plain transformers (or peft) model inside.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, packed: PackedRankings | None = None) -> torch.Tensor:
        """Return the rewards of a padded batch (B,), or of packed rankings' responses (N,)."""
        if packed is not None:
            return packed_rewards(self.model, packed)
        return sequence_rewards(self.model, input_ids, attention_mask)
