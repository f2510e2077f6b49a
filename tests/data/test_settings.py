"""Settings: defaults until changed, stored values survive a reopen, unknown keys are refused."""

import pytest

from data.settings import DEFAULTS, load_settings, save_settings
from data.store import Store


def test_defaults_then_saved_values_survive_reopening(tmp_path):
    path = tmp_path / "studio.duckdb"
    store = Store(path)
    assert load_settings(store) == DEFAULTS
    save_settings(store, {"k": 6, "seed": 11, "generator_model": "runs/ppo-1"})
    store.close()

    reopened = Store(path)
    assert load_settings(reopened) == DEFAULTS | {"k": 6, "seed": 11, "generator_model": "runs/ppo-1"}
    reopened.close()


def test_unknown_setting_is_refused_and_nothing_is_saved(store):
    with pytest.raises(ValueError, match=r"unknown settings: \['colour'\]"):
        save_settings(store, {"k": 3, "colour": "blue"})
    assert load_settings(store) == DEFAULTS
