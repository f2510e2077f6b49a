"""Show model and user text as markdown that cannot reach out of the page (code fences that hold together),
or as plain text inside a message."""

import re

import streamlit as st

# st.markdown already escapes HTML, but markdown's own image syntax `![alt](url)` still becomes an <img> that
# the browser fetches: any prompt or response could make every annotator's browser contact an outside host.
_IMAGE = re.compile(r"!\[")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")


def safe_markdown(text: str) -> str:
    """Return the text with markdown images turned into plain text (links stay links: they load nothing)."""
    return _IMAGE.sub(r"!\\[", text)


def mended_fences(text: str) -> str:
    """Return the text with its code fences as the model meant them.

    Models write fences markdown does not close: "```python" again at the end of a block (a fence with an info
    string cannot close one, so the prose after it becomes code), a fence indented inside a list item (its code
    then loses that much indentation), or no closing fence when the token limit cut the response. Inside a block,
    any fence line of the same kind closes it; every fence moves to column 0; an open block is closed at the end.
    """
    lines, open_fence = [], None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if match is None:
            lines.append(line)
        elif open_fence is None:
            open_fence = match.group(1)
            lines.append(open_fence + match.group(2).strip())
        elif match.group(1)[0] == open_fence[0] and len(match.group(1)) >= len(open_fence):
            lines.append(open_fence)
            open_fence = None
        else:
            lines.append(line)  # a shorter or other fence inside a block is code
    if open_fence is not None:
        lines.append(open_fence)
    return "\n".join(lines)


def show_text(text: str, empty: str = "*(empty)*") -> None:
    """Draw model or user text as safe markdown."""
    st.markdown(safe_markdown(mended_fences(text)) if text.strip() else empty)


RECENT_MESSAGES = 3  # a conversation shows its last messages; older ones fold into an expander
AVATARS = {"system": ":material/settings:", "user": "user", "assistant": "assistant"}
LAST_TURN_NOTE = "Only the last turn is judged: the responses are candidates for the next assistant turn."


def show_message(message: dict) -> None:
    """Draw one message as a chat turn (escaped markdown, as any model or user text)."""
    with st.chat_message(message["role"], avatar=AVATARS[message["role"]]):
        show_text(message["content"])


def show_prompt(prompt) -> None:
    """Draw a prompt: text in a box, a conversation as chat turns, long histories folded, the last user turn shown."""
    if isinstance(prompt, str):
        with st.container(border=True):
            show_text(prompt)
        return
    system = prompt[:1] if prompt[0]["role"] == "system" else []
    turns = prompt[len(system) :]
    older, recent = turns[:-RECENT_MESSAGES], turns[-RECENT_MESSAGES:]
    for message in system:
        show_message(message)
    if older:
        with st.expander(f"{len(older)} earlier messages", icon=":material/history:"):
            for message in older:
                show_message(message)
    for message in recent:
        show_message(message)


def show_answer(text: str, conversation: bool, empty: str = "*(empty response)*") -> None:
    """Draw a response: as the next assistant turn under a conversation, else as text."""
    if not conversation:
        show_text(text, empty=empty)
        return
    with st.chat_message("assistant", avatar=AVATARS["assistant"]):
        show_text(text, empty=empty)


# CommonMark lets a backslash escape any ASCII punctuation. These are the ones that can start markup in running
# text (an image, a link, HTML, emphasis, code, math, a heading or table, Streamlit's `:color[...]`); prose
# punctuation (, . : ' ( ) - /) cannot without them, so messages keep reading normally in their source.
_MARKUP = re.compile(r"([\\`*_\[\]<>#+!|~$])")


def as_text(text) -> str:
    """Return `text` (a file name, a header, an error quoting user data) escaped to show as itself in any message."""
    return _MARKUP.sub(r"\\\1", str(text))
