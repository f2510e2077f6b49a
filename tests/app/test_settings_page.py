"""Settings page: valid settings are saved for the sampler; invalid ones show the reason and change nothing."""

import re

from data.settings import load_settings


def fill(at, **values):
    labels = {
        "k": "Responses per prompt (K)",
        "temperature": "Temperature",
        "top_p": "Top-p",
        "max_new_tokens": "Max new tokens",
        "seed": "Seed",
        "ready": "Ready per annotator",
    }
    for name, value in values.items():
        if name == "model":
            at.text_input[0].set_value(value)
        else:
            next(n for n in at.number_input if n.label == labels[name]).set_value(value)
    next(button for button in at.button if button.label == "Save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_valid_settings_are_saved(studio, tiny_model_dir):
    at = studio.open("settings")
    assert at.text_input[0].value == str(tiny_model_dir)  # RLHF_STUDIO_MODEL was saved at start
    fill(at, k=3, temperature=0.7, top_p=0.9, max_new_tokens=32, seed=7, ready=2)
    assert at.success and not at.error
    saved = load_settings(studio.store)
    assert {key: saved[key] for key in ("k", "temperature", "top_p", "max_new_tokens", "seed")} == {
        "k": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 32,
        "seed": 7,
    }
    assert saved["ready_per_annotator"] == 2


def test_k_of_nine_is_refused_with_the_reason(studio):
    at = studio.open("settings")
    before = load_settings(studio.store)
    fill(at, k=9, temperature=0.5)
    assert [e.value for e in at.error] == ["Not saved: k (responses per prompt) must be between 2 and 8, got 9"]
    assert load_settings(studio.store) == before


def test_a_missing_model_folder_is_refused(studio, tmp_path):
    at = studio.open("settings")
    before = load_settings(studio.store)
    fill(at, model=str(tmp_path / "no-such-model"))
    assert "does not exist" in at.error[0].value
    at = fill(at, model="", top_p=1.5)
    assert "top_p must be in (0, 1]" in re.sub(r"\\(.)", r"\1", at.error[0].value)  # shown with markup escaped
    assert load_settings(studio.store) == before


def test_a_hub_id_is_accepted_without_network(studio):
    fill(studio.open("settings"), model="HuggingFaceTB/SmolLM2-360M-Instruct")
    assert load_settings(studio.store)["generator_model"] == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_an_encoder_is_refused_as_the_generator(studio):
    at = studio.open("settings")
    before = load_settings(studio.store)
    fill(at, model="all-MiniLM-L6-v2")
    assert "is a BertModel, not a causal language model" in at.error[0].value
    assert load_settings(studio.store) == before
