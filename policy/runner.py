"""What PPO, GRPO and DPO runs share: the start (sharding, inputs read on the main process, the policy), checkpoints,
resume, the registry record with its lineage, and the end.

Built on `accelerate` through `core.distributed.Sharding`, so `torchrun --nproc_per_node N` (or `accelerate
launch`) runs the same command data-parallel or sharded: each process samples its own prompts (or takes its share
of the pairs), gradients are averaged by the engine, the main process writes files.
"""

import json
import random
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from core.chat import fitted_prompt_ids
from core.distributed import Sharding
from core.memory import HeldModel, ModelShape
from core.models import DeviceChoice, disable_dropout, enable_gradient_checkpointing
from core.runs import METRICS_FILE, MetricsWriter, report_cut
from data.importers import read_prompts_with_columns
from data.prompt_columns import stored_columns
from data.prompts import all_prompts
from data.registry import check_run_name, get_model
from data.registry import record_run as record_run_in_registry
from policy.config import RunConfig
from policy.lora import LoraSettings, load_policy, policy_memory, save_checkpoint
from policy.reward_mix import RewardMix, RewardSpec, as_reward_mix, build_mix
from policy.reward_specs import MODEL_PREFIX
from policy.rollout import RewardFn

STATE_FILE = "trainer_state.pt"
FAILED_FILE = "failed.json"  # written when a run stops on an error: what stopped it, and when
ENGINE_STATE = "engine_state"  # DeepSpeed's per-process optimizer and weight shards


@dataclass
class RunContext:
    """Everything a training loop needs, made once by `start_run`."""

    config: RunConfig
    sharding: Sharding
    policy: torch.nn.Module  # the plain model; the loop prepares its own (possibly wrapped) module
    reference: torch.nn.Module | None  # None with LoRA: the policy with its adapter disabled
    tokenizer: object
    inputs: object  # what the main process read: prompts (PPO, GRPO) or pairs (DPO)
    lineage: dict  # where the run comes from: base model, reward, prompts or pairs
    run_dir: Path
    writer: MetricsWriter
    start_step: int = 0
    resumed_state: dict = field(default_factory=dict)
    reward_fn: RewardMix | None = None  # the weighted reward components (`policy.reward_mix`)
    reward_models: list = field(default_factory=list)  # loaded reward-model scorers, placed by `prepare_training`
    prompt_columns: list[dict] = field(default_factory=list)  # each prompt's other columns (answer, ...)

    @property
    def accelerator(self):
        return self.sharding.accelerator


def run_memory(config: RunConfig, shape: ModelShape, reward_shapes: list[ModelShape], device: DeviceChoice):
    """Return the models a run keeps as `start_run` and `start_policy_gradient_run` load them: the policy (and a
    full fine-tuning run's reference) in the training dtype, and each reward model a PPO or GRPO run scores with,
    frozen, as `RewardScorer` loads it (bf16 on a GPU, float32 on a CPU)."""
    models = policy_memory(shape, config.lora_rank, 2 if device.dtype == torch.bfloat16 else 4)
    scorer_bytes = 2 if device.device.type == "cuda" else 4
    return models + [HeldModel("reward model", s, scorer_bytes, 0) for s in reward_shapes]


def start_run(config: RunConfig, read_inputs: Callable[[], tuple[object, dict]], store=None, resume: bool = False):
    """Return a RunContext: sharding, inputs, the policy (from the run's last checkpoint when resuming), the writer.

    `read_inputs()` runs on the main process alone (DuckDB allows one writer) after the run folder and its
    registry name are checked, and returns (inputs, lineage); every process gets both. Bad input fails here,
    before any model is loaded or file written.
    """
    sharding = Sharding(config.device, config.precision)

    def checked_inputs():
        _check_run_dir(Path(config.output_dir), resume)
        check_run_name(store, Path(config.output_dir))
        return read_inputs()

    # The run folder comes from the main process too: a default name holds a timestamp that could differ.
    (inputs, lineage), config.output_dir = sharding.from_main(checked_inputs, config.output_dir)
    run_dir = Path(config.output_dir)
    state = _load_state(run_dir)
    if state and state["step"] >= config.steps:
        raise ValueError(f"{run_dir} is already at step {state['step']}; resume with more steps (--steps)")
    torch.manual_seed(config.seed + sharding.rank + state.get("step", 0))
    random.seed(config.seed + sharding.rank)
    lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha)
    with sharding.loading():
        policy, reference, tokenizer = load_policy(config.model, lora, sharding.device, sharding.choice.dtype)
    if state:
        _restore_weights(policy, run_dir)
    disable_dropout(policy)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    if sharding.is_main:
        (run_dir / FAILED_FILE).unlink(missing_ok=True)  # a failed run resumed from its last checkpoint
        config.save(run_dir)
    return RunContext(
        config=config,
        sharding=sharding,
        policy=policy,
        reference=reference,
        tokenizer=tokenizer,
        inputs=inputs,
        lineage={"base_model": config.model, **lineage},
        run_dir=run_dir,
        writer=MetricsWriter(run_dir, sharding.is_main, config.report_to, config.to_dict()),
        start_step=state.get("step", 0),
        resumed_state=state,
    )


