"""`rlhf-studio train-policy --algo ppo|grpo|dpo`: every config field is a flag (`--learning-rate`, `--kl-coef`, ...).

Data-parallel: `torchrun --nproc_per_node N -m orchestration.cli train-policy ...` runs the same command on N
processes (`accelerate launch` works too where its launcher starts the processes).
"""

import argparse
import json
from dataclasses import MISSING, fields

from core.fields import add_flag
from core.layouts import is_main_process, launched, layout_file
from core.runs import final_metrics, read_run_config
from orchestration.processes import relaunch_under_accelerate
from policy.config import CONFIGS, RunConfig

ALIASES = {"learning_rate": ["--lr"], "output_dir": ["--output"]}


def _all_fields() -> dict:
    """Return {name: (field, help)} once per field across the configs; algorithm-specific help names its algorithm."""
    shared = {field.name for field in fields(RunConfig)}
    found: dict[str, tuple] = {}
    for algo, config_class in CONFIGS.items():
        for field in fields(config_class):
            default = None if field.default is MISSING else field.default
            text = f"{field.metadata['help']} (default: {default})"
            if field.name in shared:
                found[field.name] = (field, text)
            elif field.name in found:
                found[field.name] = (found[field.name][0], f"{found[field.name][1]}; {algo}: {text}")
            else:
                found[field.name] = (field, f"{algo}: {text}")
    return found


def register(subparsers) -> None:
    """Add `train-policy`; prompts come from the global --db unless --prompts-file names a file."""
    parser = subparsers.add_parser(
        "train-policy",
        help="optimize a policy with PPO, GRPO (reward model or Python reward) or DPO (pairs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--algo", choices=sorted(CONFIGS), help="the algorithm (taken from the run when resuming)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a PPO/GRPO run from its last checkpoint")
    for name, (field, text) in _all_fields().items():
        # Choices are checked by each config: a flag such as --loss-type serves configs that differ in them.
        add_flag(parser, field, text, aliases=ALIASES.get(name, []), choices=False)
    parser.set_defaults(func=cmd_train_policy)


def build_config(args):
    """Return the algorithm's config from the flags given (a resumed run starts from its saved config)."""
    given = {name: getattr(args, name) for name in _all_fields() if getattr(args, name) is not None}
    values, algo = {}, args.algo
    if args.resume:
        saved = read_run_config(args.resume)
        if algo and algo != saved["algo"]:
            raise ValueError(f"{args.resume} is a {saved['algo']} run; it cannot be resumed with --algo {algo}")
        algo, values = saved["algo"], saved | {"output_dir": args.resume}
    if algo is None:
        raise ValueError("choose an algorithm: --algo ppo, grpo or dpo")
    if algo not in ("ppo", "grpo") and args.resume:
        raise ValueError(f"only PPO and GRPO runs can be resumed, not {algo}")
    config_class = CONFIGS[algo]
    known = {field.name for field in fields(config_class)}
    foreign = sorted(set(given) - known)
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise ValueError(f"{flags} do not apply to --algo {algo}")
    return config_class.from_dict(values | given)


def cmd_train_policy(args) -> int:
    config = build_config(args)
    if config.accelerate_config and not launched():
        return relaunch_under_accelerate(layout_file(config.accelerate_config), args.argv)
    # Only one process opens DuckDB: it allows one writer, and rank 0 shares the prompts with the others.
    # The app's jobs pass their data as files: a job must not open the app's database, which the app holds.
    needs_store = not (config.pairs_file if config.algo == "dpo" else config.prompts_file)
    store = None
    if is_main_process() and needs_store:
        from data.store import Store

        store = Store(args.db)
    if config.algo == "dpo":
        from policy.dpo import train_dpo

        run_dir = train_dpo(config, store=None if config.pairs_file else store)
    else:
        from rm.score import RewardScorer

        train = _trainer(config.algo)
        run_dir = train(config, store=store, resume=bool(args.resume), load_reward_model=RewardScorer.from_run)
    metrics = {key: value for key, value in final_metrics(run_dir).items() if "/" in key}
    if is_main_process():
        print(f"policy run: {run_dir}")
        print(json.dumps(metrics, indent=2))
    return 0


def _trainer(algo: str):
    if algo == "ppo":
        from policy.ppo import train_ppo

        return train_ppo
    from policy.grpo import train_grpo

    return train_grpo
