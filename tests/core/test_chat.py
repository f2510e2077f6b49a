"""Conversations: checked shapes, the chat template over the whole history, truncation by whole turns."""

import copy

import pytest

from core.chat import (
    ConversationError,
    PromptTooLong,
    as_prompt,
    chat_prompt_ids,
    conversation,
    plain_layout,
)

SYSTEM = {"role": "system", "content": "You answer in one short sentence."}
HISTORY = [
    {"role": "user", "content": "What's 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And times 3?"},
    {"role": "assistant", "content": "12."},
    {"role": "user", "content": "Divide that by 4."},
]


def template(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_the_token_ids_are_the_chat_template_over_the_whole_history(tokenizer):
    assert tokenizer.chat_template
    messages = [SYSTEM, *HISTORY]
    assert chat_prompt_ids(tokenizer, messages) == template(tokenizer, messages)
    assert chat_prompt_ids(tokenizer, "Hello") == template(tokenizer, [{"role": "user", "content": "Hello"}])
    assert chat_prompt_ids(tokenizer, [{"role": "user", "content": "Hello"}]) == chat_prompt_ids(tokenizer, "Hello")


def test_too_long_drops_the_oldest_whole_turns_and_keeps_system_and_last_user_turn(tokenizer):
    messages = [SYSTEM, *copy.deepcopy(HISTORY)]
    messages[1]["content"] = "Long first question. " * 40
    full = chat_prompt_ids(tokenizer, messages)
    kept = [SYSTEM, *HISTORY[2:]]  # the first exchange (user + answer) went whole
    limit = len(template(tokenizer, kept))
    assert limit < len(full)
    assert chat_prompt_ids(tokenizer, messages, max_tokens=limit) == template(tokenizer, kept)
    only_last = [SYSTEM, HISTORY[-1]]
    assert chat_prompt_ids(tokenizer, messages, max_tokens=limit - 1) == template(tokenizer, only_last)
    too_small = len(template(tokenizer, only_last)) - 1
    with pytest.raises(PromptTooLong, match="prompt 17: its last user turn alone takes"):
        chat_prompt_ids(tokenizer, messages, max_tokens=too_small, name=17)


def test_without_a_chat_template_the_plain_layout(tokenizer):
    plain = copy.copy(tokenizer)
    plain.chat_template = None
    assert plain_layout(HISTORY) == (
        "User: What's 2+2?\n\nAssistant: 4.\n\nUser: And times 3?\n\nAssistant: 12.\n\nUser: Divide that by 4."
        "\n\nAssistant:"
    )
    assert chat_prompt_ids(plain, HISTORY) == plain(plain_layout(HISTORY))["input_ids"]
    assert chat_prompt_ids(plain, "Hi") == plain("Hi")["input_ids"]  # one message: the text, as always


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "message 1 is 'assistant'"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "message 2 is 'user'"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "ends with an assistant turn"),
        ([{"role": "user", "content": "  "}], "message 1 \\(user\\) has empty content"),
        ([{"role": "robot", "content": "a"}], "unknown role 'robot'"),
        ([SYSTEM], "a system message alone"),
        ([], "non-empty list"),
    ],
)
def test_malformed_conversations_are_refused_with_the_reason(messages, reason):
    with pytest.raises(ConversationError, match=reason):
        conversation(messages)


def test_one_user_message_is_the_plain_string():
    assert as_prompt([{"role": "user", "content": "Hi"}]) == "Hi"
    assert as_prompt([SYSTEM, {"role": "user", "content": "Hi"}]) == [SYSTEM, {"role": "user", "content": "Hi"}]
