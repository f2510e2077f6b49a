"""Reward functions: verifiable checks (reference answer, format, truncation, length) and small demo rewards.

Name any of them in a run's `rewards` (`policy.rewards:exact_answer=1.0,policy.rewards:format_answer_line=0.5`), or
write your own with the same shape: `(prompts, completions, **columns) -> list of floats`, TRL's `reward_funcs`
convention. `prompts[i]` is the prompt completion `i` answers (text, or a list of {"role", "content"} messages);
each column of the prompts file (`answer`, `solution`, `difficulty`, ...) arrives as a keyword holding one value
per completion (None where a prompt lacks it). The rollout adds `truncated`: one bool per completion, True when it
was cut by `max_new_tokens` before its end. A function gets only the keywords it names (or all of them with
`**kwargs`), so a plain `(prompts, responses)` function works as before.

Examples (doctest-style; `python -m doctest policy/rewards.py -v` runs them):

>>> exact_answer(["2+3?"] * 4, ["5", "It is 5.", "Answer: 5.0", "so \\\\boxed{6}"], answer=["5"] * 4)
[1.0, 1.0, 1.0, 0.0]
>>> format_answer_line(["q"] * 2, ["3 + 4 = 7.\\nAnswer: 7", "7"])
[1.0, 0.0]
>>> format_reasoning(["q"], ["<think>3 + 4 = 7</think>\\n<answer>7</answer>"])
[1.0]
>>> truncated_penalty(["q"] * 2, ["a", "b"], truncated=[False, True])
[0.0, -1.0]
>>> length_in_range(1, 3)(["q"] * 2, ["one two", "one two three four"])
[1.0, 0.0]
"""

import math
import re
from fractions import Fraction

# ---------------------------------------------------------------------------------------------------------------
# Reading the final answer out of a response.

