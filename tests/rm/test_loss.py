"""The ranking loss against TRL's RewardTrainer.compute_loss (K=2) and against pairs expanded by data.export (K>2)."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from trl.trainer.reward_trainer import RewardTrainer

from data.export import expand_to_pairs
from rm.loss import batch_loss, comparison_pairs, correct_comparisons, ranking_loss


class ScoreTable(torch.nn.Module):
    """A 'model' whose reward for a sequence is a free parameter looked up by its first token id."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = torch.nn.Parameter(scores.clone())

    def forward(self, input_ids, attention_mask=None, **kwargs):  # TRL passes margin and use_cache too
        return SimpleNamespace(logits=self.scores[input_ids[:, 0]].unsqueeze(-1))  # (B, 1)


def trl_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float | None, center: float | None):
    """Return (loss, d loss / d scores) from TRL's own compute_loss on pairs whose rewards we set."""
    n = len(chosen)
    model = ScoreTable(torch.cat([chosen, rejected]))
    identity = lambda tensor: tensor  # noqa: E731  (single process: gathering is the identity)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(center_rewards_coefficient=center),
        accelerator=SimpleNamespace(gather=identity, gather_for_metrics=identity),
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    # DataCollatorForPreference puts the chosen sequences first, then the rejected ones.
    input_ids = torch.arange(2 * n).unsqueeze(-1)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if margin is not None:
        inputs["margin"] = torch.full((n,), margin)
    loss = RewardTrainer.compute_loss(trainer, model, inputs)
    loss.backward()
    return loss.detach(), model.scores.grad


@pytest.mark.parametrize("margin", [None, 0.5])
@pytest.mark.parametrize("center", [None, 0.01])
def test_k2_rankings_give_trls_reward_loss_and_gradient(margin, center):
    torch.manual_seed(0)
    chosen, rejected = torch.randn(6), torch.randn(6)
    expected_loss, expected_grad = trl_loss(chosen, rejected, margin, center)

    rewards = [torch.stack([c, r]).requires_grad_() for c, r in zip(chosen, rejected, strict=True)]
    groups = [torch.tensor([0, 1])] * len(rewards)
    loss = batch_loss(rewards, groups, margin or 0.0, center or 0.0)
    loss.backward()

    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    grad = torch.stack([r.grad for r in rewards])  # (N, 2): chosen, rejected
    torch.testing.assert_close(torch.cat([grad[:, 0], grad[:, 1]]), expected_grad)


def test_k_wise_loss_is_the_mean_of_the_pairs_export_expands_it_to():
    rewards = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.1])
    ranking = [[2], [0, 3], [4], [1]]  # tie groups of response indices, best first
    tie_groups = torch.tensor([1, 3, 0, 1, 2])
    pairs = expand_to_pairs({"ranking_id": 1, "prompt_id": 1, "prompt": "p", "ranked_responses": ranking})
    assert len(pairs) == 9  # C(5,2) = 10 minus the tied pair (0, 3)

    per_pair = [-math.log(1 / (1 + math.exp(-(rewards[p["chosen"]] - rewards[p["rejected"]] - 0.2)))) for p in pairs]
    centering = [(rewards[p["chosen"]] + rewards[p["rejected"]]).item() ** 2 for p in pairs]
    expected = sum(per_pair) / len(pairs) + 0.05 * sum(centering) / len(pairs)

    assert ranking_loss(rewards, tie_groups, margin=0.2, center_coefficient=0.05).item() == pytest.approx(expected)
    better, worse = comparison_pairs(tie_groups)
    assert sorted(zip(better.tolist(), worse.tolist(), strict=True)) == sorted(
        (p["chosen"], p["rejected"]) for p in pairs
    )


def test_tied_responses_make_no_comparison():
    tie_groups = torch.tensor([0, 1, 1])
    rewards = torch.tensor([1.0, -2.0, 5.0], requires_grad=True)
    loss = ranking_loss(rewards, tie_groups)
    loss.backward()
    expected = (-F.logsigmoid(torch.tensor(3.0)) - F.logsigmoid(torch.tensor(-4.0))) / 2
    assert loss.item() == pytest.approx(expected.item())
    # Nothing orders the tied pair: swapping their rewards leaves the loss as it was; only the best pushes them down.
    swapped = torch.tensor([1.0, 5.0, -2.0])
    assert ranking_loss(swapped, tie_groups).item() == pytest.approx(loss.item())
    assert ranking_loss(swapped, torch.tensor([0, 1, 2])).item() != pytest.approx(loss.item())
    assert rewards.grad[1] > 0 and rewards.grad[2] > 0
    with pytest.raises(ValueError, match="all tie"):
        ranking_loss(rewards, torch.tensor([0, 0, 0]))


def test_a_k8_ranking_weighs_as_much_as_one_k2_ranking():
    torch.manual_seed(1)
    big = torch.randn(8)
    big_groups = torch.arange(8)
    small = [torch.randn(2) for _ in range(8)]
    small_groups = [torch.tensor([0, 1])] * 8

    loss = batch_loss([big, *small], [big_groups, *small_groups])

    per_ranking = [ranking_loss(big, big_groups)] + [
        ranking_loss(r, g) for r, g in zip(small, small_groups, strict=True)
    ]
    assert loss.item() == pytest.approx(torch.stack(per_ranking).mean().item())
    # Weighted per pair instead, the K=8 ranking's 28 pairs would outweigh the other eight pairs 28 to 8.
    pair_losses = [-F.logsigmoid(big[b] - big[w]) for b, w in zip(*comparison_pairs(big_groups), strict=True)]
    pair_losses += [-F.logsigmoid(r[0] - r[1]) for r in small]
    assert loss.item() != pytest.approx(torch.stack(pair_losses).mean().item())
    # Each ranking's gradient carries 1/9 of the loss: the K=8 one as a whole, each K=2 one alike.
    big_leaf = big.clone().requires_grad_()
    batch_loss([big_leaf, *small], [big_groups, *small_groups]).backward()
    alone = big.clone().requires_grad_()
    ranking_loss(alone, big_groups).backward()
    torch.testing.assert_close(big_leaf.grad, alone.grad / 9)


def test_pairwise_accuracy_counts_only_untied_pairs():
    rewards = torch.tensor([3.0, 1.0, 2.0, 0.0])
    assert correct_comparisons(rewards, torch.tensor([0, 1, 1, 2])) == (5, 5)
    assert correct_comparisons(rewards, torch.tensor([3, 1, 2, 0])) == (0, 6)  # exactly reversed
