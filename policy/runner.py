"""What PPO, GRPO and DPO runs share: set-up on accelerate, inputs read on rank 0, checkpoints, resume, the registry.

Built on `accelerate`, so `torchrun --nproc_per_node N` (or `accelerate launch`) runs the same command
data-parallel: each process samples its own prompts, gradients are averaged by DDP, rank 0 writes files.
"""

import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from core.distributed import from_main_process, full_parameters, make_accelerator, whole_model_loading, zero_stage
from core.models import DeviceChoice, disable_dropout, training_dtype
from core.runs import METRICS_FILE, MetricsWriter
from data.importers import read_prompts
from data.prompts import all_prompts
from data.registry import check_run_name, get_model
from data.registry import record_run as record_run_in_registry
from policy.config import RunConfig
from policy.lora import LoraSettings, load_policy, save_checkpoint
from policy.rollout import RewardFn, as_reward_fn, load_reward_function

STATE_FILE = "trainer_state.pt"
ENGINE_STATE = "engine_state"  # DeepSpeed's per-process optimizer and weight shards


@dataclass
class RunContext:
    """Everything a training loop needs, made once by `start_run`."""

    config: RunConfig
    accelerator: Accelerator
    policy: torch.nn.Module  # the plain model; the loop prepares its own (possibly wrapped) module
    reference: torch.nn.Module | None  # None with LoRA: the policy with its adapter disabled
    tokenizer: object
    prompts: list[str]
    reward_fn: RewardFn
    run_dir: Path
    writer: MetricsWriter
    start_step: int = 0
    resumed_state: dict = field(default_factory=dict)
    reward_source: str | None = None
    prompts_source: str = "duckdb"


def start_run(
    config: RunConfig,
    reward=None,
    prompts: list[str] | None = None,
    store=None,
    resume: bool = False,
    load_reward_model: Callable[[str, str | None], RewardFn] | None = None,
) -> RunContext:
    """Return a RunContext: accelerator, policy (from the run's last checkpoint when resuming), prompts, reward.

    `reward`: a callable (prompts, responses) -> floats (a RewardScorer, say), or None to build it from the config:
    a Python function by name, or a reward-model run loaded with `load_reward_model(run_folder, device)`.
    Loading reward models is `rm`'s job, which this package does not import: the caller passes
    `rm.score.RewardScorer.from_run` (as `rlhf-studio train-policy` does).
    `prompts`: a list, or None to read config.prompts_file, else every prompt in the DuckDB store.
    """
    if reward is None:
        config.check_reward_source()
        if config.reward_kind == "model" and load_reward_model is None:
            raise ValueError("a reward-model run needs a loader: pass load_reward_model=RewardScorer.from_run")
    accelerator, choice = make_accelerator(config.device)

    def read_inputs():
        _check_run_dir(Path(config.output_dir), resume)
        check_run_name(store, Path(config.output_dir))
        return (*_prompts(config, prompts, store), _reward_source(config, reward, store))

    # The run folder comes from rank 0 too: a default name holds a timestamp that could differ between processes.
    (prompts, prompts_source, reward_source), config.output_dir = from_main_process(
        accelerator, read_inputs, config.output_dir
    )
    run_dir = Path(config.output_dir)
    reward_fn = _reward_fn(config, reward, reward_source, load_reward_model, choice)
    state = _load_state(run_dir)
    if state and state["step"] >= config.steps:
        raise ValueError(f"{run_dir} is already at step {state['step']}; resume with more steps (--steps)")
    torch.manual_seed(config.seed + accelerator.process_index + state.get("step", 0))
    random.seed(config.seed + accelerator.process_index)
    lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha)
    with whole_model_loading(accelerator):
        policy, reference, tokenizer = load_policy(config.model, lora, accelerator.device, training_dtype(choice))
    if state:
        _restore_weights(policy, run_dir)
    disable_dropout(policy)
    if accelerator.is_main_process:
        config.save(run_dir)
    return RunContext(
        config=config,
        accelerator=accelerator,
        policy=policy,
        reference=reference,
        tokenizer=tokenizer,
        prompts=prompts,
        reward_fn=reward_fn,
        run_dir=run_dir,
        writer=MetricsWriter(run_dir, accelerator.is_main_process, config.report_to, config.to_dict()),
        start_step=state.get("step", 0),
        resumed_state=state,
        reward_source=reward_source,
        prompts_source=prompts_source,
    )


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to mix two runs in one folder: a new run needs a fresh folder, a resumed one a saved state."""
    has_state = (run_dir / STATE_FILE).exists()
    if resume and not has_state:
        raise ValueError(f"cannot resume {run_dir}: it holds no {STATE_FILE} (no checkpoint was saved)")
    if not resume and (has_state or (run_dir / METRICS_FILE).exists()):
        raise ValueError(f"{run_dir} already holds a run; resume it (--resume) or choose another output dir")


def _reward_source(config: RunConfig, reward, store) -> str | None:
    """Return where the reward comes from: a reward-model run folder, a 'module:function', or a label."""
    if reward is not None:
        return getattr(reward, "run_dir", None) or getattr(reward, "__name__", "python")
    if config.reward_kind == "function":
        return config.reward_function
    if not config.reward_model:
        raise ValueError("no reward: pass --reward-model (a reward-model run folder or registry name)")
    return resolve_reward_run(config.reward_model, store)


def _reward_fn(config: RunConfig, reward, reward_source: str, load_reward_model, choice: DeviceChoice) -> RewardFn:
    if reward is not None:
        return as_reward_fn(reward)
    if config.reward_kind == "function":
        return load_reward_function(reward_source)
    return as_reward_fn(load_reward_model(reward_source, "cpu" if choice.device.type == "cpu" else None))


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


def _prompts(config: RunConfig, prompts, store) -> tuple[list[str], str]:
    if prompts is not None:
        source = "given"
    elif config.prompts_file:
        prompts, source = read_prompts(config.prompts_file), config.prompts_file
    elif store is not None:
        prompts, source = [prompt for _, prompt in all_prompts(store)], "duckdb"  # text or a conversation
    else:
        raise ValueError("no prompts: give a prompts file or a database")
    if not prompts:
        raise ValueError("no prompts to train on: import some first (`rlhf-studio import-prompts`)")
    return list(prompts), source


def prompt_batch(prompts: list[str], step: int, size: int, rank: int, world: int, seed: int) -> list[str]:
    """Return this process's prompts for a step: a fixed shuffle per epoch, disjoint across processes.

    A function of the step alone, so a resumed run continues where it stopped.
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


