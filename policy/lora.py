"""The trainable policy: LoRA adapters on a causal LM, whose adapter-disabled self is the reference model."""

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from core.memory import SERIALIZATION_COPIES, HeldModel, ModelShape
from core.models import ensure_pad_token, load_config, load_tokenizer, resolve_model, without_dropout


@dataclass
class LoraSettings:
    rank: int = 16  # LoRA rank r (Hu et al. 2021); 0 means full fine-tuning with an explicit reference copy
    alpha: int = 32
    dropout: float = 0.0  # dropout off: RL ratios and KL must compare deterministic forward passes
    target_modules: str = "all-linear"

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"LoRA rank must be >= 0 (0 = full fine-tuning), got {self.rank}")


def load_policy(name_or_path: str, lora: LoraSettings, device: torch.device, dtype: torch.dtype):
    """Return (policy, reference, tokenizer).

    With LoRA the reference is None: it is the policy with its adapter disabled (`reference_mode`), so memory
    holds one copy of the weights. With full fine-tuning (rank 0) the reference is a frozen copy.
    A previous policy run folder resolves to its merged model, so training continues from it.
    """
    path = resolve_model(name_or_path)
    config = without_dropout(load_config(path))  # a clear error for an unknown model, before anything loads
    tokenizer = load_tokenizer(path, padding_side="left")
    # Fully fine-tuned weights stay float32 (bf16 compute comes from autocast): Adam's small updates vanish
    # when rounded to bf16. LoRA keeps the frozen base in `dtype`; peft keeps the adapters in float32.
    base = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32 if lora.rank == 0 else dtype)
    base.to(device)
    ensure_pad_token(tokenizer, base)
    if lora.rank == 0:
        reference = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype).to(device).eval()
        reference.requires_grad_(False)
        return base, reference, tokenizer
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config), None, tokenizer


def policy_memory(shape: ModelShape, rank: int, weight_bytes: int) -> list[HeldModel]:
    """Return what `load_policy` keeps: with LoRA one copy of the base in the training dtype and its adapters; in
    full fine-tuning float32 weights that all train, and the frozen reference copy (split like the policy).

    Saving (`save_checkpoint`) builds the merged float32 model beside the weights folded into it: two copies with
    LoRA (two and a half from a bf16 base); a fully fine-tuned policy saves itself (about half its size again in
    serialization, measured)."""
    if rank == 0:
        policy = HeldModel("policy", shape, 4, shape.parameters, save_copies=SERIALIZATION_COPIES)
        return [policy, HeldModel("reference", shape, weight_bytes, 0)]
    # From a bf16 base the float32 copies of what LoRA leaves alone (embeddings, norms) and of each weight as it
    # is upcast add about half a copy (measured, `bench/memory.py`).
    save_copies = 2.0 if weight_bytes == 4 else 2.5
    return [HeldModel("policy", shape, weight_bytes, shape.lora_weights(rank), save_copies=save_copies)]


@contextlib.contextmanager
def reference_mode(policy, reference=None):
    """Yield the model that computes reference log-probs: the explicit copy, or the policy with adapters off."""
    if reference is not None:
        yield reference
    elif isinstance(policy, PeftModel):
        with policy.disable_adapter():
            yield policy
    else:
        raise ValueError("a full fine-tuned policy needs an explicit reference model")


def save_checkpoint(policy, tokenizer, folder: Path, metadata: dict) -> Path:
    """Write `adapter/` (LoRA only), `merged/` (a plain model any `from_pretrained` and the app load) and metadata."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(policy, PeftModel):
        policy.save_pretrained(folder / "adapter")
        # Merge into a copy: peft's merge_and_unload works in place and would end training on this policy.
        merged = AutoModelForCausalLM.from_config(policy.get_base_model().config, dtype=torch.float32)
        missing, unexpected = merged.load_state_dict(_merged_state_dict(policy), strict=False)
        if unexpected or any("lm_head" not in name for name in missing):
            raise RuntimeError(f"merging LoRA into the base failed: missing {missing}, unexpected {unexpected}")
    else:
        merged = policy
    # from_config derives a generation config from the model config, losing e.g. a second end-of-turn EOS.
    merged.generation_config = copy.deepcopy(_base(policy).generation_config)
    merged.save_pretrained(folder / "merged")
    tokenizer.save_pretrained(folder / "merged")
    (folder / "checkpoint.json").write_text(json.dumps(metadata, indent=2, default=str))
    return folder


def _base(policy):
    return policy.get_base_model() if isinstance(policy, PeftModel) else policy


def _merged_state_dict(policy: PeftModel) -> dict:
    """Return the base model's state dict with each LoRA update W + (α/r)·B·A folded in, leaving `policy` as is."""
    merged = {}
    for name, module in policy.get_base_model().named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            adapter = module.active_adapters[0]
            weight = module.base_layer.weight.detach().float() + module.get_delta_weight(adapter).detach().float()
            merged[f"{name}.weight"] = weight.cpu()
            if module.base_layer.bias is not None:
                merged[f"{name}.bias"] = module.base_layer.bias.detach().float().cpu()
    for name, tensor in policy.get_base_model().state_dict().items():
        if "lora_" in name or ".base_layer." in name:
            continue
        merged.setdefault(name, tensor.detach().float().cpu())
    return merged
