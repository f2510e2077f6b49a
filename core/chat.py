"""Conversations and the chat template: what a prompt is, how it becomes token ids, and where a response stops.

A prompt is a conversation: a list of {"role", "content"} messages, an optional system message first, then user
and assistant turns alternating, ending with a user turn (the turn the model answers). A plain string is the
one-user-message case and stays a string wherever it travels, so single-turn data looks as it always did.

One template rule for every model input (sampler, reward model, DPO, rollouts, playground, comparisons): the
tokenizer's chat template over the whole history with the generation prompt. Too long: the oldest whole
exchanges (a user turn and the answer after it) go first, the system message stays; a prompt whose last user
turn alone does not fit is refused (`PromptTooLong`). A model without a chat template reads `plain_layout`.
"""

ROLES = ("system", "user", "assistant")
PLAIN_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


class ConversationError(ValueError):
    """A conversation is malformed: roles out of order, empty content, an unknown role, or no final user turn."""


class PromptTooLong(ValueError):
    """A prompt's last user turn (with the system message) alone takes more tokens than allowed."""


def conversation(prompt) -> list[dict]:
    """Return the prompt as checked messages (a string is one user message); ConversationError says what is wrong."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ConversationError("the prompt is empty")
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise ConversationError(f"a prompt is text or a non-empty list of messages, got {type(prompt).__name__}")
    messages = []
    for number, message in enumerate(prompt, start=1):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise ConversationError(f"message {number} is not a {{'role', 'content'}} object")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ConversationError(f"message {number} has unknown role {role!r}; expected one of {ROLES}")
        if not isinstance(content, str) or not content.strip():
            raise ConversationError(f"message {number} ({role}) has empty content")
        messages.append({"role": role, "content": content})
    _check_order(messages)
    return messages


def _check_order(messages: list[dict]) -> None:
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            number = index + 1 + (len(messages) - len(turns))
            raise ConversationError(
                f"message {number} is {message['role']!r} where {expected!r} was due: after an optional system "
                "message, user and assistant turns alternate, starting with user"
            )
    if not turns:
        raise ConversationError("a system message alone: the conversation needs a user turn")
    if turns[-1]["role"] != "user":
        raise ConversationError(
            "the conversation ends with an assistant turn: it must end with the user turn to answer"
        )


def as_prompt(messages: list[dict]):
    """Return checked messages as a prompt: the plain string when they are one user message, else the list."""
    messages = conversation(messages)
    return messages[0]["content"] if len(messages) == 1 else messages


def is_conversation(prompt) -> bool:
    """Return whether a prompt has more than one message (a system message or earlier turns)."""
    return not isinstance(prompt, str) and len(prompt) > 1


def last_user_turn(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def plain_layout(prompt, generation_prompt: bool = True) -> str:
    """Return the prompt as plain text, for encoders and models without a chat template.

    A string stays itself. A conversation becomes "User: ...\\n\\nAssistant: ...\\n\\nUser: ..." (a system
    message first as "System: ..."), followed by "\\n\\nAssistant:" when the model is to answer.
    """
    if isinstance(prompt, str):
        return prompt
    text = "\n\n".join(f"{PLAIN_NAMES[m['role']]}: {m['content']}" for m in prompt)
    return text + "\n\nAssistant:" if generation_prompt else text


def _render(tokenizer, messages: list[dict]) -> list[int]:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return tokenizer(plain_layout(as_prompt(messages)), add_special_tokens=True)["input_ids"]


def chat_prompt_ids(tokenizer, prompt, max_tokens: int | None = None, name=None) -> list[int]:
    """Return the token ids of a prompt in the model's chat template, generation prompt added, within `max_tokens`.

    Too long: the oldest whole exchanges are dropped (the system message stays) until it fits; PromptTooLong,
    naming the prompt (`name`: its id or row), when the last user turn alone does not.
    """
    return fitted_prompt_ids(tokenizer, prompt, max_tokens, name)[0]


def fitted_prompt_ids(tokenizer, prompt, max_tokens: int | None = None, name=None) -> tuple[list[int], bool]:
    """Return `chat_prompt_ids` and whether turns were dropped to fit (what a run counts as cut)."""
    messages = conversation(prompt)
    ids = _render(tokenizer, messages)
    if max_tokens is None or len(ids) <= max_tokens:
        return ids, False
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system) :]
    for start in range(2, len(turns), 2):  # each start is a user turn: the kept history still opens with one
        ids = _render(tokenizer, system + turns[start:])
        if len(ids) <= max_tokens:
            return ids, True
    label = f"prompt {name}" if name is not None else "a prompt"
    raise PromptTooLong(
        f"{label}: its last user turn alone takes {len(ids)} tokens in the chat template, more than the "
        f"{max_tokens} allowed; shorten it or raise the prompt token limit"
    )


def cut_at_eos(token_ids: list[int], eos_ids: set[int], pad_id: int | None) -> tuple[list[int], str]:
    """Return the completion up to (not including) its first EOS, and why it ended."""
    for index, token in enumerate(token_ids):
        if token in eos_ids:
            return token_ids[:index], "eos"
    if pad_id is not None:
        while token_ids and token_ids[-1] == pad_id:
            token_ids = token_ids[:-1]
    return token_ids, "length"


def eos_token_ids(model, tokenizer) -> set[int]:
    """Return every id that ends a turn: the tokenizer's EOS and whatever the generation config adds."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    ids.discard(None)
    return ids