def start_policy_gradient_run(
    config: RunConfig,
    reward=None,
    prompts: list | None = None,
    store=None,
    resume: bool = False,
    load_reward_model: Callable[[str, str | None], RewardFn] | None = None,
) -> RunContext:
    """Return the RunContext of a PPO or GRPO run: `start_run` with prompts as inputs, and the reward.

    `reward`: a callable (prompts, responses) -> floats (a RewardScorer, say) or a `RewardMix`, or None to build
    the mix from the config's `rewards` (or its one reward_kind): Python functions by name, reward-model runs
    loaded with `load_reward_model(run_folder, device)`. Loading reward models is `rm`'s job, which this package
    does not import: the caller passes `rm.score.RewardScorer.from_run` (as `rlhf-studio train-policy` does).
    `prompts`: a list (each a prompt, or a row {"prompt": ..., "answer": ..., ...} whose other keys are its
    columns), or None to read config.prompts_file, else every prompt in the DuckDB store.
    """
    specs = None
    if reward is None:
        specs = config.reward_specs()  # raises for a missing or malformed reward before anything is read
        if any(spec.kind == "model" for spec in specs) and load_reward_model is None:
            raise ValueError("a reward-model run needs a loader: pass load_reward_model=RewardScorer.from_run")

    def read_inputs():
        found, columns, prompts_source = _prompts(config, prompts, store)
        resolved = _resolved_specs(specs, store) if specs is not None else None
        lineage = {"reward": _reward_source(reward, resolved), "prompts": prompts_source}
        if resolved is not None:
            lineage["rewards"] = [{"name": s.name, "weight": s.weight, "source": s.source} for s in resolved]
        return (found, columns, resolved), lineage

    ctx = start_run(config, read_inputs, store, resume)
    ctx.inputs, ctx.prompt_columns, resolved = ctx.inputs
    if reward is not None:
        ctx.reward_fn = as_reward_mix(reward)
    else:
        device = "cpu" if ctx.sharding.device.type == "cpu" else None
        ctx.reward_fn = build_mix(resolved, load_reward_model, device)
    ctx.reward_models = [c.reward for c in ctx.reward_fn.components if hasattr(c.reward, "model")]
    if ctx.sharding.is_main and not ctx.start_step:  # a prompt too long even alone fails here, before sampling
        fitted = [
            fitted_prompt_ids(ctx.tokenizer, p, config.max_prompt_tokens, i + 1) for i, p in enumerate(ctx.inputs)
        ]
        report_cut(ctx.writer, sum(cut for _, cut in fitted), len(fitted), "prompts", config.max_prompt_tokens)
    return ctx


@contextmanager
def failure_marked(ctx: RunContext):
    """Run a training loop; on any error write `failed.json` (the error, the time) in the run folder, close the
    writer, and re-raise. Checkpoints are written whole or not at all (`save_run`), so a failed run's folder holds
    its config, its metrics so far, its last whole checkpoint if any, and this mark; nothing is recorded."""
    try:
        yield
    except BaseException as error:
        if ctx.sharding.is_main:
            record = {"status": "failed", "error": f"{type(error).__name__}: {error}", "time": time.time()}
            (ctx.run_dir / FAILED_FILE).write_text(json.dumps(record, indent=2))
        ctx.writer.close()
        raise


