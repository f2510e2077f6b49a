"""Reward functions the reward tests name by 'module:function' (a run loads its rewards by name)."""

CALLS: list[dict] = []


def echo_answer(prompts, completions, answer):
    """Return 1.0 per completion and remember the answers it was given."""
    CALLS.append({"prompts": list(prompts), "answer": list(answer)})
    return [1.0] * len(completions)


def takes_everything(prompts, completions, **kwargs):
    CALLS.append({"keywords": sorted(kwargs)})
    return [0.5] * len(completions)


def two_arguments(prompts, responses):
    return [float(len(response)) for response in responses]


def fails_on_seven(prompts, completions, answer):
    return [1.0 / (int(value) - 7) for value in answer]


def nan_on_second(prompts, completions, **_):
    return [float("nan") if row == 1 else 0.0 for row in range(len(completions))]


def needs_solution(prompts, completions, solution):
    return [0.0] * len(completions)
