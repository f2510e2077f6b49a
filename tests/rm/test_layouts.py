"""The reward model's two forward layouts (CUDA: widths bucketed to 64, batches grouped by length; CPU: as-is) give
the same rewards, losses and gradients; the device picks the layout; a training step reads no number to the host
between logging points."""

import contextlib
import os
import sys

import pytest
import torch

from core.batching import padding_for
from core.distributed import Sharding
from rm.config import RewardConfig
from rm.loss import batch_loss
from rm.model import RewardNetwork, load_backbone, reads_last_token
from rm.synthetic import synthetic_rankings
from rm.train import batches_of, encode_rankings, score_rankings, train_epoch


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    return load_backbone(str(tiny_model_dir), lora_rank=4)


def loss_and_grads(model, batch, pad_id, multiple):
    model.zero_grad()
    rewards = score_rankings(RewardNetwork(model), batch, pad_id, "cpu", contextlib.nullcontext, multiple)
    loss = batch_loss(rewards, [ranking.tie_groups for ranking in batch], margin=0.0, center_coefficient=0.01)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), torch.cat(rewards).detach(), grads


def test_bucketed_padding_gives_the_same_loss_rewards_and_gradients(tiny):
    model, tokenizer = tiny
    model.eval()  # dropout is off in reward models anyway; eval makes the comparison exact
    batch = encode_rankings(synthetic_rankings(3), tokenizer, 128, reads_last_token(model))
    plain = loss_and_grads(model, batch, tokenizer.pad_token_id, multiple=1)
    bucketed = loss_and_grads(model, batch, tokenizer.pad_token_id, multiple=64)
    torch.testing.assert_close(bucketed[0], plain[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bucketed[1], plain[1], atol=1e-6, rtol=1e-5)
    assert bucketed[2].keys() == plain[2].keys() and plain[2]
    for name, grad in plain[2].items():
        torch.testing.assert_close(bucketed[2][name], grad, atol=1e-6, rtol=1e-4)


def test_length_grouped_batches_hold_every_ranking_once_and_pad_less(tiny):
    model, tokenizer = tiny
    encoded = encode_rankings(synthetic_rankings(40), tokenizer, 128, reads_last_token(model))
    plain = batches_of(encoded, 4, torch.Generator().manual_seed(0))
    grouped = batches_of(encoded, 4, torch.Generator().manual_seed(0), group_by_length=True)
    ids = sorted(ranking.ranking_id for batch in grouped for ranking in batch)
    assert ids == sorted(ranking.ranking_id for ranking in encoded) and all(len(batch) == 4 for batch in grouped)

    def padding(batches):
        return sum(len(b) * max(len(s) for r in b for s in r.sequences) for b in batches)

    assert padding(grouped) < padding(plain)
    again = batches_of(encoded, 4, torch.Generator().manual_seed(0), group_by_length=True)
    assert [[r.ranking_id for r in b] for b in again] == [[r.ranking_id for r in b] for b in grouped]


def test_the_device_picks_the_layout():
    assert padding_for("cpu") == padding_for(torch.device("cpu"))
    assert (padding_for("cpu").pad_multiple, padding_for("cpu").group_by_length) == (1, False)
    assert (padding_for("cuda").pad_multiple, padding_for("cuda").group_by_length) == (64, True)


def test_a_training_epoch_reads_numbers_only_at_logging_points(tiny, tmp_path, monkeypatch):
    from core.runs import MetricsWriter, read_metrics

    model, tokenizer = tiny
    encoded = encode_rankings(synthetic_rankings(24), tokenizer, 64, reads_last_token(model))
    config = RewardConfig(backbone="unused", batch_size=2, log_every=4, lora_rank=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = {"epoch": 0, "epochs": 1, "step": 0, "generator": torch.Generator().manual_seed(0)}
    reads = []  # host reads made by rm/train.py itself (transformers' own mask checks are not ours to count)
    for method in ("item", "tolist"):
        real = getattr(torch.Tensor, method)

        def counted(tensor, real=real):
            if sys._getframe(1).f_code.co_filename.endswith(f"rm{os.sep}train.py"):
                reads.append(1)
            return real(tensor)

        monkeypatch.setattr(torch.Tensor, method, counted)
    result = train_epoch(RewardNetwork(model), optimizer, scheduler, encoded, config, tokenizer.pad_token_id,
                         Sharding("cpu"), state, MetricsWriter(tmp_path))  # fmt: skip
    assert state["step"] == 12 and len(read_metrics(tmp_path)) == 3  # 24 rankings / 2, logged every 4 steps
    # one read (loss and counts together) at each of 3 logging points, one at the end, and the shuffle's order
    assert len(reads) == 3 + 1 + 1
    assert 0 <= result["accuracy"] <= 1 and result["pairs"] == sum(ranking.num_pairs for ranking in encoded)
