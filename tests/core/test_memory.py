"""The memory estimate: built from the models each trainer declares, per device for a layout, with the knob that
makes a run fit named when it does not."""

import pytest
import torch

from core import memory, models
from core.layouts import read_layout
from core.memory import HeldModel, ModelShape, TrainingPass, estimate
from core.models import DeviceChoice
from orchestration import preflight
from policy import dpo, grpo, ppo, sft
from policy.config import DPOConfig, GRPOConfig, PPOConfig, SFTConfig
from rm import train as rm_train
from rm.config import RewardConfig

SHAPE = ModelShape(parameters=1000, hidden=10, layers=2, heads=2, intermediate=30, vocab=50)
ONE = read_layout(None)
CPU = DeviceChoice(torch.device("cpu"), torch.float32)
CPU_BF16 = DeviceChoice(torch.device("cpu"), torch.bfloat16)
GPU = DeviceChoice(torch.device("cuda"), torch.bfloat16)


def test_activations_by_hand_with_and_without_checkpointing():
    step = TrainingPass(SHAPE, sequences=3, length=4, logits_length=2, value_bytes=4, checkpointing=False,
                        fused_attention=False)  # fmt: skip
    linear = 12 * (memory.VALUES_PER_HIDDEN * 10 + memory.VALUES_PER_MLP_UNIT * 30)  # tokens x values kept
    squares = memory.ATTENTION_SQUARES * 3 * 2 * 4**2  # sequences x heads x length²
    per_layer = (linear + squares) * 4
    assert memory.layer_activations(step) == per_layer
    assert memory.activation_bytes(step) == 2 * per_layer
    assert memory.logit_bytes(step) == memory.LOGIT_COPIES * 3 * 2 * 50 * 4  # float32 copies of (3, 2, 50)
    checkpointed = TrainingPass(**{**step.__dict__, "checkpointing": True})
    inputs = 12 * 10 * 2 * 4  # each layer's input, kept
    assert memory.activation_bytes(checkpointed) == inputs + memory.RECOMPUTE_LAYERS * per_layer
    fused = TrainingPass(**{**step.__dict__, "fused_attention": True})
    assert memory.layer_activations(fused) == linear * 4  # no length² term


def test_a_layout_splits_what_it_shards_and_keeps_the_rest_whole():
    models = [HeldModel("policy", SHAPE, 4, 1000), HeldModel("reference", SHAPE, 2, 0),
              HeldModel("reward model", SHAPE, 4, 0, sharded=False)]  # fmt: skip
    step = TrainingPass(SHAPE, 1, 4, 0, 4, False, True)
    one = estimate(models, [step], ONE, GPU)
    zero2 = estimate(models, [step], read_layout("zero2-8gpu"), GPU)
    zero3 = estimate(models, [step], read_layout("zero3-8gpu"), GPU)
    assert one.weights == {"policy": 4000, "reference": 2000, "reward model": 4000}
    assert one.training_state == 12 * 1000 and zero2.training_state == zero3.training_state == 12 * 1000 // 8
    assert zero2.weights == one.weights
    assert zero3.weights == {"policy": 500, "reference": 250, "reward model": 4000}
    assert zero3.activations == one.activations and one.workspace == 0  # a GPU has no CPU allocator slack
    assert estimate(models, [step], ONE, CPU).workspace > 0


def test_packed_rankings_keep_their_attention_probabilities_per_layer():
    """A reward model's packed rankings: on a CPU every head's probabilities over the pairs its attention computes,
    in the compute dtype; on a GPU sdpa's mask as a bias, one for all heads."""
    config = RewardConfig(gradient_checkpointing=False)
    for device, per_pair in ((CPU, SHAPE.heads * 4), (CPU_BF16, SHAPE.heads * 2), (GPU, 2)):
        _, [plain] = rm_train.memory_plan(config, SHAPE, 2, 32, device)
        _, [packed] = rm_train.memory_plan(config, SHAPE, 2, 32, device, scores=500)
        assert memory.activation_bytes(packed) - memory.activation_bytes(plain) == SHAPE.layers * 2 * 500 * per_pair
    checkpointed = RewardConfig(gradient_checkpointing=True)  # only the layer recomputed keeps them
    _, [plain] = rm_train.memory_plan(checkpointed, SHAPE, 2, 32, CPU)
    _, [packed] = rm_train.memory_plan(checkpointed, SHAPE, 2, 32, CPU, scores=500)
    assert memory.activation_bytes(packed) - memory.activation_bytes(plain) == 2 * 500 * SHAPE.heads * 4


