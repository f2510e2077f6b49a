"""What the waiting box and the Settings page say: the sampler's phase, its measured speed, an estimate."""

import pytest

from data.prompts import add_prompts
from data.settings import save_settings
from orchestration.sampler import Generator, SamplerStatus, fill, sampling_params


def test_status_describes_each_phase_and_estimates_from_measured_speed(monkeypatch):
    status = SamplerStatus()
    assert status.describe() == "Waiting for the next prompt to sample."
    status.begin("loading", "default")
    assert status.describe() == "Loading the generator model (default); the first responses follow."
    status.begin("sampling", "default", prompts=2, rows=8)
    assert status.describe() == "Sampling 8 responses for 2 prompt(s) (the first call: no estimate yet)."
    status.record_call(tokens=800, responses=8, seconds=20.0)  # 40 tokens/s, 100 tokens per response
    assert (status.tokens_per_s, status.tokens_per_response, status.phase) == (40.0, 100.0, "idle")
    status.begin("sampling", "default", prompts=1, rows=4)
    monkeypatch.setattr("orchestration.sampler.time.monotonic", lambda: status.started + 4.0)
    assert status.seconds_left() == pytest.approx(4 * 100 / 40 - 4.0)
    assert status.describe() == "Sampling 4 responses for 1 prompt(s), about 6 s left."
    # 40 tokens/s over 4 x 100 tokens: an item every 10 s, three annotators at 30 s per item
    assert status.annotators_kept_busy(k=4) == pytest.approx(3.0)
    status.record_call(tokens=200, responses=4, seconds=10.0)  # 20 tokens/s, 50 per response: averaged in
    assert status.tokens_per_s == pytest.approx(0.7 * 40 + 0.3 * 20)


def test_sampling_measures_the_speed_it_reports(store, tiny_model_dir):
    add_prompts(store, ["one", "two"], "test")
    save_settings(store, {"generator_model": str(tiny_model_dir), "k": 2, "max_new_tokens": 4})
    generator = Generator("cpu")
    assert fill(store, generator, 2) == 2
    assert generator.status.phase == "idle" and generator.status.tokens_per_s > 0
    assert 1 <= generator.status.tokens_per_response <= 4


def test_an_open_max_new_tokens_follows_the_device(store):
    from core.generation import CPU_MAX_NEW_TOKENS, default_max_new_tokens
    from data.settings import load_settings

    assert load_settings(store)["max_new_tokens"] is None
    assert sampling_params(load_settings(store)).max_new_tokens == default_max_new_tokens() == CPU_MAX_NEW_TOKENS
    save_settings(store, {"max_new_tokens": 40})
    assert sampling_params(load_settings(store)).max_new_tokens == 40
