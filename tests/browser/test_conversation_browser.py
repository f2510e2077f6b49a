"""In a real browser: an annotator ranks a conversation, writes the next user message, ranks the next turn; both
rankings are stored with their history and export in TRL's conversational format, which TRL's DPO tokenizes."""

import datasets
import pytest

from data.continuation import parent_of
from data.export import export
from data.prompts import add_prompts, get_prompt
from data.settings import save_settings
from data.store import Store
from tests.browser.serving import launch_chromium, rerun_and_settle, running_app, settled, wait_until_stored

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Apple."},
    {"role": "user", "content": "Another one?"},
]


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    db = tmp_path / "studio.duckdb"
    store = Store(db)
    add_prompts(store, [CONVERSATION], source="test")
    save_settings(store, {"k": 2, "max_new_tokens": 8, "ready_per_annotator": 1})
    store.close()
    with running_app(db, {"RLHF_STUDIO_MODEL": str(tiny_model_dir)}) as (url, process):
        yield url, db, process


def rank(page, ranks: dict[str, str]) -> None:
    for label, value in ranks.items():
        page.get_by_role("radiogroup", name=f"Rank of {label}").get_by_text(value, exact=True).click()


@pytest.mark.browser
def test_rank_continue_and_rank_the_next_turn(server, tmp_path, tokenizer):
    from playwright.sync_api import expect, sync_playwright

    url, db, process = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            expect(page.get_by_role("radiogroup", name="Rank of B")).to_be_visible(timeout=120_000)
            settled(page)
            expect(page.get_by_test_id("stChatMessage").filter(has_text="Another one?")).to_be_visible()
            expect(page.get_by_text("Only the last turn is judged", exact=False)).to_be_visible()
            rank(page, {"A": "1", "B": "2"})
            page.get_by_role("textbox", name="Continue the conversation (optional)").fill("Why that one?")
            rerun_and_settle(page, lambda: page.get_by_role("button", name="Submit ranking").click())
            wait_until_stored(page, 1)

            # The follow-up is sampled ahead like any prompt; the page polls until it is drawn.
            next_turn = page.get_by_test_id("stChatMessage").filter(has_text="Why that one?")
            expect(next_turn).to_be_visible(timeout=120_000)
            expect(page.get_by_role("radiogroup", name="Rank of B")).to_be_visible(timeout=60_000)
            settled(page)
            rank(page, {"A": "2", "B": "1"})
            rerun_and_settle(page, lambda: page.get_by_role("button", name="Submit ranking").click())
            wait_until_stored(page, 2)
        finally:
            browser.close()

    process.terminate()
    process.wait(timeout=30)
    store = Store(db)
    try:
        rankings = store.query("SELECT id, prompt_id, ranking FROM rankings WHERE status = 'ranked' ORDER BY id")
        texts = dict(store.query("SELECT id, text FROM responses"))
        (first_id, first_prompt, first_ranking), (_, second_prompt, _) = rankings
        best = first_ranking[0][0]
        assert get_prompt(store, first_prompt) == CONVERSATION
        continued = CONVERSATION + [
            {"role": "assistant", "content": texts[best]}, {"role": "user", "content": "Why that one?"}
        ]  # fmt: skip
        assert get_prompt(store, second_prompt) == continued
        assert parent_of(store, second_prompt) == (first_prompt, best, first_id)
        export(store, tmp_path / "pairs.parquet", "pairs")
    finally:
        store.close()

    pairs = datasets.load_dataset("parquet", data_files=str(tmp_path / "pairs.parquet"))["train"]
    assert [row["prompt"] for row in pairs] == [CONVERSATION, continued]  # K = 2: one pair per ranking
    assert all(len(row["chosen"]) == 1 and row["chosen"][0]["role"] == "assistant" for row in pairs)
    assert_trl_tokenizes(pairs.select_columns(["prompt", "chosen", "rejected"]), tokenizer, tmp_path)


def assert_trl_tokenizes(pairs, tokenizer, tmp_path):
    """TRL's DPO trainer takes the export as is: its prompt ids are the chat template over the whole history."""
    from accelerate.state import AcceleratorState
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from tests.conftest import tiny_llama_config

    model, reference = (AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer)) for _ in range(2))
    args = DPOConfig(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, max_length=None)
    try:
        trainer = DPOTrainer(
            model=model, ref_model=reference, args=args, train_dataset=pairs, processing_class=tokenizer
        )
        for row, tokenized in zip(pairs, trainer.train_dataset, strict=True):
            expected = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=False)
            assert tokenized["prompt_ids"] == expected
            assert tokenized["chosen_ids"] and tokenized["rejected_ids"]
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
