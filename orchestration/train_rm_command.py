"""`rlhf-studio train-rm`: the RewardConfig fields as flags (`--batch-size`, `--lora-rank`, ...)."""

import json
from dataclasses import MISSING, fields

from core.fields import add_flag
from core.layouts import is_main_process, launched, layout_file
from orchestration.processes import relaunch_under_accelerate
from rm.config import RewardConfig

ALIASES = {"learning_rate": ["--lr"], "center_coefficient": ["--center-rewards-coefficient"]}


def register(subparsers) -> None:
    """Add the `train-rm` subcommand; it reads rankings from the global --db unless --pairs names a file."""
    parser = subparsers.add_parser(
        "train-rm", help="train a reward model on the rankings (or a pairs file)", description=RewardConfig.__doc__
    )
    for field in fields(RewardConfig):
        default = None if field.default is MISSING else field.default
        text = f"{field.metadata['help']} (default: {default})"
        add_flag(parser, field, text, default, ALIASES.get(field.name, []))
    parser.set_defaults(func=cmd_train_rm)


def cmd_train_rm(args) -> int:
    from rm.accuracy import held_out_accuracy
    from rm.train import train_reward_model

    config = RewardConfig(**{field.name: getattr(args, field.name) for field in fields(RewardConfig)})
    if config.accelerate_config and not launched():
        return relaunch_under_accelerate(layout_file(config.accelerate_config), args.argv)
    store = None
    # Only rank 0 opens DuckDB (it allows one writer); it shares the rankings with the other processes.
    if not config.pairs and not config.rankings and is_main_process():
        from data.store import Store

        store = Store(args.db)
    result = train_reward_model(config, store)
    if not is_main_process():  # under `accelerate launch`, the main process reports
        return 0
    print(f"reward model run: {result.run_dir}")
    accuracy = held_out_accuracy(result.metrics)
    print(f"held-out accuracy (epoch {result.metrics['epoch']} of {result.metrics['epochs_run']}): {accuracy}")
    if accuracy.warning():
        print(f"warning: {accuracy.warning()}")
    print(json.dumps({key: value for key, value in result.metrics.items() if "/" in key}, indent=2))
    return 0
