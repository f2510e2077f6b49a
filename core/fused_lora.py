"""LoRA linear layers as one autograd function: the same y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, in fewer, larger operations.

peft computes `base(x) + lora_B(lora_A(x)) * s`: besides the three matrix products it makes two passes over the
(tokens × out) output in the forward (× s, +) and two over the gradients in the backward, one autograd node per
piece. Here the adapter product accumulates into the base output in place (`addmm_`, s applied as its alpha) and
the backward is written out: the same products, no extra passes. On a CPU, where every operation also pays a
thread-pool synchronisation, that is about a quarter less time per LoRA layer (measured on SmolLM2-135M's shapes);
on a GPU it is a few fewer kernels.

Only the plain case is fused: one active adapter, not merged, no dropout, DoRA or adapter bias, a frozen
`nn.Linear` base, and input, base and adapter in one dtype, or under autocast, which runs the products in its
dtype (bf16) as it would run peft's, the adapters' gradients flowing back to their float32 weights through the
casts. Anything else runs peft's own forward. The weights must be whole on this process: where a layout splits
weights, hooks gather each module's weight on call, which reading `base_layer.weight` skips.
"""

import contextlib

import torch
from peft.tuners.lora import Linear as LoraLinear


class LoraLinearFunction(torch.autograd.Function):
    """y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ with W, b frozen; gradients for x, A and B."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling: float):
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        out = torch.nn.functional.linear(rows, weight, bias)  # (N, out)
        with thin_products(x.device):
            down = rows @ lora_A.t()  # (N, r)
            out.addmm_(down, lora_B.t(), alpha=scaling)
        ctx.save_for_backward(rows, down, weight, lora_A, lora_B)
        ctx.scaling, ctx.input_shape = scaling, x.shape
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        rows, down, weight, lora_A, lora_B = ctx.saved_tensors
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])  # (N, out)
        grad_x = grad_rows @ weight if ctx.needs_input_grad[0] else None  # (N, in)
        with thin_products(grad_out.device):
            grad_down = grad_rows @ lora_B  # (N, r), before the scaling
            if grad_x is not None:
                grad_x = grad_x.addmm_(grad_down, lora_A, alpha=ctx.scaling).view(ctx.input_shape)
            grad_A = (grad_down.t() @ rows).mul_(ctx.scaling)  # (r, in)
            grad_B = (grad_rows.t() @ down).mul_(ctx.scaling)  # (out, r)
        return grad_x, None, None, grad_A, grad_B, None


@contextlib.contextmanager
def thin_products(device: torch.device):
    """Run the block's rank-r products on one CPU thread (on a GPU: as they are).

    A product with a 16-wide side is too small to split: on a CPU the thread pool's fork and join cost more
    than the work, and much more when other processes hold the cores, where the second thread waits for its
    turn on each product (measured on 2 busy cores, SmolLM2-135M: 0.2 ms on one thread, 2 to 16 ms on two).
    The base product, the one worth splitting, runs outside on every thread.
    """
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fused_forward(module: LoraLinear, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Return the layer's output through `LoraLinearFunction` when the layer is the plain case, else peft's forward."""
    parts = _plain_parts(module, x) if not args and not kwargs else None
    if parts is None:
        return LoraLinear.forward(module, x, *args, **kwargs)
    return LoraLinearFunction.apply(*parts)


def _plain_parts(module: LoraLinear, x: torch.Tensor):
    """Return (x, W, b, A, B, s) of a layer whose output is exactly x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, or None; under
    autocast all cast to its dtype."""
    if module.disable_adapters or module.merged or len(module.active_adapters) != 1:
        return None
    name = module.active_adapters[0]
    if name not in module.lora_A or name in module.lora_variant:  # DoRA and other variants: peft's forward
        return None
    base, lora_A, lora_B = module.base_layer, module.lora_A[name], module.lora_B[name]
    if not isinstance(base, torch.nn.Linear) or module.fan_in_fan_out or lora_B.bias is not None:
        return None
    if not isinstance(module.lora_dropout[name], torch.nn.Identity):
        return None
    bias = base.bias
    if base.weight.requires_grad or (bias is not None and bias.requires_grad):
        return None
    parts = (x, base.weight, bias, lora_A.weight, lora_B.weight)
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        parts = tuple(None if part is None else part.to(dtype) for part in parts)
    elif not x.dtype == base.weight.dtype == lora_A.weight.dtype == lora_B.weight.dtype:
        return None
    return *parts, float(module.scaling[name])


@contextlib.contextmanager
def fused_lora(model: torch.nn.Module, enabled: bool = True):
    """Run the block with the model's LoRA linear layers fused (see the module docstring); restore them after."""
    layers = [module for module in model.modules() if isinstance(module, LoraLinear)] if enabled else []
    for layer in layers:
        layer.forward = fused_forward.__get__(layer)
    try:
        yield model
    finally:
        for layer in layers:
            del layer.forward