def test_each_trainer_declares_the_models_it_loads():
    rm_models, [rm_pass] = rm_train.memory_plan(RewardConfig(lora_rank=4), SHAPE, 6, 32, CPU)
    assert [(m.role, m.weight_bytes, m.trainable) for m in rm_models] == [
        ("reward model", 4, SHAPE.lora_weights(4) + SHAPE.hidden)  # adapters and the score head
    ]
    assert rm_pass.logits_length == 0 and rm_pass.checkpointing  # a score head; checkpointing by default
    full, _ = rm_train.memory_plan(RewardConfig(lora_rank=0), SHAPE, 6, 32, CPU)
    assert full[0].trainable == SHAPE.parameters

    models, [step] = dpo.memory_plan(DPOConfig(lora_rank=0), SHAPE, 32, 10, GPU)
    assert [(m.role, m.weight_bytes, m.trainable) for m in models] == [("policy", 4, 1000), ("reference", 2, 0)]
    assert (step.sequences, step.logits_length, step.value_bytes) == (2 * 8, 11, 3.5)  # chosen + rejected rows
    _, [plain] = dpo.memory_plan(DPOConfig(gradient_checkpointing=False), SHAPE, 32, 10, CPU)
    assert plain.shared_tokens == 8 * 22  # on a CPU each pair's prompt runs once
    models, [step] = sft.memory_plan(SFTConfig(), SHAPE, 32, 10, CPU)
    assert [m.role for m in models] == ["policy"] and step.sequences == 8

    rewards = [SHAPE, SHAPE]
    models, [step] = grpo.memory_plan(GRPOConfig(num_generations=4, batch_prompts=2), SHAPE, rewards, 96, CPU)
    assert [m.role for m in models] == ["policy", "reward model", "reward model"]
    assert (step.sequences, step.logits_length, step.checkpointing) == (8, 65, False)
    models, passes = ppo.memory_plan(PPOConfig(value_model="separate", num_minibatches=2), SHAPE, [], 96, CPU)
    assert [m.role for m in models] == ["policy", "value model"]
    assert [(p.sequences, p.logits_length) for p in passes] == [(4, 65), (4, 0)]  # policy, then value trunk


def test_bf16_halves_a_lora_policy_s_frozen_base_and_its_activations_not_a_trained_weight():
    fp32_models, [fp32_step] = sft.memory_plan(SFTConfig(), SHAPE, 32, 10, CPU)
    bf16_models, [bf16_step] = sft.memory_plan(SFTConfig(), SHAPE, 32, 10, CPU_BF16)
    assert (fp32_models[0].weight_bytes, bf16_models[0].weight_bytes) == (4, 2)  # peft keeps adapters in float32
    assert (fp32_step.value_bytes, bf16_step.value_bytes) == (4, 2.5)  # norms keep float32 copies
    full, _ = sft.memory_plan(SFTConfig(lora_rank=0), SHAPE, 32, 10, CPU_BF16)
    assert full[0].weight_bytes == 4  # fully trained weights stay float32 under autocast
    assert (bf16_models[0].save_copies, fp32_models[0].save_copies) == (2.5, 2.0)
    rm_models, [rm_step] = rm_train.memory_plan(RewardConfig(lora_rank=4), SHAPE, 6, 32, CPU_BF16)
    assert rm_models[0].weight_bytes == 2 and rm_models[0].save_copies == memory.SERIALIZATION_COPIES + 0.75
    assert (rm_step.value_bytes, rm_step.input_bytes) == (2.5, 2)  # a LoRA reward model's base as a policy's
    full_rm, [full_step] = rm_train.memory_plan(RewardConfig(lora_rank=0), SHAPE, 6, 32, CPU_BF16)
    assert full_rm[0].weight_bytes == 4  # every weight trains: float32 weights, bf16 compute
    assert (full_step.value_bytes, full_step.input_bytes) == (3.5, 4)  # and a float32 residual stream
    assert (bf16_step.input_bytes, fp32_step.input_bytes) == (2, 4)
    models, _ = grpo.memory_plan(GRPOConfig(), SHAPE, [SHAPE], 96, CPU_BF16)
    assert [m.weight_bytes for m in models] == [2, 4]  # the scorer loads float32 on a CPU


