"""Synthetic rankings with a hidden rule, for smoke tests and the benchmark: longer numbered lists rank higher."""

import random

from rm.data import Ranking

TOPICS = [
    "saving money", "sleeping better", "learning a language", "writing an essay", "cooking rice", "running a 5k",
    "keeping plants alive", "studying for exams", "public speaking", "packing for a trip", "cleaning a kitchen",
    "starting a garden", "reading more books", "staying focused", "making coffee", "fixing a bike tire",
    "training a puppy", "planning a party", "learning to swim", "writing a resume", "taking photos",
    "baking bread", "meditating", "organizing a desk", "drinking more water", "learning guitar",
]  # fmt: skip
ASKS = ["Give me tips on {}.", "How do I get better at {}?", "What should I know about {}?", "Help me with {}."]
STEPS = [
    "Start with a small goal", "Set a fixed time each day", "Write down what you did", "Ask a friend to join",
    "Remove distractions first", "Check your progress weekly", "Use a simple checklist", "Rest when you need to",
    "Read one guide on it", "Reward yourself after", "Prepare everything the night before", "Keep it fun",
]  # fmt: skip
FILLER = [
    "That is a good question.", "Many people wonder about this.", "It depends on your situation.",
    "There is no single answer.", "Everyone is different.", "Be patient with yourself.",
    "It takes some practice.", "You can do it.", "Think about what you want.", "Try and see what works.",
]  # fmt: skip


def synthetic_response(rng: random.Random, list_items: int) -> str:
    """Return a response with `list_items` numbered steps, padded with filler to a similar length."""
    filler = " ".join(rng.sample(FILLER, 4 - min(list_items, 3)))
    steps = rng.sample(STEPS, list_items)
    numbered = "\n".join(f"{number}. {step}." for number, step in enumerate(steps, start=1))
    return f"{filler}\n{numbered}".strip()


def synthetic_rankings(num_prompts: int, k: int = 4, seed: int = 0, ties: bool = False) -> list[Ranking]:
    """Return one ranking per prompt of K responses, ranked by how many numbered steps they give (more = better).

    With `ties`, list lengths are drawn with replacement, so equal lengths form tie groups.
    """
    if num_prompts > len(TOPICS) * len(ASKS):
        raise ValueError(f"at most {len(TOPICS) * len(ASKS)} distinct synthetic prompts, asked for {num_prompts}")
    rng = random.Random(seed)
    prompts = [ask.format(topic) for topic in TOPICS for ask in ASKS]
    rng.shuffle(prompts)
    rankings = []
    for index, prompt in enumerate(prompts[:num_prompts]):
        if ties:
            lengths = [rng.randrange(k) for _ in range(k)]
        else:
            lengths = rng.sample(range(k), k)
        responses = [synthetic_response(rng, n) for n in lengths]
        distinct = sorted(set(lengths), reverse=True)
        groups = [distinct.index(n) for n in lengths]  # 0 = the longest list
        rankings.append(Ranking(index, index, prompt, responses, groups))
    return rankings
