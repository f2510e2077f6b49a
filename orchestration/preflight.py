"""Check a training run before it is queued: data, models, tokenizers, memory.

Every check returns a list of problems (empty: fine), so the app shows all of them at once and queues
nothing while any remain. Minutes into a job is the wrong time to learn that the reward-model folder is
missing or the model does not fit in memory.
"""

import math
import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.chat import PromptTooLong, chat_prompt_ids, plain_layout
from core.layouts import Layout, read_layout
from core.memory import MemoryEstimate, ModelShape, available_memory, estimate
from core.models import ModelNotFound, resolve_model, training_choice
from rm.config import RewardConfig

MIN_RANKED_ITEMS = 4  # ranked items with at least one comparison (a ranking of ties teaches nothing)
MIN_PROMPTS = 2  # distinct prompts, so the split by prompt leaves a validation set
MIN_DPO_PAIRS = 4
MIN_POLICY_PROMPTS = 1
MEMORY_WARN_SHARE = 0.8  # warn when the estimate uses more than this share of the free memory

# ---------------------------------------------------------------------------------------------- data checks


def check_rankings(items: list[dict]) -> list[str]:
    """Return what is missing from exported ranked items for a reward model to learn and be validated."""
    usable = [item for item in items if len(item["ranked_responses"]) >= 2]  # >= 2 tie groups: >= 1 comparison
    problems = []
    if len(usable) < MIN_RANKED_ITEMS:
        problems.append(
            f"only {len(usable)} ranked item(s) with at least one comparison (all-tied rankings do not count); "
            f"rank at least {MIN_RANKED_ITEMS} on the Annotate page"
        )
    prompts = {item["prompt_id"] for item in usable}
    if len(prompts) < MIN_PROMPTS:
        problems.append(
            f"the rankings cover {len(prompts)} prompt(s); at least {MIN_PROMPTS} are needed so some can be held "
            "out for validation"
        )
    return problems


def check_pairs(pair_count: int) -> list[str]:
    if pair_count < MIN_DPO_PAIRS:
        return [f"DPO needs at least {MIN_DPO_PAIRS} chosen/rejected pairs; the rankings give {pair_count}"]
    return []


def check_demonstrations(count: int) -> list[str]:
    if count < 1:
        return ["SFT needs demonstrations: rank some responses first (each ranking's best response is one)"]
    return []


def check_prompts(prompt_count: int) -> list[str]:
    if prompt_count < MIN_POLICY_PROMPTS:
        return ["there are no prompts to train on: import some on the Prompts page"]
    return []


# --------------------------------------------------------------------------------------------- model checks


def hub_reachable(timeout: float = 2.0) -> bool:
    """Return whether huggingface.co answers at all (a TCP connect, no download); False under HF_HUB_OFFLINE."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def model_config(name: str):
    """Return the model's AutoConfig from a folder or the local cache (never the network), or raise."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model(name), local_files_only=True)


def check_model(name: str, online: bool | None, role: str = "model") -> list[str]:
    """Return why a model choice would fail to load in a job: unknown id while offline, broken folder.

    online=None asks the hub only when the model is neither a folder nor cached (local choices never touch it).
    """
    if not name or not name.strip():
        return [f"the {role} is empty: choose 'default', a model folder, a run or a hub id"]
    try:
        path = resolve_model(name)
    except ModelNotFound as error:
        return [f"{role}: {error}"]
    try:
        model_config(name)
    except (OSError, ValueError) as error:
        if Path(path).is_dir():
            return [f"{role} {name!r}: {path} does not load as a model ({_first_line(error)})"]
        if not (hub_reachable() if online is None else online):
            return [
                f"{role} {name!r} is not a folder, not in the local Hugging Face cache, and the hub cannot be "
                "reached (offline): use a model folder or a run, or download it on a machine with internet"
            ]
    return []


