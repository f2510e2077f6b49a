"""DPO training on a tiny model: masking, the reference cache, held-out learning, and the run it leaves behind."""

import json

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from core.distributed import Sharding
from core.runs import MetricsWriter, read_metrics
from data.registry import list_models
from policy.config import DPOConfig
from policy.dpo import evaluate_pairs, fit_dpo, prepare_pairs, train_dpo
from policy.logprobs import token_logprobs
from policy.lora import LoraSettings, load_policy
from policy.pairs import collate_pairs, load_pairs, pair_logps, tokenize_pairs

CPU = torch.device("cpu")
RAMBLING = "Well, that is a hard one, let me think about it for quite a long while before I try to answer it."


def arithmetic_pairs(first: int, count: int) -> list[dict]:
    """Pairs whose chosen answer is short and right, and whose rejected answer rambles."""
    return [
        {"prompt": f"What is {n} plus {n + 3}?", "chosen": f"{2 * n + 3}.", "rejected": RAMBLING}
        for n in range(first, first + count)
    ]


def dpo_config(tiny_model_dir, tmp_path, **changes) -> DPOConfig:
    values = dict(
        model=str(tiny_model_dir),
        lora_rank=8,
        lora_alpha=16,
        learning_rate=3e-3,
        batch_prompts=4,
        epochs=1,
        max_length=64,
        device="cpu",
        log_every=1,  # a record per step, so tests can count steps in metrics.jsonl
        output_dir=str(tmp_path / "run"),
    )
    return DPOConfig(**(values | changes))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_sequence_logprob_counts_completion_tokens_only(tiny_model, tokenizer):
    pairs = datasets.Dataset.from_list(arithmetic_pairs(1, 3))
    examples = tokenize_pairs(tokenizer, pairs, max_length=64, max_prompt_tokens=64)
    batch = collate_pairs(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        per_token, _ = token_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        logps = pair_logps(tiny_model, batch)
    # Prompt and padding positions contribute exactly nothing.
    assert (per_token[batch["completion_mask"] == 0] == 0).all()
    # Independent check: each sequence alone, unpadded, summing log-softmax over its completion tokens only.
    rows = [*examples]
    for row, key in enumerate(["chosen_ids"] * len(rows) + ["rejected_ids"] * len(rows)):
        example = rows[row % len(rows)]
        ids = torch.tensor([example["prompt_ids"] + example[key]])
        with torch.no_grad():
            log_softmax = F.log_softmax(tiny_model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        picked = log_softmax.gather(-1, ids[0, 1:, None])[:, 0]
        expected = picked[len(example["prompt_ids"]) - 1 :].sum()
        actual = (logps.chosen if key == "chosen_ids" else logps.rejected)[row % len(rows)]
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-3)


def test_padding_content_and_batch_mates_do_not_change_logprobs(tiny_model, tokenizer):
    short = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}
    long = {"prompt": "Tell me a long story about " + "dragons " * 20, "chosen": "Once " * 30, "rejected": "No."}
    examples = tokenize_pairs(tokenizer, datasets.Dataset.from_list([short, long]), 256, 256)
    alone = collate_pairs(examples[:1], tokenizer.pad_token_id)
    padded = collate_pairs(examples, tokenizer.pad_token_id)
    assert (padded["attention_mask"][0] == 0).sum() > 20  # the short pair really is padded on both sides
    scrambled = dict(padded)
    noise = torch.randint(3, 1000, padded["input_ids"].shape)
    scrambled["input_ids"] = torch.where(padded["attention_mask"].bool(), padded["input_ids"], noise)
    with torch.no_grad():
        reference = pair_logps(tiny_model, alone)
        for batch in (padded, scrambled):
            logps = pair_logps(tiny_model, batch)
            torch.testing.assert_close(logps.chosen[:1], reference.chosen, rtol=1e-4, atol=1e-3)
            torch.testing.assert_close(logps.rejected[:1], reference.rejected, rtol=1e-4, atol=1e-3)
            torch.testing.assert_close(logps.chosen_tokens[:1], reference.chosen_tokens)


def test_shared_prompt_pass_gives_the_gradients_of_full_sequences(tiny_model_dir, tokenizer):
    """The prompt runs once for both sides of a pair; gradients must equal those of two full forward passes."""
    policy, _, tokenizer = load_policy(str(tiny_model_dir), LoraSettings(rank=4, alpha=8), CPU, torch.float32)
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:  # B starts at 0, which would leave A without gradient
            torch.nn.init.normal_(parameter, std=0.5)
    pairs = [{"prompt": "Hi " * (2 + 3 * n), "chosen": "Yes " * (1 + n), "rejected": "No, never."} for n in range(3)]
    batch = collate_pairs(tokenize_pairs(tokenizer, datasets.Dataset.from_list(pairs), 64, 64), tokenizer.pad_token_id)
    weights = torch.arange(1.0, 7.0)  # a different weight per row, so a row mix-up changes the gradient

    def gradient(sequence_logps):
        policy.zero_grad()
        (sequence_logps * weights).sum().backward()
        return torch.cat([p.grad.flatten() for p in policy.parameters() if p.requires_grad])

    shared = pair_logps(policy, batch)
    full, _ = token_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    torch.testing.assert_close(torch.cat([shared.chosen, shared.rejected]), full.sum(-1), rtol=1e-4, atol=1e-3)
    shared_gradient = gradient(torch.cat([shared.chosen, shared.rejected]))
    full_gradient = gradient(full.sum(-1))
    torch.testing.assert_close(shared_gradient, full_gradient, rtol=1e-3, atol=1e-4)


