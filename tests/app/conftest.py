"""App tests: AppTest over app/main.py against a DuckDB file in tmp_path, with background sampling paused."""

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers import AutoModelForSequenceClassification

from app import resources
from core.generation import Sample
from data import annotation, importers
from data.prompts import add_prompts
from data.settings import save_settings
from tests.conftest import tiny_llama_config

APP_MAIN = Path(__file__).parents[2] / "app" / "main.py"


class Studio:
    """The app under test and its database, with helpers to make items and press buttons."""

    def __init__(self, store):
        self.store = store

    def open(self, page: str | None = None) -> AppTest:
        """Run the app once (the Annotate page opens by default), then switch to `page` if given."""
        at = AppTest.from_file(APP_MAIN, default_timeout=30).run()
        if page:
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    def add_item(self, prompt: str, responses: list[str]) -> tuple[int, list[int]]:
        """Store a prompt and one hand-made batch of its responses; return (batch id, response ids in order)."""
        add_prompts(self.store, [prompt], source="test")
        prompt_id = self.store.query("SELECT id FROM prompts WHERE text = ?", [prompt])[0][0]
        samples = [Sample(text=text, finish_reason="eos", num_tokens=len(text.split())) for text in responses]
        batch_id = annotation.add_batch(self.store, prompt_id, "hand-made", {"k": len(responses)}, samples)
        rows = self.store.query("SELECT id FROM responses WHERE batch_id = ? ORDER BY position", [batch_id])
        return batch_id, [row[0] for row in rows]

    def rankings(self) -> list[tuple]:
        return self.store.query(
            "SELECT k.batch_id, k.status, k.ranking, k.comment, k.seconds_spent, a.name "
            "FROM rankings k JOIN annotators a ON a.id = k.annotator_id ORDER BY k.id"
        )

    @staticmethod
    def click(at: AppTest, label: str) -> AppTest:
        next(button for button in at.button if button.label == label).click().run()
        assert not at.exception, [e.value for e in at.exception]
        return at


@pytest.fixture
def studio(store, tiny_model_dir, monkeypatch):
    """The app's database; ready_per_annotator = 0 keeps the sampler idle so each test makes its own items,
    and no shipped prompts are seeded unless a test points `seed_prompts_path` at a file.

    AppTest runs the app in this process, so the sampler thread the app starts lives here too: stop it (and
    close the app's store) before tmp_path goes away.
    """
    monkeypatch.setenv("RLHF_STUDIO_DB", str(store.path))
    monkeypatch.setenv("RLHF_STUDIO_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("RLHF_STUDIO_HOST", "127.0.0.1")  # as `rlhf-studio serve` sets it: the no-login local mode
    monkeypatch.setattr(importers, "seed_prompts_path", lambda: store.path.with_name("no-seed.jsonl"))
    save_settings(store, {"ready_per_annotator": 0})
    yield Studio(store)
    resources.shutdown()


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, tokenizer):
    """A random one-output sequence-classification model folder: scores anything, fast."""
    folder = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(0)
    config = tiny_llama_config(tokenizer)
    config.num_labels = 1
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
