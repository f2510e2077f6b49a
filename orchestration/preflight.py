"""Check a training run before it is queued: data, models, tokenizers, memory.

Every check returns a list of problems (empty: fine), so the app shows all of them at once and queues
nothing while any remain. Minutes into a job is the wrong time to learn that the reward-model folder is
missing or the model does not fit in memory.
"""

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from core.chat import PromptTooLong, chat_prompt_ids
from core.layouts import Layout, read_layout
from core.models import ModelNotFound, pick_device, resolve_model

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


@dataclass
class MemoryEstimate:
    """Bytes a training step needs, by part; rough and on the high side (padding to the longest sequence)."""

    weights: int
    training_state: int  # gradients + Adam's two moments of the trainable parameters (fp32)
    reference: int  # a frozen reference copy (full fine-tuning of a policy)
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.training_state + self.reference + self.activations


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


def estimate_memory(
    parameters: int,
    hidden_size: int,
    layers: int,
    vocab_size: int,
    sequences: int,
    sequence_length: int,
    lora_rank: int,
    bytes_per_value: int,
    lm_logits: bool,
    reference_copy: bool,
) -> MemoryEstimate:
    """Return the memory of one training step of `sequences` sequences of `sequence_length` tokens.

    LoRA on every linear layer trains about 2r/d of the weights; gradients and Adam moments are fp32 (12 bytes).
    Activations: ~24 values per token per layer and hidden unit (attention and MLP inputs kept for backward),
    plus fp32 logits and their log-softmax over the vocabulary for a causal LM.
    """
    trainable = parameters if lora_rank == 0 else min(parameters, parameters * 2 * lora_rank // hidden_size)
    tokens = sequences * sequence_length
    activations = tokens * layers * hidden_size * 24 * bytes_per_value
    if lm_logits:
        activations += tokens * vocab_size * 4 * 2
    return MemoryEstimate(
        weights=parameters * bytes_per_value,
        training_state=trainable * 12,
        reference=parameters * bytes_per_value if reference_copy and lora_rank == 0 else 0,
        activations=activations,
    )


def available_memory(device: str) -> int:
    """Return free bytes: free GPU memory on CUDA, else MemAvailable from /proc/meminfo."""
    if device == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable line")


def per_device(estimate: MemoryEstimate, layout: Layout) -> MemoryEstimate:
    """Return what one device holds under a layout: ZeRO-3 and FSDP split weights (and a reference copy) over the
    processes, ZeRO-2/3 and FSDP split gradients and optimizer state; activations are each process's own batch."""
    return MemoryEstimate(
        weights=estimate.weights // layout.weights_shards,
        training_state=estimate.training_state // layout.training_state_shards,
        reference=estimate.reference // layout.weights_shards,
        activations=estimate.activations,
    )


def fitting_layout(estimate: MemoryEstimate, available: int) -> str | None:
    """Return the first shipped multi-GPU layout under which a device of this size would hold the run, if any."""
    for name in ("zero2-8gpu", "zero3-8gpu"):
        if per_device(estimate, read_layout(name)).total <= available:
            return name
    return None


def check_memory(
    estimate: MemoryEstimate, available: int, device: str, layout: Layout | None = None
) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) for one device under the layout: blocked when over the free memory, warned when
    close. A blocked run names a shipped layout that would fit, when one does."""
    whole, layout = estimate, layout or read_layout(None)
    estimate = per_device(estimate, layout)
    need, free = _gib(estimate.total), _gib(available)
    parts = (
        f"weights {_gib(estimate.weights)}, gradients + Adam {_gib(estimate.training_state)}, "
        f"reference {_gib(estimate.reference)}, activations {_gib(estimate.activations)}"
    )
    if estimate.total > available:
        fits = fitting_layout(whole, available)
        hint = f", or shard it: --accelerate-config {fits} fits devices like this one" if fits else ""
        return [
            f"not enough memory on {device} ({layout.describe()}): a step needs about {need} GiB per device "
            f"({parts}) but {free} GiB are free; lower the batch size or the maximum length, or use LoRA "
            f"(rank > 0){hint}"
        ], []
    if estimate.total > MEMORY_WARN_SHARE * available:
        return [], [f"memory is tight on {device} ({layout.describe()}): about {need} GiB of {free} GiB free ({parts})"]
    return [], []


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f}"


def _device_of(config_device: str) -> tuple[str, int]:
    """Return the device a job will train on and its bytes per value (bf16 on CUDA, fp32 on CPU)."""
    choice = pick_device(config_device)
    return choice.device.type, 2 if choice.device.type == "cuda" else 4


def memory_check(
    model: str,
    device: str,
    sequences: int,
    length: int,
    lora_rank: int,
    causal: bool,
    reference: bool,
    accelerate_config: str | None = None,
) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) of the memory a run would need on this machine."""
    try:
        device_type, bytes_per_value = _device_of(device)
    except RuntimeError as error:  # 'cuda' asked for on a machine without a GPU
        return [str(error)], []
    config = model_config(model)
    config = getattr(config, "text_config", None) or config
    estimate = estimate_memory(
        count_parameters(config, causal), config.hidden_size, config.num_hidden_layers, config.vocab_size,
        sequences, length, lora_rank, bytes_per_value, causal, reference,
    )  # fmt: skip
    return check_memory(estimate, available_memory(device_type), device_type, read_layout(accelerate_config))


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


