"""Model text: code fences that markdown would leave open or mis-close are mended before drawing."""

from app.text import mended_fences


def test_a_fence_with_an_info_string_closes_the_open_block():
    text = "Code:\n```python\nx = 1\n```python\nProse after."
    assert mended_fences(text) == "Code:\n```python\nx = 1\n```\nProse after."


def test_an_indented_fence_moves_to_column_zero_and_keeps_the_code_indentation():
    text = "1. Step:\n   ```\n   if x:\n       y()\n   ```"
    assert mended_fences(text) == "1. Step:\n```\n   if x:\n       y()\n```"


def test_a_block_cut_off_by_the_token_limit_is_closed_and_other_fences_stay_code():
    text = "````md\n```\ninside\n```\nmore"
    assert mended_fences(text) == "````md\n```\ninside\n```\nmore\n````"
    assert mended_fences("no code here") == "no code here"
