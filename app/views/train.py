"""Train: launch a reward-model run or a policy run (PPO, GRPO, DPO) as a background job, checked before it is queued.

Each form field's default and help come from the config dataclass, the same object behind the CLI flags, so
the command shown after a launch is the one to re-run by hand or under `torchrun` on a bigger machine.
"""

from dataclasses import MISSING, fields

import streamlit as st

from app import auth, resources
from core.fields import flag_type
from core.layouts import shipped_layouts
from data import registry
from data.export import ranked_items
from data.settings import load_settings
from orchestration.launch import Launch, launch_policy, launch_reward_model
from orchestration.preflight import MIN_PROMPTS, MIN_RANKED_ITEMS, check_rankings
from policy import rewards as built_in_rewards
from policy.config import CONFIGS
from rm.accuracy import MIN_RANKINGS
from rm.config import RewardConfig

auth.require_admin()
store = resources.store()

REWARD_FIELDS = ("epochs", "min_steps", "patience", "batch_size", "learning_rate", "lora_rank", "max_length", "validation_fraction", "margin",
                 "seed", "device", "precision", "report_to", "accelerate_config", "gradient_checkpointing")  # fmt: skip
POLICY_FIELDS = ("steps", "batch_prompts", "learning_rate", "lora_rank", "max_new_tokens", "temperature", "seed",
                 "device", "precision", "report_to", "accelerate_config", "gradient_checkpointing")  # fmt: skip
ALGO_FIELDS = {
    "ppo": ("kl_coef", "clip_eps", "ppo_epochs", "vf_coef", "adaptive_kl"),
    "grpo": ("num_generations", "beta", "loss_type", "scale_rewards", "epsilon_high"),
    "dpo": ("epochs", "beta", "loss_type", "label_smoothing", "max_length"),
    "sft": ("epochs", "max_length"),
}


def field_input(container, spec, key: str):
    """Draw the widget of one config field, with the field's default, help text and choices (from the config)."""
    label = spec.name.replace("_", " ").capitalize().replace("Lora", "LoRA").replace("Kl ", "KL ")
    default = None if spec.default is MISSING else spec.default
    help_text = spec.metadata.get("help")
    kind = flag_type(spec)
    choices = spec.metadata.get("choices")
    if spec.name == "accelerate_config":  # a shipped layout; a config file of one's own goes on the command line
        return container.selectbox(label, [None, *shipped_layouts()], format_func=lambda name: name or "one process",
                                   help=help_text, key=key)  # fmt: skip
    if choices:
        return container.selectbox(label, choices, index=choices.index(default), help=help_text, key=key)
    if kind is bool:
        return container.checkbox(label, value=default, help=help_text, key=key)
    if kind is int:
        return container.number_input(label, value=default, step=1, help=help_text, key=key, placeholder="automatic")
    if kind is float:
        return container.number_input(label, value=default, format="%g", step=None, help=help_text, key=key,
                                      placeholder="automatic")  # fmt: skip
    return container.text_input(label, value=default or "", help=help_text, key=key)


def field_inputs(config_class, names: tuple[str, ...], prefix: str) -> dict:
    """Draw the named fields in three columns; return {field name: value}."""
    specs = {spec.name: spec for spec in fields(config_class)}
    columns = st.columns(3)
    values = {}
    for position, name in enumerate(names):
        value = field_input(columns[position % 3], specs[name], f"{prefix}_{name}")
        if value is not None:
            values[name] = value
    return values


def model_choice(label: str, options: dict[str, str], key: str, help_text: str) -> str:
    """Return the chosen model path: a listed option, or what the user typed in 'another model'."""
    left, right = st.columns(2)
    picked = left.selectbox(label, list(options), key=f"{key}_pick", help=help_text)
    typed = right.text_input("…or another model (folder or hub id)", key=f"{key}_typed").strip()
    return typed or options[picked]


def base_models() -> dict[str, str]:
    """Return {label: model} of the base models: 'default', the current generator, recorded base models."""
    options = {"default (SmolLM2-135M-Instruct)": "default"}
    generator = load_settings(store)["generator_model"]
    if generator != "default":
        options[f"generator: {generator}"] = generator
    for model in registry.list_models(store, "base"):
        options.setdefault(f"base: {model['name']}", model["path"] or model["name"])
    return options


def show(result: Launch) -> None:
    for problem in result.problems:
        st.error(problem, icon=":material/block:")
    for warning in result.warnings:
        st.warning(warning)
    if result.memory is not None:
        memory_estimate(result.memory)
    if result.job_id is not None:
        st.success(f"Queued as job {result.job_id}. Follow it on the Jobs page.", icon=":material/schedule:")
        st.caption("The same run by hand (or under `torchrun` / `accelerate launch` on a bigger machine):")
        st.code(result.command, language="bash", wrap_lines=True)


