"""Write the arithmetic word problems of the verifiable-rewards example: a train and a held-out split with answers.

    python bench/arithmetic_problems.py            # bench/data/arithmetic-train.jsonl (400), -heldout.jsonl (100)

Each line is {"prompt", "answer", "operation"}: one- or two-step problems over small numbers (sums, differences,
products, sharing equally), phrased from templates with random names, objects and numbers. The same seed gives the
same files; no prompt appears in both splits. The prompt asks for reasoning, then a last line "Answer: <number>",
which `policy.rewards:format_answer_line` checks and `policy.rewards:exact_answer` compares with `answer`.
"""

import argparse
import json
import random
from pathlib import Path

FOLDER = Path(__file__).parent / "data"
INSTRUCTION = "Think step by step, then write the final answer on the last line as 'Answer: <number>'."
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kira", "Leo", "Maya", "Noah"]
THINGS = ["apples", "books", "marbles", "stickers", "coins", "pencils", "cookies", "stamps", "shells", "cards"]


def problem(rng: random.Random) -> dict:
    """Return one word problem with its answer (an integer) and its kind of operation."""
    name, friend = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    kind = rng.choice(["add", "subtract", "multiply", "share", "two_steps"])
    a, b = rng.randint(2, 40), rng.randint(2, 20)
    if kind == "add":
        text, answer = (
            f"{name} has {a} {thing}. {friend} gives {name} {b} more. How many {thing} does {name} have now?",
            a + b,
        )
    elif kind == "subtract":
        a = a + b
        text, answer = (
            f"{name} has {a} {thing} and gives {b} of them to {friend}. How many {thing} does {name} have left?",
            a - b,
        )
    elif kind == "multiply":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        text, answer = f"{name} buys {a} bags with {b} {thing} in each bag. How many {thing} does {name} buy?", a * b
    elif kind == "share":
        b, each = rng.randint(2, 9), rng.randint(2, 10)
        text, answer = (
            f"{name} shares {b * each} {thing} equally among {b} friends. How many {thing} does each friend get?",
            each,
        )
    else:
        c = rng.randint(1, min(a + b - 1, 15))
        text = f"{name} has {a} {thing}, finds {b} more, then loses {c}. How many {thing} does {name} have now?"
        answer = a + b - c
    return {"prompt": f"{text}\n{INSTRUCTION}", "answer": str(answer), "operation": kind}


def write_splits(train: int, heldout: int, seed: int, folder: Path = FOLDER) -> tuple[Path, Path]:
    """Write `train` and `heldout` distinct problems; return the two files."""
    rng, seen, problems = random.Random(seed), set(), []
    while len(problems) < train + heldout:
        found = problem(rng)
        if found["prompt"] not in seen:
            seen.add(found["prompt"])
            problems.append(found)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "arithmetic-train.jsonl", folder / "arithmetic-heldout.jsonl"
    for path, rows in zip(paths, (problems[:train], problems[train:]), strict=True):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_splits(args.train, args.heldout, args.seed):
        print(path)
