"""DPO's reference: one pass over the pairs with no backward, its log-probs cached for every step after.

The reference is the explicit frozen copy (full fine-tuning) or the LoRA policy with its adapter disabled.
Batches are sorted longest first (little padding) and, on a GPU, sized to a share of the free memory.
"""

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from policy.lora import reference_mode
from policy.pairs import COLLATORS, PairLogps, batch_to, forward_mode, pair_length, pair_logps

REFERENCE_MEMORY_SHARE = 0.5  # of the GPU memory free when the pass starts: room for the batch's logits
LOGIT_BYTES = 12  # per vocabulary entry of a kept position: bf16 logits, their float32 copy, logsumexp's temporary
ACTIVATION_BYTES = 16  # per hidden unit of a token: one layer's bf16 states and MLP intermediates (no backward)


@dataclass
class ReferenceCache:
    """Reference log-probs of every pair, indexed by the pair's `index`; computed once, then read each step.

    The values live on the training device, so a step looks them up with no copy to or from the host.
    """

    chosen: torch.Tensor  # (N,)
    rejected: torch.Tensor  # (N,)

    def lookup(self, batch: dict) -> PairLogps:
        index = batch["index"].to(self.chosen.device)
        tokens = batch["completion_mask"].sum(-1).float()  # (2B,)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        device = tokens.device
        return PairLogps(self.chosen[index].to(device), self.rejected[index].to(device), chosen_tokens, rejected_tokens)


def reference_batches(examples: list[dict], pairs_per_batch: int, memory_budget: int | None, model_config):
    """Return the pairs longest first, cut into batches: similar lengths together, so little padding.

    The pass has no backward, so on a GPU a batch grows while its estimated peak (the kept logits: 2 rows per
    pair, longest completion + 1 positions each; and one layer's activations) fits `memory_budget` bytes;
    without a budget (CPU) it holds `pairs_per_batch` pairs.
    """
    batches: list[list[dict]] = []
    completion = 0
    for example in sorted(examples, key=pair_length, reverse=True):
        completion = max(completion, len(example["chosen_ids"]), len(example["rejected_ids"]))
        batch = batches[-1] if batches else []
        if batch and _fits(batch + [example], completion, pairs_per_batch, memory_budget, model_config):
            batch.append(example)
        else:
            batches.append([example])
            completion = max(len(example["chosen_ids"]), len(example["rejected_ids"]))
    return batches


def _fits(batch: list[dict], completion: int, pairs_per_batch: int, memory_budget: int | None, model_config) -> bool:
    if memory_budget is None:
        return len(batch) <= pairs_per_batch
    width = pair_length(batch[0])  # the longest row: pairs come longest first
    logits = (completion + 1) * model_config.vocab_size * LOGIT_BYTES
    activations = width * model_config.hidden_size * ACTIVATION_BYTES
    return 2 * len(batch) * (logits + activations) <= memory_budget


def reference_memory_budget(device: torch.device) -> int | None:
    """Return the bytes a reference batch may use on a CUDA device (a share of what is free now); None elsewhere."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * REFERENCE_MEMORY_SHARE)


@torch.no_grad()
def cache_reference_logps(
    policy, reference, examples: list[dict], pad_token_id: int, batch_size: int, device: torch.device, collate=None
) -> ReferenceCache:
    """Return the reference's log-probs of every pair: the explicit copy, or the LoRA policy with adapters off.

    `collate`: the forward mode (default: the one `forward_mode` picks for the device).
    """
    collate = collate or COLLATORS[forward_mode("auto", device)]
    chosen = torch.zeros(len(examples), device=device)
    rejected = torch.zeros(len(examples), device=device)
    with reference_mode(policy, reference) as model:
        batches = reference_batches(examples, batch_size, reference_memory_budget(device), model.config)
        was_training = model.training
        model.eval()
        for chunk in tqdm(batches, desc="reference log-probs", unit="batch", leave=False):
            batch = batch_to(collate(chunk, pad_token_id), device)
            logps = pair_logps(model, batch)
            chosen[batch["index"]] = logps.chosen.float()
            rejected[batch["index"]] = logps.rejected.float()
        model.train(was_training)
    return ReferenceCache(chosen, rejected)
