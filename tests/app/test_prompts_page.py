"""Prompts page: an upload imports with counts, a bad file names its problem and imports nothing, search filters."""

from data.prompts import add_prompts, prompt_count


def upload(at, name: str, content: bytes):
    at.file_uploader(key="prompts_file").set_value((name, content, "application/octet-stream"))
    next(button for button in at.button if button.label == "Import").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_upload_imports_and_reports_added_and_skipped(studio):
    add_prompts(studio.store, ["Already here"], source="test")
    at = studio.open("prompts")
    lines = b'{"prompt": "Already here"}\n{"prompt": "New one"}\n"Another new one"\n'
    upload(at, "mine.jsonl", lines)
    assert [s.value for s in at.success] == ["mine.jsonl: added 2 prompts, skipped 1 duplicates."]
    assert prompt_count(studio.store) == 3
    sources = studio.store.query("SELECT DISTINCT source FROM prompts WHERE text LIKE '%new one'")
    assert sources == [("mine.jsonl",)]


def test_a_malformed_file_names_the_problem_and_imports_nothing(studio):
    at = studio.open("prompts")
    upload(at, "broken.jsonl", b'{"prompt": "fine"}\n{"prompt": \n')
    [error] = at.error
    assert "broken.jsonl, line 2: invalid JSON" in error.value
    assert "/tmp" not in error.value  # the temporary copy's path is not the user's business
    assert prompt_count(studio.store) == 0


def test_csv_upload_and_search(studio):
    at = studio.open("prompts")
    upload(at, "prompts.csv", b"prompt,topic\nWrite a haiku about rain,poetry\nExplain DNS,networks\n")
    assert prompt_count(studio.store) == 2
    at.text_input(key="prompts_search").set_value("HAIKU").run()
    table = at.dataframe[0].value
    assert table["text"].tolist() == ["Write a haiku about rain"]
    assert table["rankings"].tolist() == [0]
