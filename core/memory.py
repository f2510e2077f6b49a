"""What a training run holds in memory on each device: the estimate checked before a run is queued.

Each trainer declares the models it keeps (`HeldModel`: role, bytes per weight, what trains, whether a layout
splits it) next to the code that loads them, and the training pass whose activations wait for the backward pass
(`TrainingPass`). `estimate` adds weights, gradients, optimizer state and activations per device for a layout.

The activation terms are counted from a decoder layer's shape and calibrated against measured peaks
(`bench/memory.py`, float32 and bf16 on a CPU, SmolLM2-135M): a layer keeps about 6 values per hidden unit and 4
per MLP unit for each token (norms, projections, attention output, the gated MLP's four tensors, LoRA's inputs),
plus, with eager attention only, its heads x length² scores and probabilities (sdpa's kernels keep none, on a CPU
too). With checkpointing a layer keeps only its input, and a layer at a time is recomputed in full. Vocabulary
logits, their log-softmax and their gradient are kept in float32 for the positions that get them. Saving the model
at the end, when the step's memory is free again, sets a floor (a LoRA policy's merged float32 copy).
"""

from dataclasses import dataclass

import torch

from core.layouts import Layout
from core.models import DeviceChoice

GIB = 2**30
VALUES_PER_HIDDEN = 6  # kept per token and layer, for each hidden unit (norms, projections, attention output)
VALUES_PER_MLP_UNIT = 4  # kept per token and layer, for each MLP unit (gate, up, activation, product)
ATTENTION_SQUARES = 2  # heads x length² tensors kept per layer by unfused (eager) attention: scores, probabilities
LOGIT_COPIES = 4  # float32 (B, T, V) tensors alive at once: logits, scaled, log-softmax, their gradient
RECOMPUTE_LAYERS = 1  # under checkpointing: the layer recomputed (its gradients reuse what it frees; measured)
ADAM_BYTES = 12  # per trainable weight: a float32 gradient and Adam's two float32 moments
SERIALIZATION_COPIES = 0.15  # saving a model in place holds about this share of it again (measured, SmolLM2-135M:
# each tensor's serialized copy is returned as soon as it is written)
SHARED_SAVING = 0.75  # of a shared prompt's tokens not run again, the share of their activations saved (measured on
# DPO's pairs and GRPO's groups: each row still keeps its copy of the prompt's keys and values and attends over them)
ALLOCATOR_SLACK = 0.15  # of a CPU step's activations and logits, what mimalloc holds a moment after they are freed
# (measured: the reward model on HH pairs of 512 tokens peaked at 1.36 GiB on it, 1.24 GiB on glibc handing back)
CPU_RUNTIME = 100 * 2**20  # a CPU process's working memory beyond tensors (thread pools, autograd, buffers)


@dataclass(frozen=True)
class ModelShape:
    """What the estimate reads off a model's config (and its parameter count)."""

    parameters: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    attention: str | None = None  # the attention implementation the config asks for (None: sdpa)

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
            attention=getattr(config, "_attn_implementation", None),
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
    save_copies: float = 0.0  # float32 copies of its weights that saving it at the end holds at once


@dataclass(frozen=True)
class TrainingPass:
    """The forward pass of a step whose activations wait for its backward pass (the largest of the step)."""

    shape: ModelShape
    sequences: int  # per process
    length: int  # tokens per sequence, padding included
    logits_length: int  # positions per sequence that get vocabulary logits (0: a score or value head only)
    value_bytes: float  # per activation value: 4 in float32, less under bf16 autocast (`value_bytes`)
    checkpointing: bool
    fused_attention: bool  # sdpa's fused kernels keep no length² scores; eager attention keeps them
    shared_tokens: int = 0  # prompt tokens not run again for rows that share a prompt (GRPO's group, DPO's pair)
    kept_scores: int = 0  # bytes each layer keeps for packed rankings' attention (`rm.model.packed_score_bytes`)
    input_bytes: int = 4  # per value of a layer's input (the residual stream, what checkpointing keeps): 2 in bf16


@dataclass
class MemoryEstimate:
    """Bytes one device needs for a run, by part."""

    weights: dict[str, int]  # by role
    training_state: int  # gradients and Adam moments
    activations: int
    logits: int
    workspace: int
    saving: int  # what saving the model at the end holds beside the weights, when the step's memory is free

    @property
    def total(self) -> int:
        step = self.activations + self.logits + self.workspace
        return sum(self.weights.values()) + self.training_state + max(step, self.saving)

    def parts(self) -> dict[str, int]:
        """Return {part: bytes}, the weights by role first."""
        return {f"{role} weights": size for role, size in self.weights.items()} | {
            "gradients + Adam": self.training_state,
            "activations": self.activations,
            "logits": self.logits,
            "workspace": self.workspace,
            "saving (after the steps)": self.saving,
        }

    def describe(self) -> str:
        parts = ", ".join(f"{part} {size / GIB:.2f}" for part, size in self.parts().items() if size)
        return f"{parts}; the larger of a step and the saving counts"