def test_reference_forward_runs_once_per_pair_over_all_epochs(tiny_model_dir, tokenizer, tmp_path):
    config = dpo_config(tiny_model_dir, tmp_path, lora_rank=0, learning_rate=1e-4, epochs=3, batch_prompts=2)
    policy, reference, tokenizer = load_policy(config.model, LoraSettings(rank=0), CPU, torch.float32)
    reference_rows, policy_rows = [], []
    reference.register_forward_hook(lambda m, a, k, o: reference_rows.append(k["input_ids"].shape[0]), with_kwargs=True)
    policy.register_forward_hook(lambda m, a, k, o: policy_rows.append(k["input_ids"].shape[0]), with_kwargs=True)
    pairs = datasets.Dataset.from_list(arithmetic_pairs(1, 5))

    train = prepare_pairs(policy, reference, tokenizer, pairs, config, CPU)
    fit_dpo(policy, tokenizer, train, config, Sharding("cpu"), MetricsWriter(tmp_path))

    # A batch runs its prompts once, then chosen and rejected together: 3 rows per pair and pass.
    assert sum(reference_rows) == 3 * len(pairs)  # every pair once
    assert sum(policy_rows) == 3 * 3 * len(pairs)  # while the policy saw every pair in each of 3 epochs
    assert len(read_metrics(tmp_path)) == 3 * 3  # ceil(5 / 2) steps per epoch


def test_dpo_raises_margin_and_accuracy_on_held_out_pairs(tiny_model_dir, tokenizer, tmp_path):
    config = dpo_config(tiny_model_dir, tmp_path, epochs=2)
    torch.manual_seed(0)
    policy, reference, tokenizer = load_policy(config.model, LoraSettings(rank=8, alpha=16), CPU, torch.float32)
    train = prepare_pairs(
        policy, reference, tokenizer, datasets.Dataset.from_list(arithmetic_pairs(1, 12)), config, CPU
    )
    held_out = prepare_pairs(
        policy, reference, tokenizer, datasets.Dataset.from_list(arithmetic_pairs(50, 8)), config, CPU
    )
    before = evaluate_pairs(policy, held_out.reference, held_out.examples, config.beta)

    policy, last = fit_dpo(policy, tokenizer, train, config, Sharding("cpu"), MetricsWriter(tmp_path))
    after = evaluate_pairs(policy, held_out.reference, held_out.examples, config.beta)

    assert before["eval/margin"] == pytest.approx(0.0, abs=1e-4)  # the LoRA policy starts as its reference
    assert after["eval/margin"] > 0.3
    assert after["eval/accuracy"] >= 0.9
    history = read_metrics(tmp_path)
    assert history[-1]["rewards/margins"] > history[0]["rewards/margins"]
    for key in (
        "losses/policy_loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    ):
        assert key in history[-1]
    assert history[-1]["charts/tokens_per_s"] > 0


def test_train_dpo_writes_run_and_records_it(tiny_model_dir, tmp_path, store):
    config = dpo_config(tiny_model_dir, tmp_path)
    run_dir = train_dpo(config, store=store, pairs=arithmetic_pairs(1, 12))  # 12 prompts: 1 held out

    assert run_dir == tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text())["algo"] == "dpo"
    assert (run_dir / "adapter").is_dir() and (run_dir / "merged" / "config.json").exists()
    assert len(read_metrics(run_dir)) == 3 + 1  # ceil(11 / 4) training steps, then the held-out evaluation
    [recorded] = list_models(store, kind="policy")
    assert recorded["path"] == str(run_dir.resolve())
    assert set(recorded["metrics"]) >= {"eval/accuracy", "eval/margin", "losses/policy_loss"}
    assert recorded["metrics"]["eval/accuracy"] == read_metrics(run_dir)[-1]["eval/accuracy"]
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    moved = [not torch.equal(p, q) for p, q in zip(merged.parameters(), base.parameters(), strict=True)]
    assert any(moved)


def test_bad_pairs_fail_before_anything_is_written(tiny_model_dir, tmp_path, store):
    config = dpo_config(tiny_model_dir, tmp_path)
    with pytest.raises(ValueError, match="holds no pairs"):
        train_dpo(config, store=store)  # a store without rankings
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['rejected'\]"):
        train_dpo(config, pairs=[{"prompt": "p", "chosen": "c"}])
    with pytest.raises(ValueError, match="needs preference pairs"):
        train_dpo(config)
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="already holds a run"):
        train_dpo(config, pairs=arithmetic_pairs(1, 3))


def test_load_pairs_reads_jsonl_parquet_and_saved_datasets(tmp_path):
    rows = arithmetic_pairs(1, 3)
    table = datasets.Dataset.from_list(rows)
    table.to_json(str(tmp_path / "pairs.jsonl"), lines=True)
    table.to_parquet(str(tmp_path / "pairs.parquet"))
    table.save_to_disk(str(tmp_path / "pairs-folder"))
    for source in ("pairs.jsonl", "pairs.parquet", "pairs-folder"):
        assert load_pairs(tmp_path / source).select_columns(["prompt", "chosen", "rejected"]).to_list() == rows
    with pytest.raises(ValueError, match="unknown file type '.csv'"):
        (tmp_path / "pairs.csv").write_text("prompt,chosen,rejected\n")
        load_pairs(tmp_path / "pairs.csv")
    with pytest.raises(ValueError, match="row 1"):
        load_pairs([rows[0], {"prompt": "p", "chosen": "", "rejected": "r"}])
