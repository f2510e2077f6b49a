"""Prompts: import a file of prompts, then browse and search them with how often each was ranked."""

import tempfile
from pathlib import Path

import streamlit as st

from app import auth, resources
from app.text import as_text, show_prompt
from data import importers, prompts
from data.importers import PromptFileError
from data.prompt_columns import columns_text, stored_columns

auth.require_admin()
store = resources.store()


def import_upload(uploaded) -> None:
    """Save the upload under its own name (the suffix picks the reader) and import it in one transaction."""
    name = Path(uploaded.name).name
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(uploaded.getvalue())
        try:
            report = importers.import_prompts(store, path, source=name)
        except PromptFileError as error:
            st.error(f"Nothing imported. {as_text(str(error).replace(str(path), name))}")
            return
    st.success(f"{as_text(name)}: added {report.added} prompts, skipped {report.skipped_duplicates} duplicates.")


st.title("Prompts")
with st.form("prompts_import", clear_on_submit=True):
    uploaded = st.file_uploader(
        "Import prompts",
        type=["jsonl", "json", "csv", "parquet"],
        key="prompts_file",
        help="JSONL (one object per line with a 'prompt', 'text', 'question' or 'instruction' field, or a string), "
        "CSV with a header, or Parquet. Conversations: a 'messages' list (OpenAI/TRL), a list-valued 'prompt', an "
        "HH transcript (Human: … Assistant: …), or chosen/rejected conversations (UltraFeedback, HH). Other columns "
        "(answer, solution, difficulty, ...) are kept with each prompt for reward functions. Duplicates are skipped; "
        "a malformed file imports nothing.",
    )
    if st.form_submit_button("Import", icon=":material/upload:") and uploaded is not None:
        import_upload(uploaded)

search = st.text_input("Search", key="prompts_search", placeholder="words in the prompt")
table = prompts.browse_prompts(store, search)
table.insert(2, "columns", [columns_text(row) for row in stored_columns(store, table["id"].tolist())])
st.caption(f"{prompts.prompt_count(store)} prompts in all; showing {len(table)}.")
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "id": st.column_config.NumberColumn("id", width="small"),
        "text": st.column_config.TextColumn("prompt", width="large"),
        "columns": st.column_config.TextColumn(
            "columns", help="the file's other columns (answer, ...), which reward functions read by name"
        ),  # fmt: skip
        "responses": st.column_config.NumberColumn("responses", help="responses sampled for this prompt"),
        "rankings": st.column_config.NumberColumn("rankings", help="times this prompt was ranked"),
        "conversation": st.column_config.CheckboxColumn("conversation", help="several turns (or a system message)"),
        "created_at": st.column_config.DatetimeColumn("added", format="YYYY-MM-DD HH:mm"),
    },
)
if len(table):
    shown_id = st.selectbox("Show a prompt", table["id"].tolist(), key="prompts_show", index=None, placeholder="id")
    if shown_id is not None:
        show_prompt(prompts.get_prompt(store, int(shown_id)))
