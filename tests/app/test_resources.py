"""Shared resources: an empty database is seeded on first start, and shutdown stops the sampler thread."""

from app import resources
from data import importers
from data.prompts import prompt_count
from data.settings import load_settings


def test_first_start_seeds_an_empty_database_and_saves_the_model(studio, tmp_path, monkeypatch, tiny_model_dir):
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"prompt": "Seeded one"}\n{"prompt": "Seeded two"}\n')
    monkeypatch.setattr(importers, "seed_prompts_path", lambda: seed)
    studio.open()
    assert prompt_count(studio.store) == 2
    assert load_settings(studio.store)["generator_model"] == str(tiny_model_dir)

    resources.shutdown()
    seed.write_text('{"prompt": "Not imported: the database has prompts"}\n')
    studio.open()
    assert prompt_count(studio.store) == 2


def test_the_sampler_starts_once_and_shutdown_stops_it(studio):
    studio.open()
    sampler = resources.sampler()
    studio.open("data")
    assert resources.sampler() is sampler and sampler.is_alive()
    resources.shutdown()
    assert not sampler.is_alive()
