"""The reward network: a sequence-classification backbone with one output, how text becomes its input, where it reads.

Training (`rm.train`) and scoring (`rm.score`) share these functions, so a response is formatted, padded and read
the same way in both.
"""

import contextlib
from dataclasses import dataclass

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from core.chat import PromptTooLong, chat_prompt_ids, fitted_prompt_ids, plain_layout
from core.memory import SERIALIZATION_COPIES, HeldModel, ModelShape
from core.models import disable_dropout, ensure_pad_token, load_config, resolve_model, without_dropout


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


def load_backbone(name_or_path: str, lora_rank: int = 0, lora_alpha: int = 32):
    """Return (model, tokenizer): a one-output sequence classifier with dropout off, LoRA-wrapped when rank > 0.

    Call `torch.manual_seed` first: the head is initialized at random.
    """
    path = resolve_model(name_or_path)
    config = without_dropout(load_config(path, num_labels=1))  # saved that way too
    with _quiet_loading():
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=torch.float32)
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
    return model, tokenizer


def backbone_memory(shape: ModelShape, lora_rank: int) -> HeldModel:
    """Return what `load_backbone` keeps: float32 weights, of which LoRA's adapters and the head train (or all)."""
    trainable = shape.parameters if lora_rank == 0 else shape.lora_weights(lora_rank) + shape.hidden
    return HeldModel("reward model", shape, 4, trainable, save_copies=SERIALIZATION_COPIES)  # merged in place


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


@dataclass
class PackedRankings:
    """Rankings packed one to a row: the responses' shared prefix once, then each response's own tokens.

    Each response attends to the prefix and to itself (never to a sibling) at the positions it would have alone,
    so its reward is the one it gets as a sequence of its own: exact for a causal decoder, in fewer tokens (a
    pair of HH-shaped answers to one conversation: about two thirds).
    """

    input_ids: torch.Tensor  # (R, L) one row per ranking, right-padded
    position_ids: torch.Tensor  # (R, L) each response continues the prefix's positions
    attention_mask: torch.Tensor  # (R, 1, L, L) 0 where a token may attend, the dtype's minimum elsewhere
    read_rows: torch.Tensor  # (N,) the row of each response, in ranking order
    read_columns: torch.Tensor  # (N,) the column of its last token (EOS), where its reward is read


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Return how many leading tokens all the sequences share (what a ranking's responses have in common)."""
    length = min(map(len, sequences))
    for column in range(length):
        if len({ids[column] for ids in sequences}) > 1:
            return column
    return length - 1 if len(sequences) > 1 else length  # each response keeps at least its last token


def pack_rankings(rankings: list[list[list[int]]], pad_id: int, device, dtype=torch.float32) -> PackedRankings:
    """Return the rankings (each a list of its responses' token ids) packed one to a row (`PackedRankings`)."""
    rows = []  # per ranking: (token ids, positions, segment of each token: 0 the prefix, i the i-th response)
    read_columns = []
    for sequences in rankings:
        shared = shared_prefix_length(sequences)
        ids, positions, segments = list(sequences[0][:shared]), list(range(shared)), [0] * shared
        for number, sequence in enumerate(sequences, start=1):
            own = sequence[shared:]
            ids += own
            positions += range(shared, len(sequence))
            segments += [number] * len(own)
            read_columns.append(len(ids) - 1)
        rows.append((ids, positions, segments))
    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
    for row, (ids, positions, segments) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        position_ids[row, : len(ids)] = torch.tensor(positions)
        segment[row, : len(ids)] = torch.tensor(segments)
    query, key = segment[:, :, None], segment[:, None, :]  # (R, L, 1), (R, 1, L)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (key != -1) & ((key == 0) | (key == query))  # the prefix, or its own response
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no row without a key
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    counts = [len(sequences) for sequences in rankings]
    read_rows = torch.repeat_interleave(torch.arange(len(rankings)), torch.tensor(counts))
    return PackedRankings(input_ids.to(device), position_ids.to(device), mask.to(device), read_rows.to(device),
                          torch.tensor(read_columns, device=device))  # fmt: skip


def packed_rewards(model, packed: PackedRankings) -> torch.Tensor:
    """Return one reward per response of packed rankings (N,), read at each response's last token (decoders)."""
    inner = unwrap(model)
    hidden = inner.base_model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask,
        position_ids=packed.position_ids,
        use_cache=False,
    ).last_hidden_state  # (R, L, H)
    return inner.score(hidden[packed.read_rows, packed.read_columns])[:, 0].float()  # (N,)


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
