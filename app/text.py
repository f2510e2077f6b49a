"""Show model and user text as markdown that cannot reach out of the page, or as plain text inside a message."""

import re

import streamlit as st

# st.markdown already escapes HTML, but markdown's own image syntax `![alt](url)` still becomes an <img> that
# the browser fetches: any prompt or response could make every annotator's browser contact an outside host.
_IMAGE = re.compile(r"!\[")


def safe_markdown(text: str) -> str:
    """Return the text with markdown images turned into plain text (links stay links: they load nothing)."""
    return _IMAGE.sub(r"!\\[", text)


def show_text(text: str, empty: str = "*(empty)*") -> None:
    """Draw model or user text as safe markdown."""
    st.markdown(safe_markdown(text) if text.strip() else empty)


# CommonMark lets a backslash escape any ASCII punctuation. These are the ones that can start markup in running
# text (an image, a link, HTML, emphasis, code, math, a heading or table, Streamlit's `:color[...]`); prose
# punctuation (, . : ' ( ) - /) cannot without them, so messages keep reading normally in their source.
_MARKUP = re.compile(r"([\\`*_\[\]<>#+!|~$])")


def as_text(text) -> str:
    """Return `text` (a file name, a header, an error quoting user data) escaped to show as itself in any message."""
    return _MARKUP.sub(r"\\\1", str(text))
