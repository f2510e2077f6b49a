"""DPO's two forward layouts agree, the device picks one, the reference pass batches freely, and a step reads nothing
back from the device between logging points."""

import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch

import policy.dpo
from core.batching import LengthGroupedBatches
from core.distributed import Sharding
from core.runs import MetricsWriter, read_metrics
from policy.config import DPOConfig
from policy.dpo import fit_dpo, pair_losses, prepare_pairs
from policy.lora import LoraSettings, load_policy
from policy.pairs import COLLATORS, forward_mode, pair_length, pair_logps, tokenize_pairs
from policy.reference import cache_reference_logps, reference_batches

CPU = torch.device("cpu")
# Prompts and responses of different lengths (and two pairs on one prompt), so both layouts really pad.
PAIRS = [
    {"prompt": "Hi " * (2 + 5 * n), "chosen": "Yes " * (1 + 2 * n), "rejected": "No, never, not at all."}
    for n in range(4)
] + [{"prompt": "Hi Hi", "chosen": "A long answer " * 6, "rejected": "Short."}]
# float32 sums over ~10-30 tokens of a tiny model agree to ~1e-6 relative between layouts (same math, different
# padding and summation order); a row mix-up or masking slip moves them by whole units.
LOGP_TOLERANCE = dict(rtol=1e-4, atol=1e-4)
GRADIENT_TOLERANCE = dict(rtol=1e-3, atol=1e-5)


@pytest.fixture
def lora_policy(tiny_model_dir):
    policy, reference, tokenizer = load_policy(str(tiny_model_dir), LoraSettings(rank=4, alpha=8), CPU, torch.float32)
    torch.manual_seed(0)
    for name, parameter in policy.named_parameters():
        if (
            "lora_B" in name
        ):  # B starts at 0, which would make the policy its own reference and leave A without gradient
            torch.nn.init.normal_(parameter, std=0.5)
    return policy, reference, tokenizer


def examples_of(tokenizer, pairs=PAIRS):
    return tokenize_pairs(tokenizer, datasets.Dataset.from_list(pairs), max_length=128, max_prompt_tokens=128)


@pytest.mark.parametrize(
    "loss_type, label_smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)], ids=["dpo", "cdpo", "ipo"]
)
def test_padded_and_shared_prompt_layouts_give_the_same_losses_and_gradients(lora_policy, loss_type, label_smoothing):
    policy, reference_model, tokenizer = lora_policy
    examples = examples_of(tokenizer)
    reference = cache_reference_logps(policy, reference_model, examples, tokenizer.pad_token_id, 8, CPU)
    results = {}
    for layout, collate in COLLATORS.items():
        batch = collate(examples, tokenizer.pad_token_id)
        policy.zero_grad()
        logps = pair_logps(policy, batch)
        losses = pair_losses(logps, reference.lookup(batch), loss_type, beta=0.1, label_smoothing=label_smoothing)
        (losses * torch.arange(1.0, len(examples) + 1)).sum().backward()  # a weight per pair: a mix-up shows
        gradient = torch.cat([p.grad.flatten() for p in policy.parameters() if p.requires_grad])
        results[layout] = (logps, losses.detach(), gradient)

    (shared, shared_losses, shared_gradient), (padded, padded_losses, padded_gradient) = (
        results["shared_prompt"],
        results["padded"],
    )
    # The layouts differ for real: the padded one runs every prompt twice in one pass, with no cache.
    assert (
        COLLATORS["padded"](examples, 0)["input_ids"].shape
        != COLLATORS["shared_prompt"](examples, 0)["input_ids"].shape
    )
    torch.testing.assert_close(padded.chosen, shared.chosen, **LOGP_TOLERANCE)
    torch.testing.assert_close(padded.rejected, shared.rejected, **LOGP_TOLERANCE)
    torch.testing.assert_close(padded.chosen_tokens, shared.chosen_tokens)
    torch.testing.assert_close(padded_losses, shared_losses, **LOGP_TOLERANCE)
    assert shared_gradient.abs().max() > 1e-3  # a real gradient to compare
    torch.testing.assert_close(padded_gradient, shared_gradient, **GRADIENT_TOLERANCE)