def check_reward_run(path: str | None) -> list[str]:
    """Return why a reward-model run would fail to load: missing folder, model files or a config that will not load."""
    if not path:
        return ["choose a reward-model run (train one in the Reward model tab first)"]
    run = Path(path)
    if not run.is_dir():
        return [f"reward-model run {path} does not exist"]
    model_dir = run / "model" if (run / "model").is_dir() else run
    missing = [name for name in ("config.json",) if not (model_dir / name).exists()]
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("pytorch_model*.bin")):
        missing.append("model weights (*.safetensors)")
    if missing:
        return [f"reward-model run {path} lacks {', '.join(missing)} in {model_dir}: did its training finish?"]
    try:
        model_config(str(model_dir))
    except (OSError, ValueError) as error:
        return [f"reward-model run {path}: its model does not load ({_first_line(error)})"]
    return []


def load_local_tokenizer(name: str):
    """Return the tokenizer of a model choice from disk only (no network)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name), local_files_only=True)


def check_tokenizer(tokenizer, role: str) -> list[str]:
    """Return a problem if the tokenizer cannot encode a plain sentence."""
    try:
        ids = tokenizer("Is this a good answer?")["input_ids"]
    except Exception as error:  # any tokenizer failure here would fail the job later
        return [f"the {role} tokenizer cannot encode text: {_first_line(error)}"]
    if not ids:
        return [f"the {role} tokenizer encodes a sentence as no tokens"]
    return []


def tokenizer_warnings(policy_tokenizer, reward_tokenizer) -> list[str]:
    """Return what is worth knowing but not blocking: different vocabularies, a policy without a chat template."""
    warnings = []
    if reward_tokenizer is not None and policy_tokenizer.get_vocab() != reward_tokenizer.get_vocab():
        warnings.append(
            f"the policy and the reward model use different tokenizers ({len(policy_tokenizer)} vs "
            f"{len(reward_tokenizer)} tokens): fine, responses are scored as text, re-tokenized by the reward model"
        )
    if not policy_tokenizer.chat_template:
        warnings.append(
            "the policy's tokenizer has no chat template: prompts are fed as plain text, which a chat-tuned "
            "reward model may score poorly"
        )
    return warnings


# ------------------------------------------------------------------------------------------------ memory


def count_parameters(config, causal_lm: bool = True) -> int:
    """Return the number of parameters of a model built from its config, on the meta device (no memory used)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        try:
            model = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config)
        except ValueError:  # an encoder has no causal-LM head
            model = AutoModel.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def model_shape(name: str, causal_lm: bool = True) -> ModelShape:
    """Return the shape the memory estimate reads off a model choice's config (no weights loaded)."""
    config = model_config(name)
    return ModelShape.of(config, count_parameters(getattr(config, "text_config", None) or config, causal_lm))


@dataclass
class RunShape:
    """The batch a run's largest training pass sees, per process."""

    sequences: int  # rows of a pass (RM: rankings x K; DPO: 2 x pairs; GRPO: prompts x G; PPO: a minibatch)
    length: int  # tokens per row, padding included
    answer: int = 0  # tokens per row that get vocabulary logits (SFT and DPO: the answer; PPO, GRPO: max new)
    packed: bool = False  # the reward model's rows: a ranking each, its prompt once (decoders)
    scores: int = 0  # packed: the query-key pairs a head of the largest ranking's attention computes


@dataclass
class Checked:
    """What checking a run found: problems block it, warnings do not; the memory estimate when it was made."""

    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    memory: MemoryEstimate | None = None


def estimate_run(config, shape: RunShape, layout: Layout | None = None) -> MemoryEstimate:
    """Return what one device needs for a run of this config on batches of this shape, from the models and passes
    its trainer declares (`memory_plan` beside the code that loads them)."""
    layout = layout or read_layout(config.accelerate_config)
    device = training_choice(config.device, config.precision, layout.deepspeed)
    if isinstance(config, RewardConfig):
        from rm.train import memory_plan

        backbone = model_shape(config.backbone, False)
        models, passes = memory_plan(config, backbone, shape.sequences, shape.length, device, shape.scores)
    else:
        from policy import dpo, grpo, ppo, sft

        policy_shape = model_shape(config.model)
        if config.samples:
            rewards = [model_shape(run, False) for run in _reward_model_folders(config)]
            plan = (grpo if config.algo == "grpo" else ppo).memory_plan
            models, passes = plan(config, policy_shape, rewards, shape.length, device)
        else:
            plan = (dpo if config.algo == "dpo" else sft).memory_plan
            models, passes = plan(config, policy_shape, shape.length, shape.answer, device)
    return estimate(models, passes, layout, device)


