"""DPO, IPO and conservative-DPO losses against TRL's DPOTrainer on the same pairs and the same log-probs."""

import math

import datasets
import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoModelForCausalLM
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer

from policy.dpo import conservative_dpo_loss, dpo_loss, ipo_loss, pair_losses
from policy.pairs import PairLogps, collate_pairs, pair_logps, tokenize_pairs
from tests.conftest import tiny_llama_config

PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "It is probably five, or maybe four, hard to say."},
    {"prompt": "Name a colour.", "chosen": "Blue is a colour many people like.", "rejected": "No."},
    {"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "Hello hello hello hello."},
]
BETAS = (0.05, 0.1, 0.5)


def _tiny_model(tokenizer, seed: int):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer)).eval()


@pytest.fixture(scope="module")
def trl_trainer(tokenizer, tmp_path_factory):
    """A real TRL DPOTrainer over PAIRS, with a policy and a different reference (so h is not 0)."""
    policy, reference = _tiny_model(tokenizer, 0), _tiny_model(tokenizer, 1)
    # TRL appends EOS to plain-text completions, so passing the chat-formatted prompt as text tokenizes like us.
    rows = [
        {
            "prompt": tokenizer.apply_chat_template(
                [{"role": "user", "content": pair["prompt"]}], add_generation_prompt=True, tokenize=False
            ),
            "chosen": pair["chosen"],
            "rejected": pair["rejected"],
        }
        for pair in PAIRS
    ]
    args = TRLDPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl-dpo")),
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=len(PAIRS),
        max_length=None,
    )
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.model.eval()
    yield trainer
    AcceleratorState._reset_state(reset_partial_state=True)  # as accelerate's own tests do: the next run starts anew


def _trl_batch_and_logps(trainer, indices):
    """Return TRL's collated batch, and the (policy, reference) log-probs TRL's own forward computes on it.

    The reference log-probs go into the batch the way TRL's precompute_ref_log_probs path caches them, so TRL's
    loss reads exactly the values ours gets.
    """
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in indices])
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)

    def logps(model):
        with torch.no_grad():
            out = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                labels=labels,
                fused_lm_head=True,
            )
        chosen, rejected = out.log_probs.sum(1).chunk(2)
        chosen_tokens, rejected_tokens = inputs["completion_mask"].sum(1).float().chunk(2)
        return PairLogps(chosen, rejected, chosen_tokens, rejected_tokens)

    policy, reference = logps(trainer.model), logps(trainer.ref_model)
    inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = reference.chosen, reference.rejected
    return inputs, policy, reference


def _trl_loss(trainer, inputs, loss_type: str, beta: float, label_smoothing: float = 0.0) -> float:
    trainer.loss_types, trainer.beta, trainer.label_smoothing = [loss_type], beta, label_smoothing
    trainer.precompute_ref_logps = True
    with torch.no_grad():
        return trainer._compute_loss(trainer.model, inputs, return_outputs=False).item()


def test_pairs_tokenize_like_trl(trl_trainer, tokenizer):
    ours = tokenize_pairs(tokenizer, datasets.Dataset.from_list(PAIRS), max_length=512, max_prompt_tokens=512)
    for example, theirs in zip(ours, trl_trainer.train_dataset, strict=True):
        assert example["prompt_ids"] == theirs["prompt_ids"]
        assert example["chosen_ids"] == theirs["chosen_ids"]
        assert example["rejected_ids"] == theirs["rejected_ids"]
        assert example["chosen_ids"][-1] == tokenizer.eos_token_id != tokenizer.pad_token_id


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_equals_trl(trl_trainer, loss_type):
    inputs, policy, reference = _trl_batch_and_logps(trl_trainer, range(len(PAIRS)))
    for beta in BETAS:
        ours = pair_losses(policy, reference, loss_type, beta).mean().item()
        assert ours == pytest.approx(_trl_loss(trl_trainer, inputs, loss_type, beta), rel=1e-6, abs=1e-7), beta


def test_conservative_loss_equals_trl(trl_trainer):
    # TRL 1.16 dropped label smoothing from 'sigmoid'; its 'aot_unpaired' loss sorts the log-ratios across the
    # batch and then applies −(1−ε)·log σ(β·δ) − ε·log σ(−β·δ). With one pair per batch the sort is the identity,
    # so it is exactly conservative DPO.
    for index in (0, 1):
        inputs, policy, reference = _trl_batch_and_logps(trl_trainer, [index])
        for beta, label_smoothing in ((0.05, 0.1), (0.5, 0.3)):
            ours = pair_losses(policy, reference, "sigmoid", beta, label_smoothing).item()
            theirs = _trl_loss(trl_trainer, inputs, "aot_unpaired", beta, label_smoothing)
            assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-7), (index, beta, label_smoothing)


def test_our_logps_match_trl_on_our_own_batches(trl_trainer, tokenizer):
    """Our layout (prompt left-padded, completion right-padded) gives TRL's right-padded log-probs."""
    _, trl_policy, trl_reference = _trl_batch_and_logps(trl_trainer, range(len(PAIRS)))
    examples = tokenize_pairs(tokenizer, datasets.Dataset.from_list(PAIRS), max_length=512, max_prompt_tokens=512)
    batch = collate_pairs(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        policy, reference = pair_logps(trl_trainer.model, batch), pair_logps(trl_trainer.ref_model, batch)
    # float32 sums over ~10 tokens of a random model agree to ~1e-5 relative; a masking slip would shift by ~10.
    for ours, theirs in ((policy, trl_policy), (reference, trl_reference)):
        torch.testing.assert_close(ours.chosen, theirs.chosen, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(ours.rejected, theirs.rejected, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(ours.chosen_tokens, theirs.chosen_tokens)


def test_losses_on_hand_worked_numbers():
    h = torch.tensor([0.0, 2.0])
    torch.testing.assert_close(dpo_loss(h, beta=0.5), torch.tensor([math.log(2), math.log(1 + math.exp(-1))]))
    # ε = 0 is plain DPO; ε = 0.5 is indifferent to the label, so symmetric in h.
    torch.testing.assert_close(conservative_dpo_loss(h, 0.5, 0.0), dpo_loss(h, 0.5))
    torch.testing.assert_close(conservative_dpo_loss(h, 0.5, 0.5), conservative_dpo_loss(-h, 0.5, 0.5))
    # IPO's minimum sits at h̄ = 1/(2β).
    assert ipo_loss(torch.tensor(5.0), beta=0.1).item() == 0.0
    assert ipo_loss(torch.tensor(4.0), beta=0.1).item() == pytest.approx(1.0)


def test_unknown_loss_type_raises():
    logps = PairLogps(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="unknown DPO loss_type 'hinge'"):
        pair_losses(logps, logps, "hinge", beta=0.1)