def memory_estimate(memory) -> None:
    """Show what one device will hold, part by part, as a bar people read at a glance."""
    parts = {part: size / 2**30 for part, size in memory.parts().items() if size}
    st.caption(f"Memory estimate per device: about {memory.total / 2**30:.2f} GiB")
    st.bar_chart({"GiB": parts}, horizontal=True, height=40 + 28 * len(parts), x_label="GiB")


def rankings_needed() -> None:
    """Say before launch how many rankings a reward model needs, and how many the store has."""
    items = ranked_items(store)
    usable = sum(len(item["ranked_responses"]) >= 2 for item in items)
    held_out = RewardConfig.__dataclass_fields__["validation_fraction"].default
    st.caption(
        f"Needs at least {MIN_RANKED_ITEMS} ranked items that order two responses, over {MIN_PROMPTS} prompts; "
        f"for a held-out accuracy worth reading, rank {MIN_RANKINGS / held_out:.0f} or more ({held_out:.0%} are "
        "held out). "
        f"The store has {usable} ({len(items) - usable} all-tied rankings do not count)."
    )
    for problem in check_rankings(items):
        st.info(problem, icon=":material/info:")


def reward_model_form() -> None:
    rankings_needed()
    with st.form("train_rm_form"):
        backbone = model_choice(
            "Backbone",
            base_models() | {"all-MiniLM-L6-v2 (fast CPU encoder)": "all-MiniLM-L6-v2"},
            "train_rm_backbone",
            RewardConfig.__dataclass_fields__["backbone"].metadata["help"],
        )
        values = field_inputs(RewardConfig, REWARD_FIELDS, "train_rm")
        if st.form_submit_button("Check and launch", type="primary"):
            with st.spinner("Checking the data, the model and the memory…"):
                st.session_state["train_rm_result"] = launch_reward_model(store, values | {"backbone": backbone})
    if "train_rm_result" in st.session_state:
        show(st.session_state["train_rm_result"])


def reward_mix_input(config_class, reward_run_names: list[str]) -> str | None:
    """Draw the weighted reward components field and what can go in it; return the text, or None when empty."""
    with st.expander("Verifiable rewards and mixes (built-in checks, your functions, several reward models)"):
        st.caption("Write `SOURCE=WEIGHT`, comma-separated; the run optimizes the weighted sum and plots each "
                   "component. A function reads each prompt's columns (an imported `answer`, ...) by name.")  # fmt: skip
        st.dataframe(
            [{"source": f"policy.rewards:{name}", "what": (getattr(built_in_rewards, name).__doc__ or "").split("\n")[0]}
             for name in built_in_rewards.BUILT_IN]
            + [{"source": f"model:{name}", "what": "a reward-model run"} for name in reward_run_names],
            hide_index=True,
        )  # fmt: skip
    typed = st.text_input(
        "Rewards (empty: the reward-model run above alone)", key="train_policy_rewards",
        help=config_class.__dataclass_fields__["rewards"].metadata["help"],
        placeholder="policy.rewards:exact_answer=1,policy.rewards:format_answer_line=0.5",
    )  # fmt: skip
    return typed.strip() or None


def policy_form() -> None:
    algo = st.radio("Algorithm", list(CONFIGS), format_func=str.upper, horizontal=True, key="train_algo",
                    help="PPO and GRPO optimize the reward model's score; DPO learns from the ranked pairs directly")  # fmt: skip
    config_class = CONFIGS[algo]
    st.caption(config_class.__doc__)
    reward_runs = {model["name"]: model["path"] for model in registry.list_models(store, "reward")}
    policy_runs = {f"policy run: {model['name']}": model["path"] for model in registry.list_models(store, "policy")}
    with st.form(f"train_policy_form_{algo}"):
        model = model_choice("Start from", base_models() | policy_runs, "train_policy_model",
                             config_class.__dataclass_fields__["model"].metadata["help"])  # fmt: skip
        values = {"model": model}
        if config_class.samples:
            if not reward_runs:
                st.info("No reward-model run yet: train one in the Reward model tab first.")
            run = st.selectbox("Reward-model run", list(reward_runs), key="train_policy_rm", index=0 if reward_runs
                               else None, help=config_class.__dataclass_fields__["reward_model"].metadata["help"])  # fmt: skip
            values["reward_model"] = reward_runs.get(run)
            values["rewards"] = reward_mix_input(config_class, list(reward_runs))
        values |= field_inputs(config_class, POLICY_FIELDS, f"train_{algo}")
        st.markdown(f"**{algo.upper()} settings**")
        values |= field_inputs(config_class, ALGO_FIELDS[algo], f"train_{algo}")
        if not config_class.samples:
            values.pop("steps", None)  # DPO and SFT run for epochs over their data
        if st.form_submit_button("Check and launch", type="primary"):
            with st.spinner("Checking the data, the models and the memory…"):
                st.session_state["train_policy_result"] = launch_policy(store, algo, values)
    if "train_policy_result" in st.session_state:
        show(st.session_state["train_policy_result"])


st.title("Train")
reward_tab, policy_tab = st.tabs(["Reward model", "Policy"])
with reward_tab:
    reward_model_form()
with policy_tab:
    policy_form()
