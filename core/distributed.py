"""One process or many: the Accelerator every trainer runs on, and what DeepSpeed ZeRO-3 needs handled.

Every trainer (reward model, PPO, GRPO, DPO) is built on `accelerate`, so `torchrun --nproc_per_node N` or
`accelerate launch --config_file <layout>` runs the same command data-parallel (DDP) or sharded (DeepSpeed
ZeRO-2/3, FSDP2): gradients are averaged by the engine, rank 0 reads inputs and writes files.
"""

import contextlib
import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, InitProcessGroupKwargs, broadcast_object_list

from core.allocator import manage_freed_memory
from core.models import DeviceChoice, training_choice


def make_accelerator(device: str, precision: str = "auto") -> tuple[Accelerator, DeviceChoice]:
    """Return the run's Accelerator and device: bf16 autocast where `training_choice` picks bf16, else float32."""
    choice = training_choice(device, precision)
    if choice.device.type == "cpu":
        manage_freed_memory()
    # Said explicitly, never left to the process-wide state: an earlier Accelerator in this process (a TRL trainer,
    # or a run at the other precision) must not turn its autocast on or off for this run. accelerate keeps one
    # precision per process and refuses another, so a run at a new one starts its state afresh (the process group,
    # `PartialState`, stays; DeepSpeed takes its precision from its own config).
    mixed_precision = "bf16" if choice.dtype == torch.bfloat16 else "no"
    earlier = AcceleratorState._shared_state
    if earlier.get("_mixed_precision", mixed_precision) != mixed_precision and not earlier.get("deepspeed_plugins"):
        AcceleratorState._reset_state()
    on_cpu = choice.device.type == "cpu"
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # On CPU, processes talk over gloo; said explicitly, or accelerate counts one process where DeepSpeed counts all.
    handlers = [InitProcessGroupKwargs(backend="gloo")] if on_cpu and distributed else []
    # cpu=True keeps accelerate off any GPU, but also switches DeepSpeed off, which runs on CPU too.
    force_cpu = on_cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"
    return Accelerator(cpu=force_cpu, mixed_precision=mixed_precision, kwargs_handlers=handlers), choice


def configure_deepspeed(accelerator: Accelerator, rows_per_step: int, max_grad_norm: float) -> None:
    """Tell DeepSpeed (when it runs) what runs without a DataLoader do not: the micro-batch size, and the norm to
    clip gradients to (under DeepSpeed the engine clips; `accelerator.clip_grad_norm_` only reports)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = max(1, rows_per_step)
        plugin.deepspeed_config["gradient_clipping"] = max_grad_norm


def zero_stage(accelerator: Accelerator) -> int | None:
    """Return DeepSpeed's ZeRO stage for the run, or None without DeepSpeed."""
    plugin = accelerator.state.deepspeed_plugin
    return None if plugin is None else plugin.zero_stage


