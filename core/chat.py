"""The chat template and the end of a turn: how a prompt becomes token ids, and where a response stops."""


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Return the token ids of a user prompt wrapped in the model's chat template (plain text if it has none)."""
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


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
