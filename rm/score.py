"""Score responses with a trained reward model: the interface PPO, GRPO and the app use."""

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from core.batching import pad_right
from core.models import ensure_pad_token, pick_device, resolve_model
from rm.config import RewardConfig
from rm.model import encode, reads_last_token, sequence_rewards

log = logging.getLogger(__name__)


class RewardScorer:
    """A frozen reward model with the training run's input format and reward normalization."""

    def __init__(
        self, model, tokenizer, mean: float = 0.0, std: float = 1.0, max_length: int = 512, run_dir: str | None = None
    ):
        if getattr(model.config, "num_labels", None) != 1:
            raise ValueError(f"a reward model has one output (num_labels=1), this one has {model.config.num_labels}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.mean, self.std = mean, std
        self.max_length = max_length
        self.last_token = reads_last_token(model)
        self.run_dir = run_dir  # where it was loaded from, for lineage

    @classmethod
    def from_run(cls, path: str | Path, device: str | None = None) -> "RewardScorer":
        """Load a reward-model run folder (or any one-output sequence-classification model) on CUDA or CPU.

        A run folder brings its normalization (mean/std of training rewards) and max_length; a bare model
        folder or hub id scores unnormalized (mean 0, std 1) with max_length 512. `device`: None or "auto"
        (CUDA with bf16 when present), "cpu" or "cuda".
        """
        choice = pick_device(device)
        model_path = resolve_model(path)
        model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=choice.dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        ensure_pad_token(tokenizer, model)
        model.to(choice.device)
        run = Path(path)
        normalization = {"mean": 0.0, "std": 1.0}
        if (run / "normalization.json").exists():
            normalization = json.loads((run / "normalization.json").read_text())
        max_length = RewardConfig.load(run / "config.json").max_length if _is_run(run) else 512
        return cls(model, tokenizer, normalization["mean"], normalization["std"], max_length, str(path))

    @torch.no_grad()
    def score(
        self, prompts: list[str], responses: list[str], normalize: bool = True, batch_size: int = 16
    ) -> torch.Tensor:
        """Return the reward of each (prompt, response) pair, (N,) float32 on the CPU; normalized: (r - mean) / std.

        Responses are the text after the prompt, without EOS (it is appended here as in training). Sequences
        are batched by length so little compute goes to padding.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
        sequences = [
            encode(self.tokenizer, prompt, response, self.max_length, self.last_token)
            for prompt, response in zip(prompts, responses, strict=True)
        ]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        rewards = torch.zeros(len(sequences), dtype=torch.float32)
        device = self.model.device
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids, attention_mask = pad_right([sequences[i] for i in chunk], self.tokenizer.pad_token_id, device)
            rewards[chunk] = sequence_rewards(self.model, input_ids, attention_mask).float().cpu()
        if normalize:
            rewards = (rewards - self.mean) / self.std
        return rewards


def _is_run(folder: Path) -> bool:
    """Return whether a folder is a reward-model run (its config.json is a RewardConfig, not a model config)."""
    config_file = folder / "config.json"
    return folder.is_dir() and config_file.exists() and "model_type" not in json.loads(config_file.read_text())
