"""RLHF Studio in the browser: rank sampled responses, manage prompts, look at the data, change settings.

Pages live in app/views/ (see app/__init__.py for why not app/pages/)."""

import streamlit as st

from app import resources

st.set_page_config(page_title="RLHF Studio", page_icon=":material/thumbs_up_down:", layout="wide")

resources.sampler()  # opens the database and starts sampling ahead of the annotators as soon as the app runs

page = st.navigation(
    [
        st.Page("views/annotate.py", title="Annotate", icon=":material/thumbs_up_down:", default=True),
        st.Page("views/prompts.py", title="Prompts", icon=":material/list:"),
        st.Page("views/data.py", title="Data", icon=":material/bar_chart:"),
        st.Page("views/settings.py", title="Settings", icon=":material/settings:"),
    ]
)
page.run()
