"""Jobs: the queue of training runs, and one job followed live (progress, metric plots, log tail, cancel).

The job table lives in DuckDB and the chosen job in the URL (`?job=ID`), so a browser refresh or an app restart
shows the same job; the runner re-attaches to processes still going and marks dead ones failed.
"""

import altair as alt
import pandas as pd
import streamlit as st

from app import auth, resources
from core.runs import read_metrics
from data import jobs
from orchestration.follow import headline_metrics, metric_rows, plotted_metrics, progress, run_config
from orchestration.jobs import command_line, log_tail
from rm.accuracy import held_out_accuracy

auth.require_admin()
store = resources.store()
runner = resources.job_runner()
ACTIVE = ("queued", "running")
STATUS_ICONS = {"queued": "⏳", "running": "▶️", "done": "✅", "failed": "❌", "cancelled": "⏹️"}


def job_table(all_jobs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": job["id"],
                "status": f"{STATUS_ICONS[job['status']]} {job['status']}",
                "kind": job["kind"],
                "run": job["run_dir"].rsplit("/", 1)[-1],
                "created": job["created_at"],
                "started": job["started_at"],
                "ended": job["ended_at"],
            }
            for job in all_jobs
        ]
    )


def metrics_chart(rows: list[dict]) -> alt.FacetChart:
    """One line chart per metric (each with its own y scale), over optimizer steps."""
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title=None),
            tooltip=["metric", "step", "value"],
        )
        .properties(width=300, height=180)
        .facet(facet=alt.Facet("metric:N", title=None), columns=2)
        .resolve_scale(y="independent")
    )


def reward_model_accuracy(job: dict, records: list[dict]) -> None:
    """Show the held-out accuracy with its interval and count: the kept epoch's when done, else the latest epoch's."""
    epochs = [record for record in records if record.get("event") == "epoch"]
    if job["status"] == "done":
        metrics, which = headline_metrics(job["kind"], job["run_dir"]), "kept epoch"
    elif epochs:
        metrics, which = epochs[-1], "latest epoch"
    else:
        return
    accuracy = held_out_accuracy(metrics)
    if accuracy is None:
        return
    on = "training rankings (no held-out set)" if metrics.get("val/on_training_data") else "held-out rankings"
    st.markdown(f"**Accuracy on {on}** ({which}, {metrics.get('epoch')}): {accuracy}")
    if warning := accuracy.warning():
        st.warning(warning, icon=":material/warning:")


def job_details(job_id: int) -> None:
    """The live part of the page: redrawn every 2 s while the job is queued or running."""
    auth.recheck(store)
    job = jobs.get_job(store, job_id)
    st.subheader(f"Job {job['id']}: {job['kind']} — {job['status']}")
    records = read_metrics(job["run_dir"])
    fraction, caption = progress(job["kind"], job["run_dir"], records)
    st.progress(1.0 if job["status"] == "done" else fraction, text=caption)
    if job["error"]:
        st.error(job["error"])
    for record in records:
        if "data/cut_to_max_length" in record:  # how many inputs the length limit cut, said once
            st.caption(f"{record['data/cut_to_max_length']:,} of {record['data/examples']:,} inputs cut to "
                       f"{record['data/max_length']:,} tokens (a long answer loses its end, a long conversation "
                       "its oldest turns)")  # fmt: skip
    rows = metric_rows(records, plotted_metrics(job["kind"], run_config(job["run_dir"])))
    if rows:
        st.altair_chart(metrics_chart(rows))
    elif job["status"] in ACTIVE:
        st.caption("No metrics yet: the model is loading or the first steps are running.")
    if job["kind"] == "train-rm":
        reward_model_accuracy(job, records)
    st.caption("Log (last lines)")
    st.code(log_tail(job) or "(empty)", language=None)
    if job["status"] in ACTIVE and st.button("Cancel job", key=f"jobs_cancel_{job_id}", icon=":material/stop:"):
        runner.cancel(job_id)
        st.rerun()
    if job["status"] not in ACTIVE and st.session_state.get("jobs_was_active") == job_id:
        st.session_state.pop("jobs_was_active")
        st.rerun()  # the job just ended: redraw the whole page once, which stops the polling
    if job["status"] in ACTIVE:
        st.session_state["jobs_was_active"] = job_id


st.title("Jobs")
all_jobs = jobs.list_jobs(store)
if not all_jobs:
    st.info("No jobs yet: launch a run on the Train page.")
    st.stop()

st.dataframe(job_table(all_jobs), hide_index=True)
ids = [job["id"] for job in all_jobs]
wanted = st.query_params.get("job")
default = int(wanted) if wanted and wanted.isdigit() and int(wanted) in ids else ids[0]
job_id = st.selectbox("Follow job", ids, index=ids.index(default), key="jobs_pick",
                      format_func=lambda i: f"{i}: {next(j for j in all_jobs if j['id'] == i)['run_dir']}")  # fmt: skip
st.query_params["job"] = str(job_id)
chosen = next(job for job in all_jobs if job["id"] == job_id)
st.caption("Command (re-run by hand, or under `torchrun` / `accelerate launch`):")
st.code(command_line(chosen["argv"]), language="bash", wrap_lines=True)
live = chosen["status"] in ACTIVE
st.fragment(job_details, run_every=2 if live else None)(job_id)
