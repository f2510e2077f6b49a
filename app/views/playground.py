"""Playground: one prompt, two models' answers side by side, each scored by a reward model (optionally the best of N
samples by it); keep it for blind voting."""

import streamlit as st

from app import auth, models, resources
from app.text import as_text, show_answer, show_prompt
from core.chat import ConversationError, is_conversation
from data import compare
from data.conversations import prompt_from_typed
from orchestration.best_of_n import best_of_n

auth.require_admin()
store = resources.store()


def generate(
    prompt, names: list[str], reward_name: str | None, temperature: float, max_new_tokens: int, best_of: int = 1
) -> dict:
    """Return each model's answer and (with a reward model) its normalized reward; with best_of = N > 1, the
    answer is the reward model's best of N samples, and every sample with its reward is kept too."""
    if best_of > 1 and not reward_name:
        raise ValueError("best of N keeps the reward model's best sample: pick a reward model")
    scorer = models.reward_scorer(models.load_path(store, reward_name)) if reward_name else None
    answers, rewards, samples = [], [None] * len(names), [None] * len(names)
    for index, name in enumerate(names):
        model, tokenizer = models.causal_lm(models.load_path(store, name))
        if best_of > 1:
            (found,) = best_of_n(model, tokenizer, scorer, [(None, prompt)], best_of, temperature, 1.0, max_new_tokens)
            answers.append(found.kept or "")
            rewards[index] = found.rewards[found.best] if found.best is not None else None
            samples[index] = {"responses": found.responses, "rewards": found.rewards, "best": found.best}
        else:
            answers.append(models.answer(model, tokenizer, prompt, temperature, max_new_tokens))
    if scorer is not None and best_of <= 1:
        rewards = scorer.score([prompt] * len(answers), answers).tolist()
    return {"prompt": prompt, "names": names, "answers": answers, "rewards": rewards, "reward_model": reward_name,
            "samples": samples}  # fmt: skip


def show_samples(found: dict, conversation: bool) -> None:
    """Draw every sample of a best-of-N answer with its reward, the kept one marked."""
    with st.expander(f"All {len(found['responses'])} samples and their rewards"):
        for index, (text, reward) in enumerate(zip(found["responses"], found["rewards"], strict=True)):
            kept = " · kept" if index == found["best"] else ""
            st.caption(f"Sample {index + 1}: reward {reward:+.3f}{kept}")
            show_answer(text, conversation, empty="*(empty answer)*")


def show(result: dict) -> None:
    if is_conversation(result["prompt"]):
        show_prompt(result["prompt"])
    samples = result.get("samples") or [None] * len(result["names"])
    for column, name, text, reward, found in zip(
        st.columns(2), result["names"], result["answers"], result["rewards"], samples, strict=True
    ):
        with column, st.container(border=True):
            st.markdown(f"**{as_text(name)}**")
            if reward is not None:
                best_of = f", best of {len(found['responses'])}" if found else ""
                st.metric(f"Reward ({result['reward_model']}{best_of})", f"{reward:.3f}")
            show_answer(text, is_conversation(result["prompt"]), empty="*(empty answer)*")
            if found:
                show_samples(found, is_conversation(result["prompt"]))


st.title("Playground")
st.caption("Ask two models the same prompt; a reward model scores both answers (normalized: 0 = its training mean).")
prompt = st.text_area(
    "Prompt", key="playground_prompt", placeholder="Ask anything…",
    help="Text, or a conversation: a JSON list of {role, content} messages or an HH transcript "
    "(Human: … Assistant: … Human: …); the answers are the next assistant turn.",
)  # fmt: skip
left, right = st.columns(2)
with left:
    name_a = models.model_picker(store, "Model A", ("base", "policy"), "playground_model_a")
with right:
    name_b = models.model_picker(store, "Model B", ("base", "policy"), "playground_model_b")
with st.expander("Reward model and sampling", expanded=True):
    reward_name = models.model_picker(store, "Reward model", ("reward",), "playground_reward", optional=True)
    first, second, third = st.columns(3)
    temperature = first.number_input("Temperature", min_value=0.05, value=0.7, step=0.1, key="playground_temperature")
    max_new_tokens = second.number_input("Max new tokens", min_value=1, value=128, step=16, key="playground_tokens")
    best_of = third.number_input(
        "Best of N", min_value=1, max_value=32, value=1, step=1, key="playground_best_of",
        help="sample N answers per model and keep the one the reward model scores highest (rejection sampling, "
        "as `rlhf-studio sample --best-of N` does for an SFT set); 1 = one answer",
    )  # fmt: skip

if st.button("Generate", type="primary", icon=":material/play_arrow:", key="playground_generate"):
    if not prompt.strip():
        st.error("Write a prompt first.")
    else:
        try:
            with st.spinner("Generating…"):
                st.session_state["playground_result"] = generate(
                    prompt_from_typed(prompt), [name_a, name_b], reward_name or None,
                    float(temperature), int(max_new_tokens), int(best_of),
                )  # fmt: skip
        except ConversationError as error:
            st.error(f"Not a conversation: {as_text(error)}")
        except (ValueError, OSError) as error:  # an unknown folder or hub id without network
            st.error(f"Could not generate: {as_text(error)}")

result = st.session_state.get("playground_result")
if result:
    show(result)
    same = result["names"][0] == result["names"][1]
    added = result.get("added", False)  # once per pair of answers: a second copy would count its votes twice
    if st.button("Add to blind comparison", icon=":material/compare:", disabled=same or added, key="playground_add"):
        compare.add_comparison(store, result["prompt"], result["names"][0], result["answers"][0],
                               result["names"][1], result["answers"][1])  # fmt: skip
        result["added"] = added = True
    if added:
        st.success("Added: voters will see this pair without model names.")
    if same:
        st.caption("Both answers come from the same model: pick two different models to add a blind comparison.")
