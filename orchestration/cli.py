"""`rlhf-studio`: the headless jobs (serve the app, import prompts, sample, export, train)."""

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

from core.allocator import mimalloc_loaded
from core.paths import default_db_path
from orchestration import train_policy_command, train_rm_command
from orchestration.jobs import JOB_KINDS
from orchestration.processes import rerun_with_mimalloc, run_forwarding_signals


def _open_store(args):
    from data.store import Store

    return Store(args.db)


def cmd_prepare_model(args) -> int:
    from core.models import prepare_default_model

    print(prepare_default_model())
    return 0


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args) -> int:
    """Start the Streamlit app on the given address; it finds the database through RLHF_STUDIO_DB."""
    from data.users import has_users

    store = _open_store(args)
    users_defined = has_users(store)
    store.close()  # the app process opens it; DuckDB lets one process write a file
    if args.host not in LOCAL_HOSTS and not users_defined:
        print(
            f"error: refusing to listen on {args.host} with no users defined: anyone who can reach it could "
            "read and change the data. Create an admin first: rlhf-studio add-user NAME --role admin",
            file=sys.stderr,
        )
        return 2
    # The app is the layer above: it runs in its own Streamlit process, so it is found here, never imported.
    main_page = Path(importlib.util.find_spec("app").origin).parent / "main.py"
    env = os.environ | {"RLHF_STUDIO_DB": str(Path(args.db).resolve()), "RLHF_STUDIO_HOST": args.host}
    if args.model:
        env["RLHF_STUDIO_MODEL"] = args.model
    # No file watcher: it reloads edited code, which a served app does not need, and each browser session's
    # watcher scans every loaded module (torch, transformers) after its runs: a third of a sign-in's server CPU
    # at 12 sessions (bench/annotators.py: 0.72 -> 0.52 s).
    command = [
        sys.executable, "-m", "streamlit", "run", str(main_page),
        "--server.address", args.host, "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    announce = f"RLHF Studio on http://{args.host}:{args.port}  (database: {env['RLHF_STUDIO_DB']})"
    return run_forwarding_signals(command, env, announce)


def cmd_import_prompts(args) -> int:
    from data.importers import import_prompts, seed_prompts_path

    store = _open_store(args)
    for source in args.files or [str(seed_prompts_path())]:
        report = import_prompts(store, source)
        print(
            f"{report.source}: read {report.read}, added {report.added}, skipped {report.skipped_duplicates} duplicates"
        )
    return 0


def cmd_sample(args) -> int:
    if args.best_of is not None:
        return cmd_best_of(args)
    from tqdm import tqdm

    from data.settings import load_settings
    from orchestration.sampler import Generator, fill, sampling_params

    if args.prompts < 1:
        raise ValueError(f"--prompts must be >= 1, got {args.prompts}")
    store = _open_store(args)
    changes = {key: getattr(args, key) for key in ("k", "temperature", "top_p", "max_new_tokens", "seed")}
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.model:
        changes["generator_model"] = args.model
    settings = load_settings(store) | changes  # this run only: the app's stored settings stay as they are
    sampling_params(settings)  # refuse bad values before loading any model
    with tqdm(total=args.prompts, desc="sampling", unit="prompt") as bar:
        made = fill(store, Generator(args.device), args.prompts, progress=lambda _: bar.update(1), settings=settings)
    print(f"sampled {made} batches")
    return 0


def cmd_best_of(args) -> int:
    """Sample N responses per prompt, keep the reward model's best, write them as an SFT set (TRL messages)."""
    from tqdm import tqdm

    from core.models import load_causal_lm
    from data.prompts import all_prompts
    from data.registry import path_of
    from data.settings import load_settings
    from orchestration.best_of_n import best_of_n, write_sft_set
    from orchestration.sampler import prompts_per_call, sampling_params
    from rm.score import RewardScorer

    if not args.reward_model or not args.output:
        raise ValueError("--best-of needs --reward-model (a reward-model run) and --output (the SFT set file)")
    if args.best_of < 2 or args.prompts < 1:
        raise ValueError(f"--best-of must be >= 2 and --prompts >= 1, got {args.best_of} and {args.prompts}")
    store = _open_store(args)
    changes = {key: getattr(args, key) for key in ("temperature", "top_p", "max_new_tokens", "seed")}
    settings = load_settings(store) | {key: value for key, value in changes.items() if value is not None}
    settings |= {"k": args.best_of} | ({"generator_model": args.model} if args.model else {})
    params = sampling_params(settings)  # refuse bad values before loading any model
    prompts = all_prompts(store)[: args.prompts]
    if not prompts:
        raise ValueError("no prompts: import some first (rlhf-studio import-prompts)")
    scorer = RewardScorer.from_run(path_of(store, args.reward_model), args.device)
    model, tokenizer = load_causal_lm(path_of(store, settings["generator_model"]), args.device)
    with tqdm(total=len(prompts), desc=f"best of {args.best_of}", unit="prompt") as bar:
        results = best_of_n(
            model, tokenizer, scorer, prompts, params.k, params.temperature, params.top_p, params.max_new_tokens,
            params.seed, prompts_per_call(settings), progress=lambda _: bar.update(1),
        )  # fmt: skip
    written = write_sft_set(results, args.output)
    kept = [r.rewards[r.best] for r in results if r.best is not None]
    every = [reward for r in results for reward in r.rewards]
    rewards = f"mean reward kept {sum(kept) / len(kept):+.3f}, of all samples {sum(every) / len(every):+.3f}"
    print(f"wrote {written} best-of-{args.best_of} responses to {args.output} ({rewards if kept else 'all empty'})")
    return 0


def cmd_add_user(args) -> int:
    """Create a user; the password is read from stdin or a prompt, never from the command line or a log."""
    import getpass

    from data.users import add_user

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    add_user(_open_store(args), args.name, args.role, password, replace=args.replace)
    print(f"saved {args.role} {args.name}")
    return 0


def cmd_backup(args) -> int:
    from data.backup import backup

    print(f"backup written to {backup(_open_store(args), args.target)}")
    return 0


def cmd_restore(args) -> int:
    from data.backup import restore

    restored = restore(args.backup, args.db, overwrite=args.overwrite)
    kept = f"; the database it replaced is kept as {restored.kept}" if restored.kept else ""
    print(f"restored {args.backup} into {restored.target}{kept}")
    return 0


def cmd_export(args) -> int:
    from data.export import export

    store = _open_store(args)
    rows = export(store, args.output, kind=args.kind, fmt=args.format)
    print(f"wrote {rows} {args.kind} rows to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-studio", description=__doc__)
    parser.add_argument("--db", default=str(default_db_path()), help="DuckDB file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("prepare-model", help="convert the packaged default model once (cached)")
    p.set_defaults(func=cmd_prepare_model)

    p = commands.add_parser("serve", help="start the browser app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--model", help="generator model (default: the stored setting)")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("import-prompts", help="import prompts (JSONL, CSV, Parquet, datasets folder or hub name)")
    p.add_argument("files", nargs="*", help="default: the prompts shipped with RLHF Studio")
    p.set_defaults(func=cmd_import_prompts)

    p = commands.add_parser(
        "sample", help="sample K responses for prompts that have none waiting, or best-of-N into an SFT set"
    )
    p.add_argument("--prompts", type=int, default=10, help="how many prompts to sample for")
    p.add_argument(
        "--best-of", dest="best_of", type=int, metavar="N",
        help="sample N responses per prompt (the first --prompts prompts) and keep the reward model's best, "
        "written to --output as an SFT set in TRL's messages format (rejection sampling); nothing is stored",
    )  # fmt: skip
    p.add_argument("--reward-model", dest="reward_model", help="with --best-of: a reward-model run (name or folder)")
    p.add_argument("--output", help="with --best-of: the SFT set file (.jsonl or .parquet)")
    p.add_argument("--model", help="generator: 'default', a hub id, a folder or a policy run")
    p.add_argument("--k", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", dest="top_p", type=float)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser("export", help="export rankings, chosen/rejected pairs, the SFT set, or prompts")
    p.add_argument("output", help="a .parquet or .jsonl file")
    p.add_argument(
        "--kind", choices=["pairs", "rankings", "sft", "prompts"], default="pairs",
        help="sft: each ranking's best response (annotators' own answers included) in TRL's messages format; "
        "prompts: every prompt with its columns (answer, ...), ready to import again",
    )  # fmt: skip
    p.add_argument("--format", choices=["parquet", "jsonl"], help="default: from the file's suffix")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("add-user", help="create a user (password read from stdin or a prompt)")
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "annotator"], default="annotator")
    p.add_argument("--replace", action="store_true", help="reset an existing user's role and password")
    p.set_defaults(func=cmd_add_user)

    p = commands.add_parser("backup", help="write a consistent snapshot of the database to a new file")
    p.add_argument("target", help="a new .duckdb file")
    p.set_defaults(func=cmd_backup)

    p = commands.add_parser("restore", help="restore a snapshot into --db (stop the app first)")
    p.add_argument("backup", help="a file written by `rlhf-studio backup`")
    p.add_argument("--overwrite", action="store_true", help="replace --db (the old file is kept as .before-restore)")
    p.set_defaults(func=cmd_restore)

    train_rm_command.register(commands)
    train_policy_command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and args.command in JOB_KINDS:  # training and sampling
        rerun_with_mimalloc()  # a CPU run's freed memory reused and returned (core/allocator.py)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a training command may rerun itself under a launcher
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command in JOB_KINDS:
        logging.getLogger(__name__).info("allocator: %s", "mimalloc" if mimalloc_loaded() else "glibc")
    from data.store import StoreError

    try:
        return args.func(args)
    except (ValueError, StoreError, OSError) as error:  # OSError: a model or file that cannot be loaded
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