def knobs_that_fit(config, shape: RunShape, available: int) -> list[str]:
    """Return the changes, one at a time, under which the run's estimate fits the free memory."""
    trials = []

    def trial(knob: str, trial_shape: RunShape = shape, **changes):
        try:
            trials.append((knob, replace(config, **changes), trial_shape))
        except ValueError:  # a change this config refuses (PPO's minibatches must divide the batch)
            pass

    if not config.gradient_checkpointing:
        trial("turn on gradient checkpointing", gradient_checkpointing=True)
    name = "batch_size" if isinstance(config, RewardConfig) else "batch_prompts"
    rows = getattr(config, name)
    for smaller in sorted({rows // 2, rows // 4, 1} - {0, rows}, reverse=True):
        trial(f"lower {name} to {smaller}", replace(shape, sequences=max(1, shape.sequences * smaller // rows)),
              **{name: smaller})  # fmt: skip
    if shape.length > 128:
        half = replace(shape, length=shape.length // 2, answer=min(shape.answer, shape.length // 2))
        trial(f"cut the inputs to {half.length} tokens (max length)", half)
    if config.lora_rank == 0:
        trial("use LoRA (rank 16) instead of full fine-tuning", lora_rank=16)
    deepspeed = read_layout(config.accelerate_config).deepspeed
    native = training_choice(config.device, "auto", deepspeed).dtype != training_choice(config.device, "fp32").dtype
    if native and config.precision == "fp32":  # the device computes bf16 natively
        trial("compute in bf16 (precision 'bf16')", precision="bf16")
    fitting = [knob for knob, trial_config, trial_shape in trials
               if estimate_run(trial_config, trial_shape).total <= available]  # fmt: skip
    if training_choice(config.device, config.precision).device.type == "cuda":
        for layout in ("zero2-8gpu", "zero3-8gpu"):
            if estimate_run(config, shape, read_layout(layout)).total <= available:
                fitting.append(f"shard it: --accelerate-config {layout}")
                break
    return fitting


def check_memory(config, shape: RunShape) -> tuple[list[str], list[str], MemoryEstimate | None]:
    """Return (problems, warnings, estimate) of a run on this machine: blocked when over the free memory (naming
    the changes that would make it fit), warned when close."""
    try:
        device = training_choice(config.device, config.precision).device.type
    except (RuntimeError, ValueError) as error:  # 'cuda' without a GPU, 'bf16' on a GPU without it
        return [str(error)], [], None
    layout = read_layout(config.accelerate_config)
    found = estimate_run(config, shape, layout)
    available = available_memory(device)
    need, free = _gib(found.total), _gib(available)
    if found.total > available:
        knobs = knobs_that_fit(config, shape, available)
        hint = f"; it would fit if you {' or '.join(knobs)}" if knobs else "; no single change makes it fit"
        return (
            [
                f"not enough memory on {device} ({layout.describe()}): a step needs about {need} GiB per device "
                f"({found.describe()}) but {free} GiB are free{hint}"
            ],
            [],
            found,
        )
    if found.total > MEMORY_WARN_SHARE * available:
        return [], [f"memory is tight on {device} ({layout.describe()}): about {need} GiB of {free} GiB free "
                    f"({found.describe()})"], found  # fmt: skip
    return [], [], found


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f}"


def _reward_model_folders(config) -> list[str]:
    """Return the model folders of the reward-model runs a PPO or GRPO run scores with."""
    runs = [run for run in reward_model_runs(config) if run]  # an unnamed one: check_reward_run says so
    return [str(Path(run) / "model") if (Path(run) / "model").is_dir() else run for run in runs]


def longest_tokens(tokenizer, prompts: list, limit: int, sample: int = 2000) -> int:
    """Return the longest of (up to `sample` of) the prompts in chat-template tokens, capped at `limit`."""
    longest = max((len(chat_prompt_ids(tokenizer, prompt)) for prompt in prompts[:sample]), default=1)
    return max(1, min(limit, longest))


def check_prompt_lengths(tokenizer, prompts: list, limit: int, prompt_ids: list | None = None) -> list[str]:
    """Return a problem naming (by id) the prompts whose last user turn alone takes more than `limit` tokens.

    Longer conversations are fine: the run drops their oldest turns. Text shorter in bytes than the room the
    template leaves cannot be too long (a token is at least a byte), so most prompts are never tokenized here.
    """
    room = limit - len(chat_prompt_ids(tokenizer, "x")) + 1
    too_long = []
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str) and len(prompt.encode("utf-8")) <= room:
            continue
        try:
            chat_prompt_ids(tokenizer, prompt, limit)
        except PromptTooLong:
            too_long.append(str(prompt_ids[index] if prompt_ids else index + 1))
    if not too_long:
        return []
    named = ", ".join(too_long[:10]) + (f" and {len(too_long) - 10} more" if len(too_long) > 10 else "")
    return [
        f"prompt(s) {named}: the last user turn alone takes more than max prompt tokens ({limit}) in the chat "
        "template; raise the limit, or remove or shorten those prompts"
    ]


# ------------------------------------------------------------------------------------ the two launch forms


def reward_model_checks(config, items: list[dict], online: bool | None) -> Checked:
    """Return the problems, warnings and memory estimate of a reward model with this config on these ranked items."""
    problems = check_rankings(items) + check_model(config.backbone, online, "backbone")
    if problems:
        return Checked(problems)
    try:
        tokenizer = load_local_tokenizer(config.backbone)
    except (OSError, ValueError):
        return Checked(
            problems, [f"backbone {config.backbone!r} will be downloaded by the job; memory was not checked"]
        )
    problems += check_tokenizer(tokenizer, "backbone")
    if problems:
        return Checked(problems)
    return Checked(*check_memory(config, reward_model_shape(config, items, tokenizer)))


def reward_model_shape(config, items: list[dict], tokenizer, sample: int = 2000) -> RunShape:
    """Return the largest pass of a reward model on (up to `sample` of) these ranked items, per process: a decoder's
    rankings packed one to a row (the prompt once, then each response), an encoder's responses one to a row."""
    from rm.model import attention_scores

    rankings = math.ceil(config.batch_size / read_layout(config.accelerate_config).processes)
    items = items[:sample]
    if packs_rankings(config.backbone):
        rows, scores = [], []
        for item in items:
            prompt = len(chat_prompt_ids(tokenizer, item["prompt"]))
            answers = [min(_tokens(tokenizer, text) + 1, config.max_length)  # + EOS; a response keeps its start
                       for group in item["ranked_responses"] for text in group]  # fmt: skip
            sequences = [min(prompt + answer, config.max_length) for answer in answers]  # the prompt cut to fit
            shared = min(sequence - answer for sequence, answer in zip(sequences, answers, strict=True))
            rows.append(shared + sum(sequence - shared for sequence in sequences))
            scores.append(attention_scores(shared, [sequence - shared for sequence in sequences]))
        return RunShape(rankings, max(rows, default=1), packed=True, scores=max(scores, default=1))
    texts = [plain_layout(item["prompt"]) + "\n" + text for item in items for group in item["ranked_responses"]
             for text in group]  # fmt: skip
    responses_per_item = max(sum(len(group) for group in item["ranked_responses"]) for item in items)
    return RunShape(rankings * responses_per_item, longest_tokens(tokenizer, texts, config.max_length))


def packs_rankings(backbone: str) -> bool:
    """Return whether a reward model on this backbone reads each response's last token (a decoder), so that its
    training packs each ranking in one row (built on the meta device: no weights read)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rm.model import reads_last_token

    with torch.device("meta"):
        return reads_last_token(AutoModelForSequenceClassification.from_config(model_config(backbone)))


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def policy_checks(
    config, prompts: list, examples: list[dict], online: bool | None, prompt_ids: list | None = None
) -> Checked:
    """Return the problems, warnings and memory estimate of a PPO, GRPO, DPO or SFT run with this config
    (`examples`: the pairs or demonstrations a DPO or SFT run learns from; `prompt_ids` name long prompts)."""
    problems = check_model(config.model, online, "policy")
    if not config.samples:
        problems += check_pairs(len(examples)) if config.algo == "dpo" else check_demonstrations(len(examples))
    else:
        problems += check_prompts(len(prompts))
        for reward_run in reward_model_runs(config):
            problems += check_reward_run(reward_run)
    if problems:
        return Checked(problems)
    try:
        policy_tokenizer = load_local_tokenizer(config.model)
    except (OSError, ValueError):
        return Checked(problems, [f"policy {config.model!r} will be downloaded by the job; memory was not checked"])
    reward_tokenizer = None
    if config.samples and reward_model_runs(config):
        try:
            reward_tokenizer = load_local_tokenizer(reward_model_runs(config)[0])
        except (OSError, ValueError) as error:
            return Checked([f"the reward model's tokenizer does not load: {_first_line(error)}"])
        problems += check_tokenizer(reward_tokenizer, "reward model")
    problems += check_tokenizer(policy_tokenizer, "policy")
    if config.samples and not problems:
        problems += check_prompt_lengths(policy_tokenizer, prompts, config.max_prompt_tokens, prompt_ids)
    if not config.samples and not problems:
        try:
            shape = example_shape(config, examples, policy_tokenizer)
        except ValueError as error:  # a prompt whose last turn alone is over the limit, named
            problems.append(str(error))
    if problems:
        return Checked(problems)
    warnings = tokenizer_warnings(policy_tokenizer, reward_tokenizer)
    if config.samples:
        shape = RunShape(0, longest_tokens(policy_tokenizer, prompts, config.max_prompt_tokens) + config.max_new_tokens)
    memory_problems, memory_warnings, found = check_memory(config, shape)
    return Checked(memory_problems, warnings + memory_warnings, found)


def reward_model_runs(config) -> list[str]:
    """Return the reward-model runs a PPO or GRPO run scores with (its `rewards`' model components, or its one)."""
    if not config.samples:
        return []
    try:
        specs = config.reward_specs()
    except ValueError:  # no reward named: check_reward_run says so
        return [config.reward_model]
    return [spec.target for spec in specs if spec.kind == "model"]


def example_shape(config, examples: list[dict], tokenizer, sample: int = 2000) -> RunShape:
    """Return the longest row and answer of (up to `sample` of) a DPO or SFT run's examples, tokenized as the run
    tokenizes them (cut to max_length); a prompt too long to fit raises ValueError naming it."""
    import datasets

    from policy.pairs import tokenize_pairs
    from policy.sft import as_demonstration, tokenize_demonstrations

    rows = examples[:sample]
    if config.algo == "dpo":
        tokenized = tokenize_pairs(
            tokenizer, datasets.Dataset.from_list(rows), config.max_length, config.max_prompt_tokens
        )
        answers = [max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in tokenized]
    else:
        demonstrations = [as_demonstration(row, number, "demonstrations") for number, row in enumerate(rows)]
        tokenized = tokenize_demonstrations(tokenizer, demonstrations, config.max_length, config.max_prompt_tokens)
        answers = [len(e["completion_ids"]) for e in tokenized]
    lengths = [len(e["prompt_ids"]) + answer for e, answer in zip(tokenized, answers, strict=True)]
    return RunShape(0, max(lengths, default=1), max(answers, default=1))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
