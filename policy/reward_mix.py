"""Several rewards, weighted: reward models and Python functions summed into the one reward PPO and GRPO optimize.

A run's `rewards` names its components, comma-separated, each `SOURCE=WEIGHT` (the weight defaults to 1):

    policy.rewards:exact_answer=1.0,policy.rewards:format_answer_line=0.5,model:runs/rm-20250101-120000=1.0

SOURCE is `package.module:function` (a reward function, see `policy.rewards`) or `model:FOLDER_OR_NAME` (a
reward-model run). A component is named after its function, or its reward-model run's folder; its raw scores are
logged as `rewards/<name>/mean` and `/std`, and the run optimizes r = Σ_i w_i r_i (then the missing-EOS penalty).

A function is called TRL's way, `function(prompts, completions, **columns)`: each prompt's columns (`answer`, ...)
as keywords with one value per completion, plus `truncated` (cut by the token limit); it gets only the keywords it
names (all of them with `**kwargs`), so `(prompts, responses)` functions work unchanged. An exception, a wrong count
or a non-finite value raises RewardError naming the component, the row and the value.
"""

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.chat import conversation, plain_layout
from policy.reward_specs import RewardSpec

ROLLOUT_KEYWORDS = ("truncated", "messages")  # what the rollout adds beside the prompts' own columns


class RewardError(ValueError):
    """A reward component failed or returned a value that cannot be trained on; the message names it."""


def load_function(spec: str) -> Callable:
    """Return the callable named 'package.module:function'."""
    module_name, _, attribute = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load reward function {spec!r}: {error}") from error
    if not callable(function):
        raise ValueError(f"reward function {spec!r} is not callable")
    return function


# ---------------------------------------------------------------------------------------------------------------
# Calling one component, and checking what it returns.


def reward_keywords(function: Callable, name: str, available: dict[str, list]) -> dict[str, list]:
    """Return the keywords `function` takes out of `available` (all with **kwargs); raise RewardError for a
    required one the prompts do not have."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: call it with (prompts, completions) only
        return {}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    named = [p for i, p in enumerate(parameters) if not (i < 2 and p.kind in positional)]
    wanted = {}
    for parameter in named:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if parameter.name in available:
            wanted[parameter.name] = available[parameter.name]
        elif parameter.default is inspect.Parameter.empty:
            columns = sorted(set(available) - set(ROLLOUT_KEYWORDS)) or "none"
            raise RewardError(
                f"reward function {name} needs the column {parameter.name!r}, which the prompts do not have "
                f"(their columns: {columns})"
            )
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return dict(available)
    return wanted


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_scores(name: str, scores, prompts: list, responses: list[str]) -> torch.Tensor:
    """Return a component's scores as a (B,) float32 CPU tensor; raise RewardError naming the row and the value
    for a wrong count, a value that is not a number, or a NaN or infinity."""
    values = scores.tolist() if torch.is_tensor(scores) else list(scores)
    if len(values) != len(responses):
        raise RewardError(f"reward {name} returned {len(values)} values for {len(responses)} responses")
    for row, value in enumerate(values):
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if number is None or not math.isfinite(number):
            raise RewardError(
                f"reward {name} returned {_short(value)} at row {row} (prompt {_short(prompts[row])}, "
                f"response {_short(responses[row])}): every reward must be a finite number"
            )
    return torch.tensor(values, dtype=torch.float32)


def call_function(function: Callable, name: str, prompts: list, responses: list[str], keywords: dict) -> torch.Tensor:
    """Return a reward function's checked scores; on an exception, find the first row that fails alone and name it."""
    try:
        scores = function(prompts, responses, **keywords)
    except Exception as error:
        row = _failing_row(function, prompts, responses, keywords)
        where = (
            f" at row {row} (prompt {_short(prompts[row])}, response {_short(responses[row])})"
            if row is not None
            else ""
        )
        raise RewardError(f"reward function {name} failed{where}: {type(error).__name__}: {error}") from error
    return checked_scores(name, scores, prompts, responses)


def _failing_row(function: Callable, prompts: list, responses: list[str], keywords: dict) -> int | None:
    for row in range(len(responses)):
        try:
            function([prompts[row]], [responses[row]], **{key: [values[row]] for key, values in keywords.items()})
        except Exception:
            return row
    return None


# ---------------------------------------------------------------------------------------------------------------
# The mix.