def test_a_run_over_the_free_memory_is_blocked_with_the_knobs_that_would_fit(default_model_dir, monkeypatch):
    config = RewardConfig(backbone=str(default_model_dir), batch_size=8, gradient_checkpointing=False)
    shape = preflight.RunShape(sequences=16, length=512)
    plain = preflight.estimate_run(config, shape)
    checkpointed = preflight.estimate_run(RewardConfig(backbone=str(default_model_dir), batch_size=8), shape)
    assert checkpointed.activations < plain.activations / 5
    monkeypatch.setattr(preflight, "available_memory", lambda _device: (plain.total + checkpointed.total) // 2)
    [problem], _, found = preflight.check_memory(config, shape)
    assert found.total == plain.total
    assert problem.startswith("not enough memory on cpu (one process): a step needs about")
    assert "it would fit if you turn on gradient checkpointing" in problem
    monkeypatch.setattr(preflight, "available_memory", lambda _device: int(plain.total / 0.9))
    assert preflight.check_memory(config, shape)[1][0].startswith("memory is tight on cpu")
    monkeypatch.setattr(preflight, "available_memory", lambda _device: 10 * plain.total)
    assert preflight.check_memory(config, shape)[:2] == ([], [])


def test_an_fp32_run_that_would_fit_in_bf16_is_told_so_where_the_cpu_computes_it(default_model_dir, monkeypatch):
    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: True)
    config = SFTConfig(model=str(default_model_dir), precision="fp32", device="cpu")
    shape = preflight.RunShape(8, 256, answer=128)
    fp32 = preflight.estimate_run(config, shape).total
    bf16 = preflight.estimate_run(SFTConfig(model=str(default_model_dir), precision="bf16", device="cpu"), shape).total
    assert bf16 < fp32
    assert "compute in bf16 (precision 'bf16')" in preflight.knobs_that_fit(config, shape, (fp32 + bf16) // 2)
    monkeypatch.setattr(models, "cpu_computes_bf16", lambda: False)  # emulated bf16 is never offered
    assert "compute in bf16 (precision 'bf16')" not in preflight.knobs_that_fit(config, shape, (fp32 + bf16) // 2)


@pytest.mark.parametrize("layout", ["zero2-8gpu", "zero3-8gpu"])
def test_the_knob_list_names_a_layout_on_a_gpu(layout, default_model_dir, monkeypatch):
    config = GRPOConfig(model=str(default_model_dir), lora_rank=0, gradient_checkpointing=True, batch_prompts=1,
                        num_generations=2)  # fmt: skip
    shape = preflight.RunShape(0, 64)
    monkeypatch.setattr(preflight, "training_choice", lambda *_: GPU)
    whole = preflight.estimate_run(config, shape).total
    sharded = preflight.estimate_run(config, shape, read_layout(layout)).total
    assert sharded < whole
    knobs = preflight.knobs_that_fit(config, shape, sharded)
    assert any("--accelerate-config" in knob for knob in knobs)


def test_knobs_a_config_refuses_are_not_offered(default_model_dir):
    config = PPOConfig(model=str(default_model_dir), batch_prompts=2, num_minibatches=2)  # a batch of 1 is refused
    assert preflight.knobs_that_fit(config, preflight.RunShape(0, 96), available=1) == []  # and nothing fits in 1 byte
