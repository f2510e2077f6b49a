"""Hold out whole prompts: a validation set that shares no prompt with training measures generalisation."""

import random
from collections.abc import Callable, Hashable
from typing import TypeVar

Item = TypeVar("Item")


def split_by_prompt(
    items: list[Item], prompt_of: Callable[[Item], Hashable], validation_fraction: float, seed: int
) -> tuple[list[Item], list[Item]]:
    """Return (train, validation) with every prompt on one side only, about `validation_fraction` of prompts held out.

    At least one prompt is held out when the fraction is above 0; a split that would leave no prompt to train on
    raises, naming the numbers.
    """
    keys = sorted({prompt_of(item) for item in items}, key=str)
    random.Random(seed).shuffle(keys)
    held_out = round(len(keys) * validation_fraction)
    if validation_fraction > 0:
        held_out = max(held_out, 1)
        if held_out >= len(keys):
            raise ValueError(
                f"{len(keys)} distinct prompts cannot be split into train and validation at "
                f"validation_fraction={validation_fraction}; rank more prompts or set it to 0"
            )
    validation_keys = set(keys[:held_out])
    train = [item for item in items if prompt_of(item) not in validation_keys]
    validation = [item for item in items if prompt_of(item) in validation_keys]
    return train, validation
