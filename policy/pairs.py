"""Preference pairs for DPO: load and check them, tokenize, collate into either forward mode, and their log-probs.

Two forward modes, picked by device (`forward_mode`), give the same log-probs: on a CPU each prompt runs once and
its key/value cache serves both the chosen and the rejected completion (least compute); on a GPU chosen and
rejected run in one padded pass over pairs of similar length (fewest kernel launches).
"""

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader

from core.batching import LengthGroupedBatches
from core.chat import ConversationError, conversation, fitted_prompt_ids
from data.conversations import NoSharedPrompt, is_hh_transcript, pair_of_row
from data.export import pairs_dataset
from data.store import Store
from data.tables import load_table
from policy.config import DPOConfig
from policy.logprobs import PromptSharing, sequence_logprobs

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class PairLogps:
    """Summed completion log-probs of a batch of pairs, and the completion lengths IPO averages over."""

    chosen: torch.Tensor  # (B,)
    rejected: torch.Tensor  # (B,)
    chosen_tokens: torch.Tensor  # (B,)
    rejected_tokens: torch.Tensor  # (B,)


def load_pairs(source) -> datasets.Dataset:
    """Return a prompt/chosen/rejected table from a Store, a Dataset, a list of dicts, or a file or folder path.

    Paths may be JSONL, Parquet, or a folder written by `Dataset.save_to_disk`. Extra columns are kept.
    """
    if isinstance(source, Store):
        table = pairs_dataset(source)
    elif isinstance(source, datasets.Dataset):
        table = source
    elif isinstance(source, list):
        table = datasets.Dataset.from_list(source)
    else:
        table = _read_pairs_file(Path(source))
    return _checked_pairs(table, str(source) if not isinstance(source, (list, datasets.Dataset)) else "pairs")


def _read_pairs_file(path: Path) -> datasets.Dataset:
    """Read a .jsonl/.parquet file or a datasets folder with the reward model's reader (one format, one reader)."""
    _, rows = load_table(str(path))
    if not rows:
        raise ValueError(f"{path} holds no pairs: rank some responses first, or import a pairs file")
    return datasets.Dataset.from_list(rows)


