"""Playground: one prompt, two models' answers side by side, each scored by a reward model; keep it for blind voting."""

import streamlit as st

from app import auth, models, resources
from app.text import as_text, show_answer, show_prompt
from core.chat import ConversationError, is_conversation
from data import compare
from data.conversations import prompt_from_typed

auth.require_admin()
store = resources.store()


def generate(prompt, names: list[str], reward_name: str | None, temperature: float, max_new_tokens: int) -> dict:
    """Return each model's answer and (with a reward model) its normalized reward."""
    answers = []
    for name in names:
        model, tokenizer = models.causal_lm(models.load_path(store, name))
        answers.append(models.answer(model, tokenizer, prompt, temperature, max_new_tokens))
    rewards = [None] * len(names)
    if reward_name:
        scorer = models.reward_scorer(models.load_path(store, reward_name))
        rewards = scorer.score([prompt] * len(answers), answers).tolist()
    return {"prompt": prompt, "names": names, "answers": answers, "rewards": rewards, "reward_model": reward_name}


def show(result: dict) -> None:
    if is_conversation(result["prompt"]):
        show_prompt(result["prompt"])
    for column, name, text, reward in zip(
        st.columns(2), result["names"], result["answers"], result["rewards"], strict=True
    ):
        with column, st.container(border=True):
            st.markdown(f"**{as_text(name)}**")
            if reward is not None:
                st.metric(f"Reward ({result['reward_model']})", f"{reward:.3f}")
            show_answer(text, is_conversation(result["prompt"]), empty="*(empty answer)*")


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
    first, second = st.columns(2)
    temperature = first.number_input("Temperature", min_value=0.05, value=0.7, step=0.1, key="playground_temperature")
    max_new_tokens = second.number_input("Max new tokens", min_value=1, value=128, step=16, key="playground_tokens")

if st.button("Generate", type="primary", icon=":material/play_arrow:", key="playground_generate"):
    if not prompt.strip():
        st.error("Write a prompt first.")
    else:
        try:
            with st.spinner("Generating…"):
                st.session_state["playground_result"] = generate(
                    prompt_from_typed(prompt), [name_a, name_b], reward_name or None,
                    float(temperature), int(max_new_tokens),
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
