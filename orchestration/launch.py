"""Queue a training run: check it (`preflight`), export its data into a new run folder, submit the job.

A job never opens the app's DuckDB file (DuckDB lets one process write it): its data is exported into
`<run_dir>/inputs/` first, and `follow.record_finished_run` records the run in the registry when it ends well.
"""

import json
import shutil
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from core.memory import MemoryEstimate
from data import jobs as job_table
from data import registry
from data.export import best_ranked_demonstrations, export, ranked_items
from data.prompt_columns import stored_columns
from data.prompts import all_prompts
from data.store import Store
from orchestration import jobs
from orchestration.preflight import Checked, policy_checks, reward_model_checks
from policy.config import CONFIGS
from policy.reward_specs import MODEL_PREFIX, RewardSpec, format_rewards, parse_rewards
from rm.config import RewardConfig


@dataclass
class Launch:
    """What pressing Launch did: the problems that blocked it, or the queued job and its command."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    job_id: int | None = None
    command: str | None = None
    run_dir: Path | None = None
    memory: MemoryEstimate | None = None  # the estimate's parts, shown beside the verdict


def config_flags(config, given=None) -> list[str]:
    """Return the CLI flags of the config's fields (or of those `given`) that differ from their defaults.

    Values derived in __post_init__ (a learning rate chosen from the LoRA rank) stay derived in the job too.
    """
    flags = []
    for spec in fields(config):
        if given is not None and spec.name not in given and spec.name != "output_dir":
            continue
        value = getattr(config, spec.name)
        default = None if spec.default is MISSING else spec.default
        if value is None or (value == default and spec.name != "output_dir"):
            continue
        flag = "--" + spec.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + spec.name.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def launch_reward_model(store: Store, values: dict, online: bool | None = None) -> Launch:
    """Check, then export the rankings into a new run folder and queue `train-rm`; nothing is queued on a problem."""
    run_dir = jobs.new_run_dir("train-rm")
    rankings = inputs_dir(run_dir) / "rankings.jsonl"
    try:
        config = RewardConfig(**values | {"output_dir": str(run_dir), "rankings": str(rankings)})
    except (TypeError, ValueError) as error:
        return Launch(problems=[str(error)])
    checked = reward_model_checks(config, ranked_items(store), online)
    if checked.problems:
        return Launch(checked.problems, checked.warnings, memory=checked.memory)
    export(store, rankings, kind="rankings", fmt="jsonl")
    return _queue(store, "train-rm", config_flags(config, {*values, "rankings"}), run_dir, checked)


def launch_policy(store: Store, algo: str, values: dict, online: bool | None = None) -> Launch:
    """Check, then export prompts (and DPO pairs) into a new run folder and queue `train-policy`."""
    if algo not in CONFIGS:
        return Launch(problems=[f"unknown algorithm {algo!r}; expected one of {sorted(CONFIGS)}"])
    run_dir = jobs.new_run_dir(f"train-{algo}")
    try:
        if values.get("rewards"):  # a job has no database: reward-model runs go by folder, not registry name
            values = values | {"rewards": reward_run_folders(store, values["rewards"])}
        config = CONFIGS[algo](**values | {"output_dir": str(run_dir)})
        config.check_reward_source()
    except (TypeError, ValueError) as error:
        return Launch(problems=[str(error)])
    stored = all_prompts(store) if config.samples else []  # DPO and SFT train on the exported pairs or answers
    prompt_ids, prompts = [prompt_id for prompt_id, _ in stored], [prompt for _, prompt in stored]
    pairs = inputs_dir(run_dir) / "pairs.jsonl"
    demonstrations = inputs_dir(run_dir) / "demonstrations.jsonl"
    exported = {
        "dpo": lambda: _export_pairs(store, pairs),
        "sft": lambda: _export_demonstrations(store, demonstrations),
    }
    examples = exported[algo]() if algo in exported else []
    checked = policy_checks(config, prompts, examples, online, prompt_ids)
    if checked.problems:
        _remove_inputs(run_dir)
        return Launch(checked.problems, checked.warnings, memory=checked.memory)
    if algo == "dpo":
        config.pairs_file = str(pairs)
    elif algo == "sft":
        config.sft_file = str(demonstrations)
    else:
        columns = stored_columns(store, prompt_ids)  # answer, ...: what reward functions may read
        config.prompts_file = str(_write_prompts(prompts, columns, inputs_dir(run_dir) / "prompts.jsonl"))
    given = {*values, "prompts_file", "pairs_file", "sft_file"}
    return _queue(store, "train-policy", ["--algo", algo, *config_flags(config, given)], run_dir, checked)


def _write_prompts(prompts: list, columns: list[dict], path: Path) -> Path:
    """Write prompts as JSONL: {"prompt": text or a conversation's messages, **columns}, read back by the importer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ({"prompt": prompt, **row} for prompt, row in zip(prompts, columns, strict=True))
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def reward_run_folders(store: Store, rewards: str) -> str:
    """Return a `rewards` string with each reward-model run named by its folder (a registry name looked up)."""
    specs = []
    for spec in parse_rewards(rewards):
        if spec.kind == "model" and not Path(spec.target).expanduser().is_dir():
            try:
                record = registry.get_model(store, spec.target)
            except KeyError:
                raise ValueError(f"reward {spec.source!r}: no reward-model run of that name or folder") from None
            spec = RewardSpec(MODEL_PREFIX + record["path"], spec.weight, spec.name)
        specs.append(spec)
    return format_rewards(specs)


def _export_pairs(store: Store, path: Path) -> list[dict]:
    """Write the rankings' chosen/rejected pairs as JSONL; return them."""
    export(store, path, kind="pairs", fmt="jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _export_demonstrations(store: Store, path: Path) -> list[dict]:
    """Write the best-ranked response of each ranking as TRL prompt/completion rows; return them."""
    rows = best_ranked_demonstrations(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def _remove_inputs(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)


def _queue(store: Store, kind: str, args: list[str], run_dir: Path, checked: Checked) -> Launch:
    job_id = jobs.submit(store, kind, args, run_dir)
    command = jobs.command_line(job_table.get_job(store, job_id)["argv"])
    return Launch([], checked.warnings, job_id, command, run_dir, checked.memory)


def inputs_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "inputs"