def _checked_pairs(table: datasets.Dataset, name: str) -> datasets.Dataset:
    if _conversational(table):
        table = _plain_pairs(table, name)
    missing = [column for column in PAIR_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; DPO pairs need {list(PAIR_COLUMNS)}")
    if len(table) == 0:
        raise ValueError(f"{name} holds no pairs: rank some responses first, or import a pairs file")
    for row, example in enumerate(table.select_columns(list(PAIR_COLUMNS))):
        empty = [column for column in PAIR_COLUMNS if not isinstance(example[column], str) or not example[column]]
        if empty == ["prompt"] and isinstance(example["prompt"], list) and example["prompt"]:
            empty = []  # a conversation's messages, checked by `_plain_pairs`
        if empty:
            raise ValueError(f"{name} row {row}: {empty} must be non-empty text")
    return table


def _conversational(table: datasets.Dataset) -> bool:
    """Return whether any pair needs reading as a conversation (messages, HH transcripts, no prompt column)."""
    if "prompt" not in table.column_names:
        return {"chosen", "rejected"} <= set(table.column_names)
    features = [table.features[column] for column in PAIR_COLUMNS if column in table.features]
    if any(not isinstance(feature, datasets.Value) for feature in features):
        return True  # a list of messages somewhere
    return any(isinstance(prompt, str) and is_hh_transcript(prompt) for prompt in table["prompt"])


def _plain_pairs(table: datasets.Dataset, name: str) -> datasets.Dataset:
    """Return the pairs as prompt (messages) / chosen / rejected (text), from any format `data.conversations` reads.

    Rows of whole conversations whose chosen and rejected differ before the last answer are dropped (HH has a few).
    """
    rows = []
    for row, example in enumerate(table):
        try:
            prompt, chosen, rejected = pair_of_row(example)
        except NoSharedPrompt:
            continue
        except ConversationError as error:
            raise ValueError(f"{name} row {row}: {error}") from None
        rows.append(example | {"prompt": conversation(prompt), "chosen": chosen, "rejected": rejected})
    if not rows:
        raise ValueError(f"{name} holds no usable pairs: chosen and rejected share no prompt")
    return datasets.Dataset.from_list(rows)


def prompt_of_pair(row: dict) -> str:
    """Return what identifies a pair's prompt (its text, or its messages as JSON): pairs of one prompt stay together."""
    return row["prompt"] if isinstance(row["prompt"], str) else json.dumps(row["prompt"])


def tokenize_pairs(tokenizer, pairs: datasets.Dataset, max_length: int, max_prompt_tokens: int) -> list[dict]:
    """Return one dict of token ids per pair: the chat template over the prompt's history, each response + EOS.

    The prompt fits in `min(max_prompt_tokens, max_length - 1)` tokens by losing its oldest whole turns (a prompt
    whose last user turn alone does not fit raises `PromptTooLong`, naming its prompt id or row, before training);
    each completion keeps its first tokens up to `max_length` in all (a cut completion loses its EOS, as it would
    at sampling time).
    """
    prompt_cache: dict[str, list[int]] = {}
    examples = []
    names = pairs["prompt_id"] if "prompt_id" in pairs.column_names else None
    for index, pair in enumerate(pairs.select_columns(list(PAIR_COLUMNS))):
        key = prompt_of_pair(pair)
        if key not in prompt_cache:
            name = f"{names[index]}" if names else f"in row {index}"
            limit = min(max_prompt_tokens, max_length - 1)
            prompt_cache[key] = fitted_prompt_ids(tokenizer, pair["prompt"], limit, name=name)
        prompt_ids, dropped_turns = prompt_cache[key]
        room = max_length - len(prompt_ids)
        completions = tokenizer([pair["chosen"], pair["rejected"]], add_special_tokens=False)["input_ids"]
        chosen_ids, rejected_ids = (ids + [tokenizer.eos_token_id] for ids in completions)
        examples.append(
            {
                "index": index,
                "prompt_ids": prompt_ids,
                "chosen_ids": chosen_ids[:room],
                "rejected_ids": rejected_ids[:room],
                "cut": dropped_turns or max(len(chosen_ids), len(rejected_ids)) > room,
            }
        )
    return examples


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict:
    """Return one batch of 2B rows in the shared-prompt mode, the B chosen rows first.

    Prompts are left-padded and completions right-padded, so every prompt ends in the same column and a pair's
    prompt runs once for both its completions (`pair_logps`): a pair costs P + 2C tokens, not 2(P + C).
    """
    prompt_width = max(len(example["prompt_ids"]) for example in examples)
    completion_width = max(len(example[key]) for example in examples for key in ("chosen_ids", "rejected_ids"))
    input_ids, attention_mask, completion_mask = [], [], []
    for key in ("chosen_ids", "rejected_ids"):
        for example in examples:
            prompt, completion = example["prompt_ids"], example[key]
            left, right = prompt_width - len(prompt), completion_width - len(completion)
            input_ids.append([pad_token_id] * left + prompt + completion + [pad_token_id] * right)
            attention_mask.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
            completion_mask.append([0] * prompt_width + [1] * len(completion) + [0] * right)
    return {
        "index": torch.tensor([example["index"] for example in examples]),  # (B,)
        "input_ids": torch.tensor(input_ids),  # (2B, T)
        "attention_mask": torch.tensor(attention_mask),  # (2B, T)
        "completion_mask": torch.tensor(completion_mask),  # (2B, T)
        "prompt_width": prompt_width,  # P: a plain int, so the forward needs no host read to find it
        "prompt_of_row": torch.arange(len(examples)).repeat(2),  # (2B,) row i and row B + i share prompt i
    }


def collate_padded_pairs(examples: list[dict], pad_token_id: int) -> dict:
    """Return one batch of 2B rows in the padded mode, the B chosen rows first: one plain forward over all.

    Each prompt + completion is left-padded to the longest, so all completions end in the last column and only
    the last (longest completion + 1) positions need logits. More tokens than the shared-prompt mode, but two
    fewer model calls and no cache to copy: fewer, larger kernels, which is what a GPU wants.
    """
    rows = [(example["prompt_ids"], example[key]) for key in ("chosen_ids", "rejected_ids") for example in examples]
    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    completion_width = max(len(completion) for _, completion in rows)
    input_ids, attention_mask, completion_mask = [], [], []
    for prompt, completion in rows:
        left = width - len(prompt) - len(completion)
        input_ids.append([pad_token_id] * left + prompt + completion)
        attention_mask.append([0] * left + [1] * (len(prompt) + len(completion)))
        completion_mask.append([0] * (width - len(completion)) + [1] * len(completion))
    return {
        "index": torch.tensor([example["index"] for example in examples]),  # (B,)
        "input_ids": torch.tensor(input_ids),  # (2B, T)
        "attention_mask": torch.tensor(attention_mask),  # (2B, T)
        "completion_mask": torch.tensor(completion_mask),  # (2B, T)
        "prompt_width": width - completion_width,  # every completion token sits at this column or later
    }


COLLATORS = {"shared_prompt": collate_pairs, "padded": collate_padded_pairs}


def forward_mode(choice: str, device: torch.device) -> str:
    """Return the forward mode to run: `choice`, or for 'auto' the one that measured fastest on this kind of device.

    On a CPU compute is the cost, and running each prompt once saves it. On a GPU the host is the cost at these
    sizes (Python, kernel launches), and the shared-prompt path's extra model call and cache copy add launches.
    """
    if choice == "auto":
        return "padded" if device.type == "cuda" else "shared_prompt"
    if choice not in COLLATORS:
        raise ValueError(f"unknown DPO forward_mode {choice!r}; expected 'auto' or one of {sorted(COLLATORS)}")
    return choice


def batch_to(batch: dict, device) -> dict:
    """Return the batch with its tensors on `device` (its plain ints stay as they are)."""
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}