@dataclass
class RewardComponent:
    """One weighted reward: a Python function, or a reward-model scorer (anything with `.score(prompts, responses)`)."""

    name: str
    weight: float
    source: str
    reward: object  # the function or the scorer

    def score(self, prompts: list, responses: list[str], available: dict[str, list]) -> torch.Tensor:
        """Return this component's raw scores, (B,) on the CPU."""
        if hasattr(self.reward, "score"):
            try:
                scores = self.reward.score(prompts, responses)
            except Exception as error:
                raise RewardError(f"reward model {self.name} failed: {type(error).__name__}: {error}") from error
            return checked_scores(self.name, scores, prompts, responses)
        keywords = reward_keywords(self.reward, self.name, available)
        # A function reads text: a single-turn prompt as it is, a conversation as its plain transcript; one that
        # names `messages` gets each prompt's turns too.
        texts = [plain_layout(prompt, generation_prompt=False) for prompt in prompts]
        return call_function(self.reward, self.name, texts, responses, keywords)


class RewardMix:
    """The weighted sum of a run's reward components; `score` returns the total and each component's raw scores."""

    def __init__(self, components: list[RewardComponent]):
        if not components:
            raise ValueError("a run needs at least one reward component")
        self.components = components

    def score(self, prompts: list, responses: list[str], columns: list[dict] | None = None, truncated=None):
        """Return (total (B,), {name: (B,)}): r = Σ_i w_i r_i over the components, each row's columns as keywords."""
        available = column_lists(columns, len(responses))
        available["truncated"] = [
            bool(cut) for cut in (truncated if truncated is not None else [False] * len(responses))
        ]
        available["messages"] = [conversation(prompt) for prompt in prompts]
        parts = {component.name: component.score(prompts, responses, available) for component in self.components}
        total = torch.zeros(len(responses))
        for component in self.components:
            total = total + component.weight * parts[component.name]
        return total, parts

    def __call__(self, prompts: list, responses: list[str]) -> torch.Tensor:
        """Return the total alone: a mix is also a plain (prompts, responses) reward."""
        return self.score(prompts, responses)[0]

    def describe(self) -> list[dict]:
        """Return [{name, weight, source}] of the components, as the run's lineage and the registry record them."""
        return [{"name": c.name, "weight": c.weight, "source": c.source} for c in self.components]

    @property
    def names(self) -> list[str]:
        return [component.name for component in self.components]


def column_lists(columns: list[dict] | None, rows: int) -> dict[str, list]:
    """Return {column: one value per row} from one dict per row (None where a row lacks the column)."""
    columns = columns or [{} for _ in range(rows)]
    if len(columns) != rows:
        raise ValueError(f"got columns for {len(columns)} rows but {rows} responses")
    names = dict.fromkeys(name for row in columns for name in row)
    return {name: [row.get(name) for row in columns] for name in names}


def as_reward_mix(reward) -> RewardMix:
    """Return a RewardMix as is; a scorer (`.score`) or a callable becomes one component named 'reward', weight 1."""
    if isinstance(reward, RewardMix):
        return reward
    if hasattr(reward, "score") or callable(reward):
        return RewardMix([RewardComponent("reward", 1.0, getattr(reward, "__name__", "python"), reward)])
    raise TypeError(f"a reward must be a scorer with .score(prompts, responses) or a callable, got {type(reward)}")


def reward_metrics(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return `rewards/<name>/mean` and `/std` of each component's raw scores (0-dim tensors)."""
    metrics = {}
    for name, scores in parts.items():
        metrics[f"rewards/{name}/mean"] = scores.float().mean()
        metrics[f"rewards/{name}/std"] = scores.float().std() if scores.numel() > 1 else scores.new_zeros(())
    return metrics


def build_mix(specs: list[RewardSpec], load_reward_model: Callable | None, device: str | None) -> RewardMix:
    """Return the mix of these components: functions imported, reward-model runs (`model:FOLDER`, resolved) loaded
    with `load_reward_model(folder, device)`."""
    components = []
    for spec in specs:
        if spec.kind == "model":
            if load_reward_model is None:
                raise ValueError("a reward-model run needs a loader: pass load_reward_model=RewardScorer.from_run")
            reward = load_reward_model(spec.target, device)
        else:
            reward = load_function(spec.target)
        components.append(RewardComponent(spec.name, spec.weight, spec.source, reward))
    return RewardMix(components)