ANSWER_LINE = re.compile(r"\banswer(?:\*\*)?\s*(?:is\b\s*:?|[:=])\s*(.+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def boxed_content(text: str) -> str | None:
    """Return what the last `\\boxed{...}` holds (nested braces kept), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for position in range(begin, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            if depth == 0:
                return text[begin:position]
            depth -= 1
    return None


def extract_answer(response: str) -> str | None:
    """Return a response's final answer: `\\boxed{…}`, else `<answer>…</answer>`, else the last "Answer: …" line,
    else the last number in the text; None when there is none of these."""
    boxed = boxed_content(response)
    if boxed is not None:
        return boxed.strip()
    tagged = ANSWER_TAG.findall(response)
    if tagged:
        return tagged[-1].strip()
    lines = [match.group(1) for line in response.splitlines() if (match := ANSWER_LINE.search(line))]
    if lines:
        return lines[-1].strip()
    numbers = NUMBER.findall(response)
    return numbers[-1] if numbers else None


def as_number(text: str) -> Fraction | None:
    """Return the exact value of a number written as `1,234`, `-0.50`, `3/4`, `$12`, `45%` or `7.`; else None."""
    cleaned = text.strip().strip("$").rstrip(".").replace(",", "").replace(" ", "").removesuffix("%")
    cleaned = cleaned.removeprefix("\\$")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def normalise_answer(text: str) -> str:
    """Return an answer as compared: a number as its exact value ("5.0", "5", "$5" and "5." agree), other text
    lower-cased with spaces collapsed and surrounding punctuation, `$` and `\\text{}` removed."""
    text = re.sub(r"\\text\{(.*?)\}", r"\1", str(text)).strip()
    value = as_number(text)
    if value is not None:
        return str(value)
    return " ".join(text.lower().strip(" .;:!$*").split())


def answers_match(response: str, reference) -> bool:
    """Return whether a response's final answer equals the reference (None or an empty reference never matches)."""
    if reference is None or (isinstance(reference, float) and math.isnan(reference)) or str(reference).strip() == "":
        return False
    found = extract_answer(response)
    if found is None:
        return False
    reference = str(reference)
    expected = normalise_answer(extract_answer(reference) if "boxed" in reference else reference)
    return normalise_answer(found) == expected or normalise_answer(_first_number(found)) == expected


def _first_number(text: str) -> str:
    """Return the first number in an "Answer: 7 apples" tail, or the text itself."""
    found = NUMBER.search(text)
    return found.group(0) if found else text


# ---------------------------------------------------------------------------------------------------------------
# Verifiable rewards.


def exact_answer(prompts: list, completions: list[str], answer: list, **_) -> list[float]:
    """Return 1.0 where a completion's final answer equals its prompt's `answer` column, else 0.0 (RLVR).

    The final answer is read as `extract_answer` says; numbers are compared by value (`5`, `5.0`, `$5` and `5.`
    match; so do `1,000` and `1000`, `0.5` and `1/2`).
    """
    return [
        1.0 if answers_match(completion, reference) else 0.0
        for completion, reference in zip(completions, answer, strict=True)
    ]


def matches_format(pattern: str, flags: int = re.DOTALL):
    """Return a reward function giving 1.0 to completions that match `pattern` whole (`re.fullmatch`), else 0.0.

    Make your own format check in a module of yours: `steps_then_answer = matches_format(r"Step 1:.*Answer: .+")`.
    """
    compiled = re.compile(pattern, flags)

    def format_reward(prompts: list, completions: list[str], **_) -> list[float]:
        return [1.0 if compiled.fullmatch(completion.strip()) else 0.0 for completion in completions]

    format_reward.__name__ = "matches_format"
    format_reward.__doc__ = f"Return 1.0 where a completion matches {pattern!r} whole, else 0.0."
    return format_reward


# A reasoning block then an answer block (DeepSeek-R1's template, TRL's `think_format_reward`).
REASONING_PATTERN = r"<think>.+?</think>\s*<answer>.+?</answer>"
# Some reasoning, then a last line "Answer: <value>" (what a small chat model can be asked for in plain text).
ANSWER_LINE_PATTERN = r"\S.*\n\s*(?:\*\*)?(?:final )?answer(?:\*\*)?\s*[:=]\s*\S[^\n]*"

format_reasoning = matches_format(REASONING_PATTERN)
format_reasoning.__name__ = "format_reasoning"
format_answer_line = matches_format(ANSWER_LINE_PATTERN, re.DOTALL | re.IGNORECASE)
format_answer_line.__name__ = "format_answer_line"


def truncated_penalty(prompts: list, completions: list[str], truncated: list[bool], **_) -> list[float]:
    """Return -1.0 for a completion cut by the token limit before it ended (no EOS), else 0.0."""
    return [-1.0 if cut else 0.0 for cut in truncated]


def length_in_range(low: int, high: int, unit: str = "words"):
    """Return a reward function giving 1.0 to completions whose length in `unit` ('words' or 'chars') is within
    [low, high], else 0.0. `policy.rewards:length_10_to_200_words` is one; make others in a module of yours."""
    if unit not in ("words", "chars"):
        raise ValueError(f"unit must be 'words' or 'chars', got {unit!r}")

    def length_reward(prompts: list, completions: list[str], **_) -> list[float]:
        lengths = [len(text.split()) if unit == "words" else len(text) for text in completions]
        return [1.0 if low <= length <= high else 0.0 for length in lengths]

    length_reward.__name__ = f"length_{low}_to_{high}_{unit}"
    return length_reward


length_10_to_200_words = length_in_range(10, 200)


# ---------------------------------------------------------------------------------------------------------------
# Demo rewards (smoke runs and tests: a learnable signal without a trained reward model).


def prefer_short(prompts: list, responses: list[str]) -> list[float]:
    """Return minus each response's length in characters / 20: shorter is better."""
    return [-len(response) / 20 for response in responses]


def prefer_long(prompts: list, responses: list[str]) -> list[float]:
    """Return each response's length in words / 10, capped at 1: longer is better, up to ten words."""
    return [min(len(response.split()) / 10, 1.0) for response in responses]


# What the Train page lists (each named `policy.rewards:NAME` in a run's `rewards`).
BUILT_IN = ("exact_answer", "format_answer_line", "format_reasoning", "truncated_penalty", "length_10_to_200_words",
            "prefer_short", "prefer_long")  # fmt: skip
