"""RLHF Studio in the browser: rank sampled responses, manage prompts, look at the data, change settings.

Pages live in app/views/ (see app/__init__.py for why not app/pages/). Annotators see only the annotation
pages; admins see everything.
"""

from pathlib import Path

import streamlit as st

from app import auth, resources

# A local image: a ":material/...:" or emoji page icon makes every browser fetch the favicon from the internet.
ICON = Path(__file__).parent / "icon.png"
st.set_page_config(page_title="RLHF Studio", page_icon=str(ICON), layout="wide")

# Long code lines in answers wrap inside their card (half the page wide) instead of running out of sight.
# Static CSS of our own; model and user text never goes through HTML.
st.html(
    "<style>[data-testid='stMarkdownContainer'] pre code { white-space: pre-wrap !important; overflow-wrap: anywhere; }</style>"
)

store = resources.store()
resources.sampler()  # starts sampling ahead of the annotators as soon as the app runs
st.session_state["auth_user"] = user = auth.sign_in(store)

annotation_pages = [
    st.Page("views/annotate.py", title="Annotate", icon=":material/thumbs_up_down:", default=True),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
]
admin_pages = [
    st.Page("views/prompts.py", title="Prompts", icon=":material/list:"),
    st.Page("views/data.py", title="Data", icon=":material/bar_chart:"),
    st.Page("views/settings.py", title="Settings", icon=":material/settings:"),
    st.Page("views/playground.py", title="Playground", icon=":material/science:"),
    st.Page("views/compare_results.py", title="Comparisons", icon=":material/leaderboard:"),
    st.Page("views/rm_check.py", title="Reward-model check", icon=":material/fact_check:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/jobs.py", title="Jobs", icon=":material/work_history:"),
    st.Page("views/registry.py", title="Models", icon=":material/hub:"),
]
pages = {"Annotation": annotation_pages, "Admin": admin_pages} if user.is_admin else annotation_pages
st.navigation(pages).run()
