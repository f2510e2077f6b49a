"""Conversations in the field's file formats: OpenAI/TRL messages, Anthropic HH transcripts, UltraFeedback rows.

Every reader (prompt files, pairs and rankings for the reward model and DPO) turns a row into our prompt shape
here: a string for one user message, else a list of {"role", "content"} messages (see `core.chat`). A
malformed conversation raises ConversationError; the reader names the file and row.
"""

import hashlib
import json
import re

from core.chat import ConversationError, as_prompt, conversation, plain_layout

# "\n\nHuman: ...\n\nAssistant: ..." (Anthropic HH-RLHF); the text may start with or without the blank lines.
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def is_hh_transcript(text: str) -> bool:
    """Return whether a string is an HH transcript: it opens with "Human:" and has an "Assistant:" turn."""
    return text.lstrip("\n").startswith("Human:") and "\n\nAssistant:" in text


def parse_hh(text: str) -> list[dict]:
    """Return the messages of an HH transcript, unchecked; a final empty "Assistant:" (the cue to answer) is dropped."""
    text = "\n\n" + text.lstrip("\n")
    marks = list(_HH_TURN.finditer(text))
    messages = [
        {"role": _HH_ROLES[mark.group(1)], "content": text[mark.end() : following].strip()}
        for mark, following in zip(marks, [m.start() for m in marks[1:]] + [len(text)], strict=True)
    ]
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def prompt_of(value):
    """Return a prompt from a cell: text (an HH transcript is parsed into turns) or a list of messages; checked."""
    if isinstance(value, str):
        return as_prompt(parse_hh(value)) if is_hh_transcript(value) else as_prompt([_user(value)])
    if isinstance(value, (list, tuple)):
        return as_prompt(list(value))
    raise ConversationError(f"a prompt must be text or a list of messages, got {type(value).__name__}")


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _as_messages(value, column: str) -> list[dict]:
    if isinstance(value, str):
        if is_hh_transcript(value):
            return parse_hh(value)
        return [{"role": "assistant", "content": value}]
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) for m in value):
        return [{"role": m.get("role"), "content": m.get("content")} for m in value]
    raise ConversationError(f"{column!r} must be text or a list of messages, got {type(value).__name__}")


def response_of(value, column: str) -> str:
    """Return a response from a cell: text, or one assistant message (TRL's conversational chosen/rejected)."""
    if isinstance(value, str):
        if not value.strip():
            raise ConversationError(f"{column!r} is empty")
        return value
    messages = _as_messages(value, column)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise ConversationError(f"{column!r} must be one assistant message, got {len(messages)} message(s)")
    content = messages[0]["content"]
    if not isinstance(content, str) or not content.strip():
        raise ConversationError(f"{column!r} has empty content")
    return content


class NoSharedPrompt(ConversationError):
    """Chosen and rejected transcripts differ before their last answers: no prompt is shared (HH has a few)."""


def split_pair(chosen, rejected) -> tuple[object, str, str]:
    """Return (prompt, chosen, rejected) of two whole conversations: the shared start, then each last answer.

    HH transcripts and TRL's implicit-prompt rows (chosen/rejected as full message lists) are both this case.
    """
    chosen_messages, rejected_messages = _as_messages(chosen, "chosen"), _as_messages(rejected, "rejected")
    for column, messages in (("chosen", chosen_messages), ("rejected", rejected_messages)):
        if not messages or messages[-1]["role"] != "assistant":
            raise ConversationError(f"{column!r} does not end with an assistant turn")
    if chosen_messages[:-1] != rejected_messages[:-1]:
        raise NoSharedPrompt("'chosen' and 'rejected' differ before their last assistant turn")
    try:
        prompt = as_prompt(chosen_messages[:-1])
    except ConversationError as error:
        raise ConversationError(f"the shared start of 'chosen' and 'rejected' is not a prompt: {error}") from None
    return prompt, response_of(chosen_messages[-1:], "chosen"), response_of(rejected_messages[-1:], "rejected")


def pair_of_row(row: dict) -> tuple[object, str, str]:
    """Return (prompt, chosen, rejected) of a pairs row in any format we read, checked.

    - prompt/chosen/rejected as text (ours, TRL standard), the prompt possibly an HH transcript;
    - TRL conversational: prompt a list of messages, chosen/rejected one assistant message each;
    - UltraFeedback: chosen/rejected whole conversations (a text `prompt` beside them repeats their first turn);
    - Anthropic HH: no prompt, chosen/rejected whole transcripts.
    """
    chosen, rejected = row.get("chosen"), row.get("rejected")
    for column, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConversationError(
                f"{column!r} must be text or messages, got {'nothing' if value is None else 'empty'}"
            )
    whole = [_is_whole_conversation(value) for value in (chosen, rejected)]
    if all(whole):
        return split_pair(chosen, rejected)
    if row.get("prompt") is None:
        raise ConversationError("no 'prompt', and 'chosen'/'rejected' are not whole conversations (HH or messages)")
    return prompt_of(row["prompt"]), response_of(chosen, "chosen"), response_of(rejected, "rejected")


def _is_whole_conversation(value) -> bool:
    if isinstance(value, str):
        return is_hh_transcript(value)
    return isinstance(value, (list, tuple)) and any(isinstance(m, dict) and m.get("role") == "user" for m in value)


def prompt_of_row(row: dict, fields: tuple[str, ...]):
    """Return the prompt of a prompts-file row: `messages`, a pair's shared start, or the first prompt field."""
    if row.get("messages") is not None and row.get("chosen") is None:
        messages = row["messages"]
        if isinstance(messages, str):  # a CSV cell holds JSON
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as error:
                raise ConversationError(f"'messages' is not a JSON list of messages ({error.msg})") from None
        return as_prompt(messages) if isinstance(messages, list) else prompt_of(messages)
    for field in fields:
        if field in row:
            return prompt_of(row[field])
    if "chosen" in row and "rejected" in row:
        return pair_of_row(row)[0]
    raise KeyError("no prompt field")


def prompt_from_typed(text: str):
    """Return a prompt typed into a text box: a JSON list of messages or an HH transcript is a conversation."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            return as_prompt(value)
    return prompt_of(stripped)


def prompt_key(prompt) -> str:
    """Return the key that decides whether two prompts are duplicates: the whole conversation.

    A one-message prompt keeps the key plain text always had (whitespace-trimmed text), so databases from before
    conversations keep their duplicates found.
    """
    if isinstance(prompt, str):
        return hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()
    canonical = json.dumps([[m["role"], m["content"].strip()] for m in prompt], ensure_ascii=False)
    return "conversation:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def stored_text(prompt) -> str:
    """Return what `prompts.text` holds: the prompt itself, or a conversation's plain transcript (for search)."""
    return prompt.strip() if isinstance(prompt, str) else plain_layout(prompt, generation_prompt=False)


def from_stored(text: str, messages_json: str | None):
    """Return the prompt of a stored row: its messages when it is a conversation, else its text."""
    return text if messages_json is None else json.loads(messages_json)


def checked(prompt):
    """Return a prompt (text or messages) checked and in its simplest shape."""
    return as_prompt(conversation(prompt))