def step_tokens(step: TrainingPass) -> int:
    """Return the tokens whose activations a pass keeps: its rows' tokens, less what prompt sharing saves."""
    return step.sequences * step.length - int(SHARED_SAVING * step.shared_tokens)


def layer_activations(step: TrainingPass) -> int:
    """Return the bytes one decoder layer keeps for the backward pass of the whole batch."""
    shape, tokens = step.shape, step_tokens(step)
    linear = tokens * (VALUES_PER_HIDDEN * shape.hidden + VALUES_PER_MLP_UNIT * shape.intermediate)
    squares = 0 if step.fused_attention else ATTENTION_SQUARES * step.sequences * shape.heads * step.length**2
    return int((linear + squares) * step.value_bytes) + step.kept_scores


def activation_bytes(step: TrainingPass) -> int:
    """Return the activations of a training pass: every layer's, or under checkpointing each layer's input plus
    the layers recomputed at a time."""
    if step.checkpointing:
        inputs = step_tokens(step) * step.shape.hidden * step.shape.layers * step.input_bytes
        return inputs + RECOMPUTE_LAYERS * layer_activations(step)
    return step.shape.layers * layer_activations(step)


def logit_bytes(step: TrainingPass) -> int:
    return LOGIT_COPIES * step.sequences * step.logits_length * step.shape.vocab * 4


def estimate(
    models: list[HeldModel], passes: list[TrainingPass], layout: Layout, device: DeviceChoice
) -> MemoryEstimate:
    """Return what one device holds for the run under the layout: weights (split where the layout splits them and
    the model is prepared for it), gradients and Adam state (split under ZeRO-2/3 and FSDP), the activations of
    its own share of the batch (`passes`: the training passes alive at once, PPO's policy and value trunk)."""
    weights: dict[str, int] = {}
    for model in models:
        shards = layout.weights_shards if model.sharded else 1
        weights[model.role] = weights.get(model.role, 0) + model.shape.parameters * model.weight_bytes // shards
    trainable = sum(model.trainable for model in models)
    on_cpu = device.device.type == "cpu"
    slack = 1 + (ALLOCATOR_SLACK if on_cpu else 0)
    activations = int(slack * sum(activation_bytes(step) for step in passes))
    logits = int(slack * sum(logit_bytes(step) for step in passes))
    workspace = CPU_RUNTIME if on_cpu else 0
    saving = int(sum(model.shape.parameters * 4 * model.save_copies for model in models))
    state = trainable * ADAM_BYTES // layout.training_state_shards
    return MemoryEstimate(weights, state, activations, logits, workspace, saving)


def fused_attention(implementation: str | None) -> bool:
    """Return whether attention keeps no length² scores: sdpa (the default: fused kernels on CUDA and on a CPU,
    measured: 2 x 256 and 4 x 128 tokens keep the same) and flash attention; eager attention keeps them."""
    return implementation != "eager"


def value_bytes(device: DeviceChoice, weight_bytes: int) -> float:
    """Return the bytes an activation takes, on average: 4 in float32. Under bf16 autocast the products are bf16
    but norms keep float32 copies, and over float32 weights (the reward model, a fully fine-tuned policy) the
    residual stream stays float32 too: 2.5 and 3.5 (measured, `bench/memory.py`)."""
    if device.dtype != torch.bfloat16:
        return 4
    return 2.5 if weight_bytes == 2 else 3.5


def training_pass(shape: ModelShape, sequences: int, length: int, logits_length: int, device: DeviceChoice,
                  checkpointing: bool, shared_tokens: int = 0, kept_scores: int = 0, *,
                  weight_bytes: int) -> TrainingPass:  # fmt: skip
    """Return a training pass on this kind of device through a model whose weights take `weight_bytes` (its
    activation bytes; sdpa attention, the default)."""
    residual = 2 if device.dtype == torch.bfloat16 and weight_bytes == 2 else 4  # float32 weights keep it float32
    return TrainingPass(shape, sequences, length, logits_length, value_bytes(device, weight_bytes), checkpointing,
                        fused_attention(shape.attention), shared_tokens, kept_scores, residual)  # fmt: skip


def available_memory(device: str) -> int:
    """Return free bytes: free GPU memory on CUDA, else MemAvailable from /proc/meminfo."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable line")