def prepare_training(ctx: RunContext, model, optimizer, rows_per_step: int):
    """Return (model, optimizer) prepared for the layout, with the frozen models beside them placed the same way
    (the reference copy of a full fine-tuning run, a reward model), and a resumed run's optimizer state loaded."""
    sharding = ctx.sharding
    model, optimizer = sharding.prepare(model, optimizer, rows_per_step, ctx.config.max_grad_norm)
    ctx.reference = sharding.prepare_frozen(ctx.reference)
    for scorer in ctx.reward_models:
        scorer.model = sharding.prepare_frozen(scorer.model)
    if ctx.resumed_state:
        sharding.load_optimizer(optimizer, ctx.resumed_state, ctx.run_dir)
    return model, optimizer


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to mix two runs in one folder: a new run needs a fresh folder, a resumed one a saved state."""
    has_state = (run_dir / STATE_FILE).exists()
    if resume and not has_state:
        raise ValueError(f"cannot resume {run_dir}: it holds no {STATE_FILE} (no checkpoint was saved)")
    if not resume and (has_state or (run_dir / METRICS_FILE).exists() or (run_dir / FAILED_FILE).exists()):
        raise ValueError(f"{run_dir} already holds a run; resume it (--resume) or choose another output dir")


def _resolved_specs(specs: list[RewardSpec], store) -> list[RewardSpec]:
    """Return the components with each reward-model run named by its folder (a registry name resolved)."""
    return [
        RewardSpec(MODEL_PREFIX + resolve_reward_run(spec.target, store), spec.weight, spec.name)
        if spec.kind == "model"
        else spec
        for spec in specs
    ]


def _reward_source(reward, specs: list[RewardSpec] | None) -> str | None:
    """Return where the reward comes from: the first reward-model run folder, else the first 'module:function',
    or a label for a reward given as an object."""
    if reward is not None:
        return getattr(reward, "run_dir", None) or getattr(reward, "__name__", "python")
    models = [spec.target for spec in specs if spec.kind == "model"]
    return models[0] if models else specs[0].target


def resolve_reward_run(name_or_path: str, store=None) -> str:
    """Return the folder of a reward-model run given its folder or its name in the registry."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    if store is not None:
        try:
            record = get_model(store, name_or_path)
        except KeyError:
            record = None
        if record is not None and record["kind"] == "reward" and record["path"]:
            return record["path"]
    raise ValueError(f"reward model {name_or_path!r} is neither a run folder nor a recorded reward-model run")


def _prompts(config: RunConfig, prompts, store) -> tuple[list, list[dict], str]:
    """Return (prompts, each prompt's other columns, where they came from)."""
    if prompts is not None:
        rows = [row if isinstance(row, dict) else {"prompt": row} for row in prompts]
        prompts, columns, source = [row["prompt"] for row in rows], [_others(row) for row in rows], "given"
    elif config.prompts_file:
        (prompts, columns), source = read_prompts_with_columns(config.prompts_file), config.prompts_file
    elif store is not None:
        stored = all_prompts(store)  # text or a conversation
        prompt_ids, prompts = [prompt_id for prompt_id, _ in stored], [prompt for _, prompt in stored]
        columns, source = stored_columns(store, prompt_ids), "duckdb"
    else:
        raise ValueError("no prompts: give a prompts file or a database")
    if not prompts:
        raise ValueError("no prompts to train on: import some first (`rlhf-studio import-prompts`)")
    return list(prompts), columns, source


def _others(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "prompt"}


def prompt_batch(prompts: list, step: int, size: int, rank: int, world: int, seed: int) -> list:
    """Return this process's prompts for a step: a fixed shuffle per epoch, disjoint across processes.

    A function of the step and the list's length alone, so a resumed run continues where it stopped, and the
    prompts' columns picked with the same arguments line up with the prompts.
    """
    first = (step * world + rank) * size
    orders: dict[int, list[int]] = {}
    picked = []
    for index in range(first, first + size):
        epoch, within = divmod(index, len(prompts))
        if epoch not in orders:
            orders[epoch] = random.Random(seed + epoch).sample(range(len(prompts)), len(prompts))
        picked.append(prompts[orders[epoch][within]])
    return picked


def _load_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else {}


