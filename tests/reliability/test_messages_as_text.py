"""Messages that quote user data (a CSV header, a file name) show it as text: no image loads, no markup applies."""

from markdown_it import MarkdownIt

from app.text import as_text
from tests.app.conftest import studio  # noqa: F401  (the app over a database in tmp_path)
from tests.app.test_prompts_page import upload

IMAGE = "![x](http://127.0.0.1:9/err.png)"


def rendered(message: str) -> str:
    """Return the HTML a CommonMark renderer (as Streamlit's st.error uses) makes of a message."""
    return MarkdownIt("commonmark").render(message)


def test_an_import_error_quoting_a_hostile_csv_header_shows_it_as_text(studio):  # noqa: F811
    at = studio.open("prompts")
    upload(at, "hostile.csv", f"{IMAGE},*bold*\nsome text,more\n".encode())
    [error] = at.error
    html = rendered(error.value)
    assert "<img" not in html and "<em>" not in html
    assert IMAGE in html and "*bold*" in html  # the user sees exactly what the file holds


def test_a_hostile_file_name_shows_as_text_in_the_report(studio):  # noqa: F811
    at = studio.open("prompts")
    name = "![y](x.png) <img src=x> __x__.jsonl"  # no "/": that would start a folder
    upload(at, name, b'"a prompt"\n')
    [success] = at.success
    html = rendered(success.value)
    assert "<img" not in html and "<strong>" not in html
    assert "![y](x.png) &lt;img src=x&gt; __x__.jsonl: added 1 prompts" in html


def test_as_text_round_trips_every_ascii_punctuation():
    punctuation = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
    text = f"{punctuation} *a* _b_ `c` [d](e) ![f](g) <h> # i | j ~~k~~ $l$ :red[m]"
    html = rendered(as_text(text))
    assert (
        html
        == "<p>"
        + text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        + "</p>\n"
    )
