"""What a training run holds in memory on each device: the estimate checked before a run is queued.

Each trainer declares the models it keeps (`HeldModel`: role, bytes per weight, what trains, whether a layout
splits it) next to the code that loads them, and the training pass whose activations wait for the backward pass
(`TrainingPass`). `estimate` adds weights, gradients, optimizer state and activations per device for a layout.

The activation terms are counted from a decoder layer's shape and calibrated against measured peaks
(`bench/memory.py`, fp32 on a CPU, SmolLM2-135M): a layer keeps about 19 values per hidden unit and 4 per MLP
unit for each token (norms, projections, rotary, attention output, the gated MLP's four tensors, LoRA's inputs),
plus, where attention runs without a fused kernel (eager, or the math form a CPU falls back to under a padding
mask), its heads x length² scores and probabilities. With checkpointing a layer keeps only its input, and one
layer at a time is recomputed in full. Vocabulary logits, their log-softmax and their gradient are kept in
float32 for the positions that get them.
"""

import ctypes
import functools
from dataclasses import dataclass

import torch

from core.layouts import Layout

GIB = 2**30
VALUES_PER_HIDDEN = 19  # kept per token and layer, for each hidden unit
VALUES_PER_MLP_UNIT = 4  # kept per token and layer, for each MLP unit (gate, up, activation, product)
ATTENTION_SQUARES = 2  # heads x length² tensors kept per layer by unfused attention (scores, probabilities)
LOGIT_COPIES = 4  # float32 (B, T, V) tensors alive at once: logits, scaled, log-softmax, their gradient
RECOMPUTE_LAYERS = 2  # under checkpointing: the layer recomputed plus its gradients' working memory
ADAM_BYTES = 12  # per trainable weight: a float32 gradient and Adam's two float32 moments
WORKSPACE = 0.25  # CPU: allocator high-water and transient copies, as a share of the activations


@dataclass(frozen=True)
class ModelShape:
    """What the estimate reads off a model's config (and its parameter count)."""

    parameters: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config, parameters: int) -> "ModelShape":
        config = getattr(config, "text_config", None) or config
        hidden = config.hidden_size
        return cls(
            parameters=parameters,
            hidden=hidden,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            intermediate=getattr(config, "intermediate_size", None) or 4 * hidden,
            vocab=config.vocab_size,
        )

    def lora_weights(self, rank: int) -> int:
        """Return the adapter weights of LoRA on every linear layer: r x (in + out) for each projection."""
        per_layer = 4 * 2 * self.hidden + 3 * (self.hidden + self.intermediate)  # q, k, v, o; gate, up, down
        return rank * per_layer * self.layers


@dataclass(frozen=True)
class HeldModel:
    """A model a trainer keeps in memory for the whole run, declared where the trainer loads it."""

    role: str  # "policy", "reference", "reward model", "value model"
    shape: ModelShape
    weight_bytes: int  # per weight as loaded: 4 (float32) or 2 (bfloat16)
    trainable: int  # weights the optimizer updates (0: frozen)
    sharded: bool = True  # split over the processes where the layout splits weights (ZeRO-3, FSDP)


@dataclass(frozen=True)
class TrainingPass:
    """The forward pass of a step whose activations wait for its backward pass (the largest of the step)."""

    shape: ModelShape
    sequences: int  # per process
    length: int  # tokens per sequence, padding included
    logits_length: int  # positions per sequence that get vocabulary logits (0: a score or value head only)
    value_bytes: int  # 4 in float32, 2 under bf16 autocast
    checkpointing: bool
    fused_attention: bool  # a fused kernel keeps no length² scores (CUDA's flash or memory-efficient attention)


@dataclass
class MemoryEstimate:
    """Bytes one device needs for a run, by part."""

    weights: dict[str, int]  # by role
    training_state: int  # gradients and Adam moments
    activations: int
    logits: int
    workspace: int

    @property
    def total(self) -> int:
        return sum(self.weights.values()) + self.training_state + self.activations + self.logits + self.workspace

    def parts(self) -> dict[str, int]:
        """Return {part: bytes}, the weights by role first."""
        return {f"{role} weights": size for role, size in self.weights.items()} | {
            "gradients + Adam": self.training_state,
            "activations": self.activations,
            "logits": self.logits,
            "workspace": self.workspace,
        }

    def describe(self) -> str:
        return ", ".join(f"{part} {size / GIB:.2f}" for part, size in self.parts().items() if size)


