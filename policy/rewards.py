"""Python reward functions usable with `--reward-kind function --reward-function policy.rewards:NAME`.

Any function (prompts, responses) -> list of floats works the same way; these small ones serve demos, smoke
runs and tests, where a learnable signal is needed without a trained reward model.
"""


def prefer_short(prompts: list[str], responses: list[str]) -> list[float]:
    """Return minus each response's length in characters / 20: shorter is better."""
    return [-len(response) / 20 for response in responses]


def prefer_long(prompts: list[str], responses: list[str]) -> list[float]:
    """Return each response's length in words / 10, capped at 1: longer is better, up to ten words."""
    return [min(len(response.split()) / 10, 1.0) for response in responses]
