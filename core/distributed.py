"""One process or many: the Accelerator every trainer runs on, and what DeepSpeed ZeRO-3 needs handled.

Every trainer (reward model, PPO, GRPO, DPO) is built on `accelerate`, so `torchrun --nproc_per_node N` or
`accelerate launch --config_file <layout>` runs the same command data-parallel (DDP) or sharded (DeepSpeed
ZeRO-2/3, FSDP2): gradients are averaged by the engine, rank 0 reads inputs and writes files.
"""

import contextlib
import os
from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list

from core.models import DeviceChoice, pick_device, training_dtype


def make_accelerator(device: str) -> tuple[Accelerator, DeviceChoice]:
    """Return the run's Accelerator and device: bf16 autocast on a bf16 GPU, float32 elsewhere (`training_dtype`)."""
    choice = pick_device(device)
    # Said explicitly, never left to the process-wide state: an earlier Accelerator in this process (a TRL trainer,
    # say) must not silently turn on its autocast for us; accelerate refuses a differing one with a clear error.
    bf16 = training_dtype(choice) == torch.bfloat16 and choice.device.type == "cuda"
    mixed_precision = "bf16" if bf16 else os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
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


def prepare(accelerator: Accelerator, model, optimizer, rows_per_step: int, max_grad_norm: float):
    """Return (model, optimizer) wrapped for the run's layout: DDP, DeepSpeed ZeRO or FSDP, as accelerate says.

    The optimizer goes through `prepare` with the model, so accelerate rebuilds it over the wrapped (possibly
    sharded) parameters. A learning-rate schedule is built on the optimizer before and stepped by the caller
    once per optimizer step (accelerate's prepared scheduler steps once per process).
    """
    configure_deepspeed(accelerator, rows_per_step, max_grad_norm)
    return accelerator.prepare(model, optimizer)


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


def whole_model_loading(accelerator: Accelerator):
    """Return a context in which `from_pretrained` loads whole weights, even under ZeRO-3.

    Under ZeRO-3 transformers would load every weight already partitioned (deepspeed.zero.Init) and nothing
    could run the model before `prepare` (DPO's reference pass, a shared-prompt prefill). Loading whole and
    letting `prepare` partition costs one full copy per process while loading; shards stay shards after.
    (accelerate's `zero3_init_context_manager` leaves transformers' flag set under zero3_init_flag: false.)
    """
    return without_hf_zero3() if zero_stage(accelerator) == 3 else contextlib.nullcontext()


@contextlib.contextmanager
def full_parameters(accelerator: Accelerator, model, writer_rank: int | None = None):
    """Gather ZeRO-3's sharded weights (of a module, or a list of parameters) in every process for the block;
    elsewhere do nothing.

    Every process must enter: gathering is collective. The gathered weights replace the shards in place for the
    block, so no second full copy of the model is kept. What the block writes into them is dropped after, unless
    `writer_rank` names the process whose writes are sent to all and partitioned again.
    """
    if zero_stage(accelerator) != 3:
        yield
        return
    import deepspeed

    parameters = list(model.parameters()) if isinstance(model, torch.nn.Module) else list(model)
    with deepspeed.zero.GatheredParameters(parameters, modifier_rank=writer_rank), without_hf_zero3():
        yield


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