def test_reference_cache_is_the_same_in_either_layout_and_any_batching(lora_policy):
    policy, reference_model, tokenizer = lora_policy
    examples = examples_of(tokenizer)
    caches = [
        cache_reference_logps(policy, reference_model, examples, tokenizer.pad_token_id, batch_size, CPU, collate)
        for collate in COLLATORS.values()
        for batch_size in (1, 2, len(examples))
    ]
    assert caches[0].chosen.abs().min() > 1  # real log-probs, not zeros left unfilled
    for cache in caches[1:]:
        torch.testing.assert_close(cache.chosen, caches[0].chosen, **LOGP_TOLERANCE)
        torch.testing.assert_close(cache.rejected, caches[0].rejected, **LOGP_TOLERANCE)


def test_reference_batches_go_longest_first_and_fill_a_memory_budget(tokenizer):
    examples = examples_of(tokenizer)
    model_config = SimpleNamespace(vocab_size=100, hidden_size=8)
    by_count = reference_batches(examples, 2, memory_budget=None, model_config=model_config)
    assert [len(batch) for batch in by_count] == [2, 2, 1]
    lengths = [pair_length(example) for batch in by_count for example in batch]
    assert lengths == sorted(lengths, reverse=True)

    def peak(batch):  # the estimate the budget bounds, written out
        completion = max(max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in batch)
        width = max(pair_length(e) for e in batch)
        logits = (completion + 1) * 100 * policy.reference.LOGIT_BYTES
        return 2 * len(batch) * (logits + width * 8 * policy.reference.ACTIVATION_BYTES)

    ordered = sorted(examples, key=pair_length, reverse=True)
    budget = peak(ordered[:3])  # exactly room for the three longest pairs
    by_memory = reference_batches(examples, 2, memory_budget=budget, model_config=model_config)
    assert len(by_memory[0]) == 3
    assert all(peak(batch) <= budget for batch in by_memory)
    assert sorted(e["index"] for batch in by_memory for e in batch) == list(range(len(examples)))
    assert [len(b) for b in reference_batches(examples, 2, memory_budget=1, model_config=model_config)] == [1] * 5


def test_layout_follows_the_device_unless_chosen(tiny_model_dir, tmp_path):
    assert forward_mode("auto", torch.device("cpu")) == "shared_prompt"
    assert forward_mode("auto", torch.device("cuda", 0)) == "padded"
    assert forward_mode("padded", torch.device("cpu")) == "padded"
    with pytest.raises(ValueError, match="unknown DPO forward_mode 'packed'"):
        forward_mode("packed", CPU)

    # What fit_dpo actually runs on this CPU: 'auto' runs each prompt once (3 rows per pair), 'padded' 2 rows.
    rows_seen = {}
    for layout in ("auto", "padded"):
        policy, reference, tokenizer = load_policy(
            str(tiny_model_dir), LoraSettings(rank=4, alpha=8), CPU, torch.float32
        )
        config = small_config(tiny_model_dir, tmp_path / layout, forward_mode=layout)
        train = prepare_pairs(policy, reference, tokenizer, datasets.Dataset.from_list(PAIRS), config, CPU)
        rows_seen[layout] = 0

        def count_rows(module, args, kwargs, output, layout=layout):
            rows_seen[layout] += kwargs["input_ids"].shape[0]

        policy.register_forward_hook(count_rows, with_kwargs=True)
        fit_dpo(policy, tokenizer, train, config, Sharding("cpu"), MetricsWriter(tmp_path / layout))
    assert rows_seen == {"auto": 3 * len(PAIRS), "padded": 2 * len(PAIRS)}


def small_config(tiny_model_dir, run_dir, **changes) -> DPOConfig:
    values = dict(
        model=str(tiny_model_dir), lora_rank=4, lora_alpha=8, learning_rate=3e-3, batch_prompts=2, epochs=1,
        max_length=64, device="cpu", output_dir=str(run_dir),
    )  # fmt: skip
    return DPOConfig(**(values | changes))


HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__format__")
PROJECT = Path(policy.dpo.__file__).resolve().parent.parent


@pytest.mark.parametrize("layout", ["padded", "shared_prompt"])
def test_metrics_are_read_off_the_device_only_at_log_steps(tiny_model_dir, tokenizer, tmp_path, monkeypatch, layout):
    """No project code reads a tensor back to the host (a GPU synchronisation) in a step that writes no record."""
    config = small_config(tiny_model_dir, tmp_path, forward_mode=layout, log_every=3)
    policy_model, reference, tokenizer = load_policy(config.model, LoraSettings(rank=4, alpha=8), CPU, torch.float32)
    pairs = [
        {"prompt": f"What is {n} plus 3?", "chosen": f"{n + 3}.", "rejected": "I do not know. " * n} for n in range(14)
    ]
    train = prepare_pairs(policy_model, reference, tokenizer, datasets.Dataset.from_list(pairs), config, CPU)

    events, step_metrics = [], []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, _name=name, **kwargs):
            caller = Path(sys._getframe(1).f_code.co_filename).resolve()
            ours = PROJECT in caller.parents and not {"tests", "site-packages"} & set(
                caller.parts
            )  # a venv may sit inside
            if ours:
                events.append(("read", _name, f"{caller.name}:{sys._getframe(1).f_lineno}"))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    step_function = policy.dpo.dpo_step

    def step(*args, **kwargs):
        events.append(("step",))
        loss, metrics = step_function(*args, **kwargs)
        step_metrics.append({key: value.clone() for key, value in metrics.items()})
        return loss, metrics

    monkeypatch.setattr(policy.dpo, "dpo_step", step)
    writer = MetricsWriter(tmp_path)
    write = writer.write
    writer.write = lambda step, metrics: (events.append(("write", step)), write(step, metrics))[1]

    fit_dpo(policy_model, tokenizer, train, config, Sharding("cpu"), writer)
    monkeypatch.undo()

    steps = [[]]  # the events of each step, from its dpo_step call to the next one
    for event in events:
        if event[0] == "step":
            steps.append([])
        steps[-1].append(event)
    steps = steps[1:]
    assert len(steps) == 7  # 14 pairs, 2 per step
    written = [index + 1 for index, events_of_step in enumerate(steps) if any(e[0] == "write" for e in events_of_step)]
    assert written == [1, 3, 6, 7]  # the first step, every third, the last
    for number, events_of_step in enumerate(steps, start=1):
        reads = [event for event in events_of_step if event[0] == "read"]
        if number in written:
            assert reads, "the detector should see the log step's one read"
        else:
            assert not reads, f"step {number} read values back from the device: {reads}"

    # Each record averages the steps since the last one, on the device.
    records = read_metrics(tmp_path)
    assert [record["step"] for record in records] == written
    for record, first, last in zip(records, [1, 2, 4, 7], written, strict=True):
        losses = torch.stack([step_metrics[i - 1]["losses/policy_loss"] for i in range(first, last + 1)])
        assert record["losses/policy_loss"] == pytest.approx(losses.mean().item(), rel=1e-5)
        assert record["charts/tokens_per_s"] > 0 and record["charts/step_time_s"] > 0


def test_length_grouped_batches_cover_every_pair_once_with_similar_lengths_together():
    lengths = [7, 50, 8, 49, 9, 51, 6, 48, 52, 47]
    sampler = LengthGroupedBatches(lengths, batch_size=2, seed=0)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(index for batch in epoch for index in batch) == list(range(len(lengths)))
        assert len(epoch) == len(sampler) == 5
        for batch in epoch:  # short with short, long with long
            assert max(lengths[i] for i in batch) - min(lengths[i] for i in batch) <= 2
    assert first != second  # a new order each epoch
    assert list(LengthGroupedBatches(lengths, 2, seed=0)) == first  # and the same on every process
