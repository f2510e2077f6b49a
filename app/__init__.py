"""The Streamlit app: `app/main.py` is the entry point, one file per page in `app/views/`.

Not `app/pages/`: Streamlit treats a folder of that name as a legacy multipage app, and a page opened by its
URL (a reload, a bookmark) then shows the folder's file names instead of this app's navigation.
"""
