"""Data: what has been collected so far, who ranked how much, how well prompts are covered, and exports."""

import math

import altair as alt
import pandas as pd
import streamlit as st

from app import auth, resources
from app.text import as_text
from data import annotation
from data.agreement import agreement
from data.backup import backup, backup_path
from data.demonstrations import demonstration_counts
from data.export import export_bytes
from data.store import StoreError

auth.require_admin()
store = resources.store()
EXPORT_LABELS = {"rankings": "rankings", "pairs": "pairs", "sft": "SFT set", "prompts": "prompts"}
MIME = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/jsonl"}

st.title("Data")

counts = {table.capitalize(): count for table, count in annotation.counts(store).items()}
demonstrations = demonstration_counts(store)
counts["Demonstrations"] = demonstrations["demonstrations"]
written_help = (
    f"answers annotators wrote: {demonstrations['edited']} edited from a sampled response, "
    f"{demonstrations['written']} written from scratch"
)
for column, (label, count) in zip(st.columns(len(counts)), counts.items(), strict=True):
    column.metric(label, count, help=written_help if label == "Demonstrations" else None)

st.subheader("Rankings per annotator")
per_annotator = annotation.rankings_per_annotator(store)
if per_annotator.empty:
    st.info("No rankings yet: rank some responses on the Annotate page.")
else:
    st.dataframe(per_annotator, hide_index=True)

st.subheader("Coverage")
coverage = annotation.coverage(store)
chart = (
    alt.Chart(coverage)
    .mark_bar()
    .encode(
        x=alt.X("rankings:O", title="rankings of a prompt", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("prompts:Q", title="prompts"),
        tooltip=["rankings", "prompts"],
    )
)
st.altair_chart(chart)

st.subheader("Agreement")
pairs, overall = agreement(store)
if not pairs:
    st.info(
        "No item was ranked by two people yet: set an overlap share on the Settings page so some items are "
        "shown to a second annotator."
    )
else:
    st.metric("Overall Kendall's tau", f"{overall:.2f}", help="1 = same order, 0 = unrelated, -1 = reversed")
    st.dataframe(
        pd.DataFrame(pairs), hide_index=True,
        column_config={"kendall_tau": st.column_config.NumberColumn("Kendall's tau", format="%.2f")},
    )  # fmt: skip
    if math.isnan(overall):
        st.caption("Every shared item was all-tied for someone: no order to compare.")

st.subheader("Export")
st.caption(
    "Rankings: one row per ranking, responses as tie groups, best first. "
    "Pairs: every better/worse pair of a ranking as prompt, chosen, rejected (ties make no pair). "
    "SFT set: each ranking's best response, annotators' own answers included, in TRL's `messages` format. "
    "Prompts: every prompt with its columns (answer, ...), ready to import again."
)
for column, (kind, label) in zip(st.columns(len(EXPORT_LABELS)), EXPORT_LABELS.items(), strict=True):
    for fmt in ("parquet", "jsonl"):
        column.download_button(
            f"{label} as {fmt}",
            data=lambda kind=kind, fmt=fmt: export_bytes(store, kind, fmt),  # built only when clicked
            file_name=f"{kind}.{fmt}",
            mime=MIME[fmt],
            key=f"data_export_{kind}_{fmt}",
            icon=":material/download:",
        )

st.subheader("Backup")
st.caption(
    "A consistent snapshot of the whole database, taken while the app runs (the command line cannot open the "
    "file while the app holds it). Restore it with `rlhf-studio --db FILE restore BACKUP` after stopping the app."
)
if st.button("Back up now", icon=":material/backup:", key="data_backup"):
    try:
        st.success(f"Backup written to `{backup(store, backup_path(store))}`")
    except StoreError as error:
        st.error(as_text(error))