def reward_model_checks(config, items: list[dict], online: bool | None) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) for training a reward model with this config on these ranked items."""
    problems = check_rankings(items) + check_model(config.backbone, online, "backbone")
    if problems:
        return problems, []
    try:
        tokenizer = load_local_tokenizer(config.backbone)
    except (OSError, ValueError):
        return problems, [f"backbone {config.backbone!r} will be downloaded by the job; memory was not checked"]
    problems += check_tokenizer(tokenizer, "backbone")
    if problems:
        return problems, []
    texts = [item["prompt"] + "\n" + text for item in items for group in item["ranked_responses"] for text in group]
    responses_per_item = max(sum(len(group) for group in item["ranked_responses"]) for item in items)
    length = longest_tokens(tokenizer, texts, config.max_length)
    processes = read_layout(config.accelerate_config).processes  # the batch is split between the processes
    sequences = math.ceil(config.batch_size / processes) * responses_per_item
    return memory_check(
        config.backbone, config.device, sequences, length, config.lora_rank, False, False, config.accelerate_config
    )


def policy_checks(
    config, prompts: list, pair_count: int, online: bool | None, prompt_ids: list | None = None
) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) for a PPO, GRPO, DPO or SFT run with this config (`pair_count`: the pairs or
    demonstrations a DPO or SFT run learns from; `prompt_ids` name long prompts)."""
    problems = check_model(config.model, online, "policy")
    if not config.samples:
        problems += check_pairs(pair_count) if config.algo == "dpo" else check_demonstrations(pair_count)
    else:
        problems += check_prompts(len(prompts))
        for reward_run in reward_model_runs(config):
            problems += check_reward_run(reward_run)
    if problems:
        return problems, []
    try:
        policy_tokenizer = load_local_tokenizer(config.model)
    except (OSError, ValueError):
        return problems, [f"policy {config.model!r} will be downloaded by the job; memory was not checked"]
    reward_tokenizer = None
    if config.samples and reward_model_runs(config):
        try:
            reward_tokenizer = load_local_tokenizer(reward_model_runs(config)[0])
        except (OSError, ValueError) as error:
            return [f"the reward model's tokenizer does not load: {_first_line(error)}"], []
        problems += check_tokenizer(reward_tokenizer, "reward model")
    problems += check_tokenizer(policy_tokenizer, "policy")
    if config.samples and not problems:
        problems += check_prompt_lengths(policy_tokenizer, prompts, config.max_prompt_tokens, prompt_ids)
    if problems:
        return problems, []
    warnings = tokenizer_warnings(policy_tokenizer, reward_tokenizer)
    sequences, length = _policy_batch(config, prompts, policy_tokenizer)
    keeps_reference = config.samples  # DPO caches the reference log-probs, then drops the copy; SFT has none
    memory_problems, memory_warnings = memory_check(
        config.model, config.device, sequences, length, config.lora_rank, True, keeps_reference,
        config.accelerate_config,
    )  # fmt: skip
    return memory_problems, warnings + memory_warnings


def reward_model_runs(config) -> list[str]:
    """Return the reward-model runs a PPO or GRPO run scores with (its `rewards`' model components, or its one)."""
    if not config.samples:
        return []
    try:
        specs = config.reward_specs()
    except ValueError:  # no reward named: check_reward_run says so
        return [config.reward_model]
    return [spec.target for spec in specs if spec.kind == "model"]


def _policy_batch(config, prompts: list[str], tokenizer) -> tuple[int, int]:
    """Return (sequences per step, tokens per sequence) of a policy run."""
    if not config.samples:
        return (2 if config.algo == "dpo" else 1) * config.batch_prompts, config.max_length
    prompt_tokens = longest_tokens(tokenizer, prompts, config.max_prompt_tokens)
    sequences = config.batch_prompts * (config.num_generations if config.algo == "grpo" else 1)
    return sequences, prompt_tokens + config.max_new_tokens


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
