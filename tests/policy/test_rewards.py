"""Built-in verifiable rewards: answers read from every common form, numbers compared by value, formats, limits."""

import doctest

import pytest

from policy import rewards
from policy.rewards import (
    exact_answer,
    extract_answer,
    format_answer_line,
    format_reasoning,
    length_in_range,
    matches_format,
    normalise_answer,
    truncated_penalty,
)


def test_the_documented_examples_hold():
    assert doctest.testmod(rewards).failed == 0


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so the total is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}} and later 7", "\\frac{1}{2}"),
        ("<think>2+2</think><answer> 4 </answer>", "4"),
        ("Let me think. 3 + 4 = 7\nAnswer: 7 apples", "7 apples"),
        ("The answer is 12.", "12."),
        ("first 3 then 8, finally -2.5 left", "-2.5"),
        ("I will answer this in words only", None),
        ("no numbers here", None),
    ],
)
def test_extract_answer_reads_boxed_tags_answer_lines_and_the_last_number(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("left", "right"),
    [("5", "5.0"), ("$5", "5"), ("1,000", "1000"), ("0.5", "1/2"), ("7.", "7"), ("45%", "45"), ("Paris", " paris. ")],
)
def test_normalised_answers_agree(left, right):
    assert normalise_answer(left) == normalise_answer(right)


def test_exact_answer_compares_with_the_reference_column():
    completions = ["Answer: 7 apples", "It is 8.", "\\boxed{7.0}", "seven", "Answer: 7", "7"]
    answers = ["7", "7", "7", "7", None, ""]
    assert exact_answer(["q"] * 6, completions, answer=answers) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_exact_answer_reads_prompts_as_text_or_messages():
    prompts = ["what is 3+4?", [{"role": "user", "content": "what is 3+4?"}]]
    assert exact_answer(prompts, ["7", "Answer: 7"], answer=[7, "7"]) == [1.0, 1.0]


def test_format_checks_match_the_whole_response():
    assert format_answer_line(["q"] * 4, [
        "3 + 4 = 7\nAnswer: 7", "Answer: 7", "reasoning\n**Answer:** 7", "3 + 4 = 7\nAnswer: 7\nmore text after",
    ]) == [1.0, 0.0, 1.0, 0.0]  # fmt: skip
    assert format_reasoning(["q"] * 2, ["<think>a</think><answer>b</answer>", "<answer>b</answer>"]) == [1.0, 0.0]
    steps = matches_format(r"Step 1:.*Answer: \d+")
    assert steps(["q"] * 2, ["Step 1: add\nAnswer: 3", "Answer: 3"]) == [1.0, 0.0]


def test_truncation_and_length_rewards():
    assert truncated_penalty(["q"] * 3, ["a", "b", "c"], truncated=[True, False, True]) == [-1.0, 0.0, -1.0]
    in_range = length_in_range(2, 3)
    assert in_range(["q"] * 3, ["one", "one two", "one two three four"]) == [0.0, 1.0, 0.0]
    assert length_in_range(1, 4, unit="chars")(["q"] * 2, ["abcd", "abcde"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unit"):
        length_in_range(1, 2, unit="tokens")