def save_run(ctx: RunContext, step: int, model, optimizer, extra_state: Callable[[], dict] | None = None) -> None:
    """Write the checkpoint (adapter/, merged/) and the trainer state (optimizer, step) for resume; rank 0 writes.

    `model` is the prepared model (the policy, or the policy with its value head), `optimizer` the prepared one.

    `extra_state()` is read with the weights gathered (the value head is sharded too under ZeRO-3). Under DeepSpeed
    each process holds its part of the optimizer state, so DeepSpeed writes every part (accelerate's `save_state`)
    to a folder of this step's, which the state file names once it is complete; the previous one is removed after.
    """
    accelerator = ctx.accelerator
    accelerator.wait_for_everyone()
    sharded_optimizer = bool(zero_stage(accelerator))
    engine_folder = f"{ENGINE_STATE}-{step}"
    if sharded_optimizer:
        accelerator.save_state(ctx.run_dir / engine_folder)
    with full_parameters(accelerator, model):  # ZeRO-3: every process gathers, rank 0 writes
        if accelerator.is_main_process:
            metadata = {
                "algo": ctx.config.algo,
                "step": step,
                "base_model": ctx.config.model,
                "reward": ctx.reward_source,
                "prompts": ctx.prompts_source,
            }
            save_checkpoint(accelerator.unwrap_model(ctx.policy), ctx.tokenizer, ctx.run_dir, metadata)
            state = {"step": step, "layout": _layout(accelerator), **(extra_state() if extra_state else {})}
            if sharded_optimizer:
                state["engine_state"] = engine_folder
            else:
                state["optimizer"] = optimizer.state_dict()
            partial = ctx.run_dir / (STATE_FILE + ".partial")
            torch.save(state, partial)
            partial.replace(ctx.run_dir / STATE_FILE)  # whole or not at all
            for older in ctx.run_dir.glob(f"{ENGINE_STATE}-*"):
                if older.name != engine_folder:
                    shutil.rmtree(older, ignore_errors=True)
    accelerator.wait_for_everyone()


def _layout(accelerator: Accelerator) -> dict:
    return {"zero_stage": zero_stage(accelerator), "processes": accelerator.num_processes}


def restore_optimizer(ctx: RunContext, optimizer) -> None:
    """Load a resumed run's optimizer state (and, under DeepSpeed, its sharded weights) into the prepared optimizer."""
    state = ctx.resumed_state
    if not state:
        return
    saved_sharded, sharded_now = "engine_state" in state, bool(zero_stage(ctx.accelerator))
    saved, now = state.get("layout", {}), _layout(ctx.accelerator)
    if saved_sharded != sharded_now or (saved_sharded and saved != now):
        raise ValueError(
            f"{ctx.run_dir} was saved with {_describe(saved)}, this run has {_describe(now)}: resume it with the same "
            "--accelerate-config (DeepSpeed's optimizer state is split to fit the layout)"
        )
    if saved_sharded:
        ctx.accelerator.load_state(ctx.run_dir / state["engine_state"])
    else:
        optimizer.load_state_dict(state["optimizer"])


def _describe(layout: dict) -> str:
    stage = f"DeepSpeed ZeRO-{layout.get('zero_stage')}" if layout.get("zero_stage") is not None else "no DeepSpeed"
    return f"{stage} over {layout.get('processes', 1)} process(es)"


def record_run(ctx: RunContext, store, metrics: dict) -> int | None:
    """Record the finished run in the registry (kind 'policy', lineage in its config); rank 0 only."""
    if store is None or not ctx.accelerator.is_main_process:
        return None
    lineage = {"base_model": ctx.config.model, "reward": ctx.reward_source, "prompts": ctx.prompts_source}
    config = {"algo": ctx.config.algo, **ctx.config.to_dict(), "lineage": lineage}
    if ctx.reward_source and ctx.config.reward_kind == "model":
        config["reward_model"] = ctx.reward_source  # the folder a registry name resolved to
    return record_run_in_registry(store, "policy", ctx.run_dir, config, metrics)


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
        disable=not ctx.accelerator.is_main_process,
    )