def layer_activations(step: TrainingPass) -> int:
    """Return the bytes one decoder layer keeps for the backward pass of the whole batch."""
    shape, tokens = step.shape, step.sequences * step.length
    linear = tokens * (VALUES_PER_HIDDEN * shape.hidden + VALUES_PER_MLP_UNIT * shape.intermediate)
    squares = 0 if step.fused_attention else ATTENTION_SQUARES * step.sequences * shape.heads * step.length**2
    return (linear + squares) * step.value_bytes


def activation_bytes(step: TrainingPass) -> int:
    """Return the activations of a training pass: every layer's, or under checkpointing each layer's input plus
    the layers recomputed at a time."""
    if step.checkpointing:
        inputs = step.sequences * step.length * step.shape.hidden * step.shape.layers * step.value_bytes
        return inputs + RECOMPUTE_LAYERS * layer_activations(step)
    return step.shape.layers * layer_activations(step)


def logit_bytes(step: TrainingPass) -> int:
    return LOGIT_COPIES * step.sequences * step.logits_length * step.shape.vocab * 4


def estimate(models: list[HeldModel], passes: list[TrainingPass], layout: Layout, device: str) -> MemoryEstimate:
    """Return what one device holds for the run under the layout: weights (split where the layout splits them and
    the model is prepared for it), gradients and Adam state (split under ZeRO-2/3 and FSDP), the activations of
    its own share of the batch (`passes`: the training passes alive at once, PPO's policy and value trunk)."""
    weights: dict[str, int] = {}
    for model in models:
        shards = layout.weights_shards if model.sharded else 1
        weights[model.role] = weights.get(model.role, 0) + model.shape.parameters * model.weight_bytes // shards
    trainable = sum(model.trainable for model in models)
    activations = sum(activation_bytes(step) for step in passes)
    logits = sum(logit_bytes(step) for step in passes)
    workspace = int(WORKSPACE * (activations + logits)) if device == "cpu" else 0
    return MemoryEstimate(
        weights, trainable * ADAM_BYTES // layout.training_state_shards, activations, logits, workspace
    )


def fused_attention(device: str) -> bool:
    """Return whether attention runs a fused kernel that keeps no length² scores: sdpa on CUDA does."""
    return device == "cuda"


def value_bytes(device: str) -> int:
    """Return the bytes of an activation: bf16 under CUDA's autocast, float32 on a CPU."""
    return 2 if device == "cuda" else 4


def training_pass(shape: ModelShape, sequences: int, length: int, logits_length: int, device: str,
                  checkpointing: bool) -> TrainingPass:  # fmt: skip
    """Return a training pass on this kind of device (its activation bytes and attention kernel)."""
    return TrainingPass(shape, sequences, length, logits_length, value_bytes(device), checkpointing,
                        fused_attention(device))  # fmt: skip


def available_memory(device: str) -> int:
    """Return free bytes: free GPU memory on CUDA, else MemAvailable from /proc/meminfo."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable line")


def release_freed_host_memory(device) -> None:
    """Hand the memory freed since the last call back to the system (CPU under glibc; elsewhere nothing).

    glibc keeps freed blocks for reuse, but a step's tensors change shape from batch to batch (padded to the
    batch's longest) and rarely fit the holes the last step left, so resident memory climbs step after step.
    Measured on SmolLM2-135M with LoRA and checkpointing, 16 sequences of 128 tokens a step: 2,813 MiB after
    the first step and 3,743 MiB after the second's forward pass without this; with it, 921 MiB after each
    step and the run's peak stayed the first step's (3,090 MiB).
    """
    if torch.device(device).type != "cpu" or _glibc() is None:
        return
    _glibc().malloc_trim(0)


@functools.cache
def _glibc():
    """Return the C library when it is glibc (which has `malloc_trim`), else None (musl, macOS, Windows)."""
    try:
        library = ctypes.CDLL("libc.so.6")
        return library if hasattr(library, "malloc_trim") else None
    except OSError:
        return None