def prompt_sharing_of(batch: dict) -> PromptSharing:
    """Return the prompt sharing a collator wrote into the batch (shared prompts, or one plain pass)."""
    if "prompt_of_row" not in batch:
        return PromptSharing(batch["prompt_width"])
    prompt_of_row = batch["prompt_of_row"]  # (2B,)
    return PromptSharing(batch["prompt_width"], prompt_of_row[: len(batch["index"])], prompt_of_row)


def pair_logps(model, batch: dict) -> PairLogps:
    """Return the summed completion log-probs of a collated batch (either mode): one pass over chosen and rejected."""
    logps = sequence_logprobs(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], sharing=prompt_sharing_of(batch)
    )  # (2B,)
    tokens = batch["completion_mask"].sum(-1).to(logps.dtype)  # (2B,)
    chosen, rejected = logps.chunk(2)
    chosen_tokens, rejected_tokens = tokens.chunk(2)
    return PairLogps(chosen, rejected, chosen_tokens, rejected_tokens)


def pair_length(example: dict) -> int:
    """Return the longest row a pair adds to a padded batch."""
    return len(example["prompt_ids"]) + max(len(example["chosen_ids"]), len(example["rejected_ids"]))


def pairs_loader(examples: list[dict], mode: str, config: DPOConfig, pad_token_id: int) -> DataLoader:
    """Return the shuffled batches of an epoch; the padded mode groups pairs of similar length."""
    collate = partial(COLLATORS[mode], pad_token_id=pad_token_id)
    if mode == "padded":
        lengths = [pair_length(example) for example in examples]
        batches = LengthGroupedBatches(lengths, config.batch_prompts, config.seed)
        return DataLoader(examples, batch_sampler=batches, collate_fn=collate)
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(examples, batch_size=config.batch_prompts, shuffle=True, generator=generator, collate_fn=collate)