@contextlib.contextmanager
def without_hf_zero3():
    """Lift transformers' ZeRO-3 flag for the block (it is back after), so transformers and peft do not partition
    weights at load time or gather them again (collectively, deadlocking) inside a block that already has them."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


class Sharding:
    """What sharding changes, in one place: trainers call these and never ask which ZeRO stage they run under.

    One process, DDP, DeepSpeed ZeRO-2/3 or FSDP, as `accelerate launch` (or torchrun) set the environment up.
    Only ZeRO-3 splits the weights themselves, so most methods differ there alone: weights load whole and
    `prepare` partitions them; frozen models (reference, reward model) are partitioned too; generation runs in
    lockstep; saving, snapshots and copies gather the shards first. Rank 0 (`is_main`) reads inputs and writes.
    """

    def __init__(self, device: str = "auto", precision: str = "auto"):
        self.accelerator, self.choice = make_accelerator(device, precision)
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self._splits_weights = zero_stage(self.accelerator) == 3

    # -- loading and preparing ----------------------------------------------------------------------------------

    def loading(self):
        """Return a context in which `from_pretrained` loads whole weights, even under ZeRO-3.

        Under ZeRO-3 transformers would load every weight already partitioned (deepspeed.zero.Init) and nothing
        could run the model before `prepare` (DPO's reference pass, a shared-prompt prefill). Loading whole and
        letting `prepare` partition costs one full copy per process while loading; shards stay shards after.
        (accelerate's `zero3_init_context_manager` leaves transformers' flag set under zero3_init_flag: false.)
        """
        return without_hf_zero3() if self._splits_weights else contextlib.nullcontext()

    def prepare(self, model, optimizer, rows_per_step: int, max_grad_norm: float, *others):
        """Return (model, optimizer, *others) wrapped for the layout: DDP, DeepSpeed ZeRO or FSDP, as accelerate says.

        The optimizer goes through `prepare` with the model, so accelerate rebuilds it over the wrapped (possibly
        sharded) parameters. A learning-rate schedule is built on the optimizer before and stepped by the caller
        once per optimizer step (accelerate's prepared scheduler steps once per process). `others`: a DataLoader.
        """
        configure_deepspeed(self.accelerator, rows_per_step, max_grad_norm)
        return self.accelerator.prepare(model, optimizer, *others)

    def prepare_frozen(self, model):
        """Return a frozen model (reference, reward model) placed as the layout places weights: under ZeRO-3 split
        over the processes like the trained model (call after `prepare`, which completes DeepSpeed's config), so no
        device holds all of it; elsewhere whole on this process's device. In eval mode, gradients off.

        As TRL's `prepare_deepspeed`: an inference-only DeepSpeed engine with small buckets for a model that
        never steps. Its forward must then run on every process together, as the shards are gathered layer by layer.
        """
        if model is None:
            return None
        model.requires_grad_(False)
        if not self._splits_weights:
            return model.to(self.device).eval()
        import deepspeed

        config = copy.deepcopy(self.accelerator.state.deepspeed_plugin.deepspeed_config)
        for key in ("optimizer", "scheduler"):
            config.pop(key, None)
        hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        if hidden:
            config["zero_optimization"] |= {
                "reduce_bucket_size": hidden * hidden,
                "stage3_param_persistence_threshold": 10 * hidden,
                "stage3_prefetch_bucket_size": 0,
            }
        engine, *_ = deepspeed.initialize(model=model, config=config)
        engine.eval()  # DeepSpeed's eval() returns nothing
        return engine

    @property
    def weights_whole(self) -> bool:
        """Return whether a module's weights can be read outside its own forward: whole on this process, as on one
        device or under DDP or ZeRO-1/2; not under ZeRO-3 or FSDP, whose hooks gather each module's shard."""
        return not self._splits_weights and self.accelerator.distributed_type != DistributedType.FSDP

    @property
    def lockstep(self) -> bool:
        """Return whether every process must run the same forward passes, in number and order: under ZeRO-3 each
        one gathers the weights from all processes. Then `generate` runs every decoding step everywhere
        (`synced_gpus`), and no pass may be skipped or added by the data (a prefill shared by equal prompts)."""
        return self._splits_weights and self.world > 1

    # -- gathering, saving, snapshots --------------------------------------------------------------------------

    @contextlib.contextmanager
    def gathered(self, model, writer_rank: int | None = None):
        """Gather the whole weights (of a module, or a list of parameters) in every process for the block.

        Every process must enter: gathering is collective. The gathered weights replace the shards in place for the
        block, so no second full copy of the model is kept. What the block writes into them is dropped after, unless
        `writer_rank` names the process whose writes are sent to all and partitioned again. Without ZeRO-3 every
        process already holds the whole weights and this does nothing.
        """
        if not self._splits_weights:
            yield
            return
        import deepspeed

        parameters = list(model.parameters()) if isinstance(model, torch.nn.Module) else list(model)
        with deepspeed.zero.GatheredParameters(parameters, modifier_rank=writer_rank), without_hf_zero3():
            yield

    def save(self, model, write: Callable[[torch.nn.Module], object]) -> None:
        """Gather the model's weights, have the main process `write(plain_model)` (a `save_pretrained`, say), wait."""
        self.accelerator.wait_for_everyone()
        with self.gathered(model):
            if self.is_main:
                write(self.accelerator.unwrap_model(model))
        self.accelerator.wait_for_everyone()

    def whole_copy(self, model, empty: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
        """Return the prepared model's weights in a plain model on the main process (None elsewhere).

        Under ZeRO-3 every process takes part in gathering the shards and the main process copies them into the
        model `empty()` builds (loaded with transformers' ZeRO-3 flag lifted); elsewhere the model itself.
        """
        inner = self.accelerator.unwrap_model(model)
        if not self._splits_weights:
            return inner if self.is_main else None
        with self.gathered(model):
            weights = (
                {name: t.detach().to("cpu", copy=True) for name, t in inner.state_dict().items()}
                if self.is_main
                else None
            )
        if not self.is_main:
            return None
        with without_hf_zero3():
            plain = empty()
        plain.load_state_dict(weights)
        return plain

    def snapshot(self, model) -> dict[str, torch.Tensor]:
        """Return a copy of the trainable weights (a best epoch, say): whole, on the main process under ZeRO-3
        (small ZeRO-3 weights stay whole beside the shards, so a copy of the shards alone would miss them)."""
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if not self._splits_weights:
            return {name: p.detach().clone() for name, p in trainable.items()}
        with self.gathered(trainable.values()):
            return {name: p.detach().to("cpu", copy=True) for name, p in trainable.items()} if self.is_main else {}

    def restore(self, model, snapshot: dict[str, torch.Tensor]) -> None:
        """Write back weights from `snapshot`; under ZeRO-3 the main process writes and DeepSpeed shares them."""
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        with self.gathered(trainable.values(), writer_rank=0), torch.no_grad():
            for name, weight in snapshot.items():
                trainable[name].copy_(weight)

    # -- optimizer state for resume -----------------------------------------------------------------------------

    def describe(self) -> dict:
        """Return what a saved optimizer state depends on: DeepSpeed's ZeRO stage and the process count."""
        return {"zero_stage": zero_stage(self.accelerator), "processes": self.world}

    def save_optimizer(self, optimizer, folder: Path) -> dict:
        """Save the optimizer state; return what the trainer state must hold to find it again.

        Under DeepSpeed each process holds its part of the optimizer state, so every process writes its part
        (accelerate's `save_state`, random states included) to `folder`; elsewhere the state is returned whole.
        Every process must call this; the main process writes the returned dict.
        """
        if zero_stage(self.accelerator) is None:
            return {"layout": self.describe(), "optimizer": optimizer.state_dict()}
        self.accelerator.save_state(folder)
        return {"layout": self.describe(), "engine_state": folder.name}

    def load_optimizer(self, optimizer, state: dict, run_dir: Path) -> None:
        """Load the optimizer state `save_optimizer` described; refuse one saved under another DeepSpeed layout."""
        saved, now = state.get("layout", {}), self.describe()
        saved_split, split_now = "engine_state" in state, zero_stage(self.accelerator) is not None
        if saved_split != split_now or (saved_split and saved != now):
            raise ValueError(
                f"{run_dir} was saved with {_describe(saved)}, this run has {_describe(now)}: resume it with the same "
                "--accelerate-config (DeepSpeed's optimizer state is split to fit the layout)"
            )
        if saved_split:
            self.accelerator.load_state(run_dir / state["engine_state"])
        else:
            optimizer.load_state_dict(state["optimizer"])

    # -- talking between processes, and the end --------------------------------------------------------------

    def from_main(self, read: Callable[[], object], output_dir: str | None = None):
        """Return (what `read()` gave on the main process, its output_dir) on every process (`from_main_process`)."""
        return from_main_process(self.accelerator, read, output_dir)

    def mean(self, values: dict) -> dict:
        """Return each scalar averaged over the processes (one gather for all of them)."""
        return mean_over_processes(self.accelerator, values)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Return a tensor of counts or sums added up over the processes (itself in a single process)."""
        return sum_over_processes(self.accelerator, values)

    def end(self) -> None:
        """Finish the run: close trackers, then leave the process group, so a finished run exits 0 and cleanly
        (a process group left to interpreter shutdown can abort it: "terminate called without an active exception")."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _describe(layout: dict) -> str:
    stage = f"DeepSpeed ZeRO-{layout.get('zero_stage')}" if layout.get("zero_stage") is not None else "no DeepSpeed"
    return f"{stage} over {layout.get('processes', 1)} process(es)"


def from_main_process(accelerator: Accelerator, read: Callable[[], object], output_dir: str | None):
    """Return (what `read()` gave on rank 0, rank 0's output_dir) on every process.

    Rank 0 alone reads inputs: DuckDB allows one writing process. A ValueError or OSError there is passed on, so
    every process stops with the same message instead of waiting for the others.
    """
    found = [None, output_dir, None]
    if accelerator.is_main_process:
        try:
            found[0] = read()
        except (ValueError, OSError) as error:
            found[2] = str(error)
    value, output_dir, problem = broadcast_object_list(found)
    if problem:
        raise ValueError(problem)
    return value, output_dir


def mean_over_processes(accelerator: Accelerator, values: dict) -> dict:
    """Return each scalar averaged over the data-parallel processes (one gather for all of them)."""
    keys = sorted(values)
    stacked = torch.stack([torch.as_tensor(values[key]).detach().float().to(accelerator.device) for key in keys])
    gathered = accelerator.gather(stacked.unsqueeze(0)).mean(0)
    return dict(zip(keys, gathered.tolist(), strict=True))


def sum_over_processes(accelerator: Accelerator, values: torch.Tensor) -> torch.Tensor:
    """Return a tensor of counts or sums added up over the processes (itself in a single process)."""
    return accelerator.reduce(values, reduction="sum") if accelerator.num_processes > 1 else values
