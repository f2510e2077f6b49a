"""Padding and batching by length: how token rows become the (B, T) tensors every model reads.

Left padding for prompts that continue into generated or given completions (generation, rollouts, DPO), right
padding for whole sequences read at their last token (the reward model). Grouping rows of similar length into a
batch cuts padding; on a GPU that is most of the waste, on a CPU each shape costs little and rows run as they come.
"""

import math
import random
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler


def left_pad(rows: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (input_ids, attention_mask) of token rows left-padded to `width` (default: the longest row)."""
    width = max(len(row) for row in rows) if width is None else width
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, width - len(row) :] = torch.tensor(row)
            attention_mask[index, width - len(row) :] = 1
    return input_ids, attention_mask


def pad_right(sequences: list[list[int]], pad_id: int, device, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (input_ids, attention_mask), both (B, T), right-padded to the longest rounded up to `multiple`.

    A multiple above 1 keeps a GPU's shapes to a few buckets (fewer allocations and kernel choices); the rewards
    are the same, read at each row's last real token.
    """
    width = -(-max(len(ids) for ids in sequences) // multiple) * multiple
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


@dataclass(frozen=True)
class Padding:
    """How batches are shaped on a device: chosen by `padding_for`, both tested to give the same results."""

    pad_multiple: int  # sequence width rounded up to this (CUDA: a few shapes; CPU: no wasted tokens)
    group_by_length: bool  # batches of rankings of similar length (less padding), shuffled batch order


def padding_for(device) -> Padding:
    """Return the padding that measures fastest on the device: bucketed and length-grouped on CUDA, as-is on CPU."""
    cuda = torch.device(device).type == "cuda"
    return Padding(pad_multiple=64 if cuda else 1, group_by_length=cuda)


def length_grouped(order: list[int], lengths: list[int], batch_size: int, window: int) -> list[list[int]]:
    """Return the indices in `order` cut into batches of similar length: each run of `window` batches' worth is
    sorted longest first and cut. The caller shuffles the batches, so the order of the data stays random."""
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda index: -lengths[index])
        batches += [chunk[first : first + batch_size] for first in range(0, len(chunk), batch_size)]
    return batches


class LengthGroupedBatches(Sampler):
    """Batches of examples of similar length, in random order, as a DataLoader's batch sampler: less padding.

    Each epoch shuffles the examples, sorts each window of `window` batches' worth by length, cuts it into batches,
    and shuffles the batches (as transformers' LengthGroupedSampler does), so batches still mix across the data.
    The order is a function of the seed and the epoch alone: every process draws the same one.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 16):
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = rng.sample(range(len(self.lengths)), len(self.lengths))
        batches = length_grouped(order, self.lengths, self.batch_size, self.window)
        rng.shuffle(batches)
        yield from batches