def _restore_weights(policy, run_dir: Path) -> None:
    """Load the trained weights of a run being resumed (LoRA adapter, or the full merged model)."""
    if isinstance(policy, PeftModel):
        adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(policy, adapter)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"resuming {run_dir}: adapter keys did not match: {result.unexpected_keys[:3]}")
    else:
        saved = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32)  # sharded or not
        missing, unexpected = policy.load_state_dict(saved.state_dict(), strict=False)
        if unexpected or any("lm_head" not in name for name in missing):  # a tied lm_head is not saved twice
            raise RuntimeError(f"resuming {run_dir}: weights did not match: {(missing + unexpected)[:3]}")


def save_weights(ctx: RunContext, model, step: int, folder: Path | None = None) -> None:
    """Write the policy's checkpoint (adapter/, merged/, checkpoint.json with its lineage) to `folder` (the run
    folder by default): the weights gathered, the main process writing. `model` is the prepared model."""
    metadata = {"algo": ctx.config.algo, "step": step, **ctx.lineage}

    def write(prepared):
        policy = getattr(prepared, "policy", prepared)  # PPO's policy with its value head: the policy
        save_checkpoint(policy, ctx.tokenizer, folder or ctx.run_dir, metadata)

    ctx.sharding.save(model, write)


def save_run(ctx: RunContext, step: int, model, optimizer, extra_state: Callable[[], dict] | None = None) -> None:
    """Write the checkpoint and the trainer state (optimizer, step) for resume.

    `extra_state()` is read with the weights gathered (the value head is split too where the weights are). The state file is
    written whole or not at all, and names the optimizer state's folder only once every process has written its
    part; the previous one is removed after.
    """
    sharding = ctx.sharding
    sharding.accelerator.wait_for_everyone()
    engine_folder = ctx.run_dir / f"{ENGINE_STATE}-{step}"
    optimizer_state = sharding.save_optimizer(optimizer, engine_folder)
    save_weights(ctx, model, step)
    with sharding.gathered(model):
        extra = extra_state() if extra_state else {}
    if sharding.is_main:
        partial = ctx.run_dir / (STATE_FILE + ".partial")
        torch.save({"step": step, **optimizer_state, **extra}, partial)
        partial.replace(ctx.run_dir / STATE_FILE)  # whole or not at all
        for older in ctx.run_dir.glob(f"{ENGINE_STATE}-*"):
            if older != engine_folder:
                shutil.rmtree(older, ignore_errors=True)
    sharding.accelerator.wait_for_everyone()


def finish_run(ctx: RunContext, store, model, metrics: dict, save: Callable[[], None]) -> Path:
    """End a run: `save()` the final checkpoint, record the run in the registry (kind 'policy', with its lineage
    and reward components), close the writer and the process group; return the run folder."""
    save()
    if store is not None and ctx.sharding.is_main:
        config = {"algo": ctx.config.algo, **ctx.config.to_dict(), "lineage": ctx.lineage}
        components = ctx.lineage.get("rewards")
        if components is not None:
            config["reward_components"] = components
            models = [
                c["source"].removeprefix(MODEL_PREFIX) for c in components if c["source"].startswith(MODEL_PREFIX)
            ]
            # The parent of a policy run is the (first) reward model it learned from: the folder a name resolved to.
            config["reward_kind"], config["reward_model"] = ("model", models[0]) if models else ("function", None)
        record_run_in_registry(store, "policy", ctx.run_dir, config, metrics)
    ctx.writer.close()
    ctx.sharding.end()
    return ctx.run_dir


def make_optimizer(model: torch.nn.Module, learning_rate: float, eps: float = 1e-5) -> torch.optim.Optimizer:
    """Return Adam over the trainable parameters (LoRA adapters, value head, or all weights)."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.Adam(trainable, lr=learning_rate, eps=eps)


def progress_bar(ctx: RunContext, algo: str):
    """Return the steps still to run (from the resumed step), with a tqdm bar on the main process."""
    return tqdm(
        range(ctx.start_step, ctx.config.steps),
        initial=ctx.start_step,
        total=ctx.config.steps,
        desc=f"{algo} {ctx.run_dir.name}",
        unit="step",
        disable=not ctx.sharding.is_main,
    )
