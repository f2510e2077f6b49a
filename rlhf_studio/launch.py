"""Check a training run before it is queued, queue it, and follow it: the logic behind the Train and Jobs pages.

Every check returns a list of problems (empty: fine), so the app shows all of them at once and queues
nothing while any remain. Minutes into a job is the wrong time to learn that the reward-model folder is
missing or the model does not fit in memory.

A job never opens the app's DuckDB file (DuckDB lets one process write it): its data is exported into
`<run_dir>/inputs/` first, and `record_finished_run` records the run in the registry when it ends well.
"""

import json
import math
import os
import socket
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from data import jobs as job_table
from data import registry
from data.export import export, ranked_items
from data.prompts import browse_prompts
from data.store import Store
from rlhf_studio import jobs
from rlhf_studio.models import ModelNotFound, resolve_model
from rlhf_studio.runs import read_metrics

MIN_RANKED_ITEMS = 4  # ranked items with at least one comparison (a ranking of ties teaches nothing)
MIN_PROMPTS = 2  # distinct prompts, so the split by prompt leaves a validation set
MIN_DPO_PAIRS = 4
MIN_POLICY_PROMPTS = 1
MEMORY_WARN_SHARE = 0.8  # warn when the estimate uses more than this share of the free memory


@dataclass
class Launch:
    """What pressing Launch did: the problems that blocked it, or the queued job and its command."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    job_id: int | None = None
    command: str | None = None
    run_dir: Path | None = None


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


def check_memory(estimate: MemoryEstimate, available: int, device: str) -> tuple[list[str], list[str]]:
    """Return (problems, warnings): blocked when the estimate exceeds the free memory, warned when close."""
    need, free = _gib(estimate.total), _gib(available)
    parts = (
        f"weights {_gib(estimate.weights)}, gradients + Adam {_gib(estimate.training_state)}, "
        f"reference {_gib(estimate.reference)}, activations {_gib(estimate.activations)}"
    )
    if estimate.total > available:
        return [
            f"not enough memory on {device}: a step needs about {need} GiB ({parts}) but {free} GiB are free; "
            "lower the batch size or the maximum length, or use LoRA (rank > 0)"
        ], []
    if estimate.total > MEMORY_WARN_SHARE * available:
        return [], [f"memory is tight on {device}: about {need} GiB of {free} GiB free ({parts})"]
    return [], []


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f}"


def _device_of(config_device: str) -> tuple[str, int]:
    """Return the device a job will train on and its bytes per value (bf16 on CUDA, fp32 on CPU)."""
    from rlhf_studio.models import pick_device

    choice = pick_device(None if config_device == "auto" else config_device)
    return choice.device.type, 2 if choice.device.type == "cuda" else 4


def memory_check(
    model: str, device: str, sequences: int, length: int, lora_rank: int, causal: bool, reference: bool
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
    return check_memory(estimate, available_memory(device_type), device_type)


def longest_tokens(tokenizer, texts: list[str], limit: int, sample: int = 2000) -> int:
    """Return the longest of (up to `sample` of) the texts in tokens, capped at `limit`."""
    longest = max((len(ids) for ids in tokenizer(texts[:sample])["input_ids"]), default=1)
    return max(1, min(limit, longest))


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
    sequences = config.batch_size * responses_per_item
    return memory_check(config.backbone, config.device, sequences, length, config.lora_rank, False, False)


def policy_checks(config, prompts: list[str], pair_count: int, online: bool | None) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) for a PPO, GRPO or DPO run with this config."""
    problems = check_model(config.model, online, "policy")
    if config.algo == "dpo":
        problems += check_pairs(pair_count)
    else:
        problems += check_prompts(len(prompts))
        if config.reward_kind == "model":
            problems += check_reward_run(config.reward_model)
    if problems:
        return problems, []
    try:
        policy_tokenizer = load_local_tokenizer(config.model)
    except (OSError, ValueError):
        return problems, [f"policy {config.model!r} will be downloaded by the job; memory was not checked"]
    reward_tokenizer = None
    if config.algo != "dpo" and config.reward_kind == "model":
        try:
            reward_tokenizer = load_local_tokenizer(config.reward_model)
        except (OSError, ValueError) as error:
            return [f"the reward model's tokenizer does not load: {_first_line(error)}"], []
        problems += check_tokenizer(reward_tokenizer, "reward model")
    problems += check_tokenizer(policy_tokenizer, "policy")
    if problems:
        return problems, []
    warnings = tokenizer_warnings(policy_tokenizer, reward_tokenizer)
    sequences, length = _policy_batch(config, prompts, policy_tokenizer)
    keeps_reference = config.algo != "dpo"  # DPO caches the reference log-probs, then drops the copy
    memory_problems, memory_warnings = memory_check(
        config.model, config.device, sequences, length, config.lora_rank, True, keeps_reference
    )
    return memory_problems, warnings + memory_warnings


def _policy_batch(config, prompts: list[str], tokenizer) -> tuple[int, int]:
    """Return (sequences per step, tokens per sequence) of a policy run."""
    if config.algo == "dpo":
        return 2 * config.batch_prompts, config.max_length
    prompt_tokens = longest_tokens(tokenizer, prompts, config.max_prompt_tokens)
    sequences = config.batch_prompts * (config.num_generations if config.algo == "grpo" else 1)
    return sequences, prompt_tokens + config.max_new_tokens


def config_flags(config, given=None) -> list[str]:
    """Return the CLI flags of the config's fields (or of those `given`) that differ from their defaults.

    Values derived in __post_init__ (a learning rate chosen from the LoRA rank) stay derived in the job too.
    """
    flags = []
    for spec in fields(config):
        if given is not None and spec.name not in given and spec.name != "output_dir":
            continue
        value = getattr(config, spec.name)
        default = None if spec.default is MISSING else spec.default
        if value is None or (value == default and spec.name != "output_dir"):
            continue
        flag = "--" + spec.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + spec.name.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def launch_reward_model(store: Store, values: dict, online: bool | None = None) -> Launch:
    """Check, then export the rankings into a new run folder and queue `train-rm`; nothing is queued on a problem."""
    from rm.config import RewardConfig

    run_dir = jobs.new_run_dir("train-rm")
    rankings = inputs_dir(run_dir) / "rankings.jsonl"
    try:
        config = RewardConfig(**values | {"output_dir": str(run_dir), "rankings": str(rankings)})
    except (TypeError, ValueError) as error:
        return Launch(problems=[str(error)])
    problems, warnings = reward_model_checks(config, ranked_items(store), online)
    if problems:
        return Launch(problems, warnings)
    export(store, rankings, kind="rankings", fmt="jsonl")
    return _queue(store, "train-rm", config_flags(config, {*values, "rankings"}), run_dir, warnings)


def launch_policy(store: Store, algo: str, values: dict, online: bool | None = None) -> Launch:
    """Check, then export prompts (and DPO pairs) into a new run folder and queue `train-policy`."""
    from policy.config import CONFIGS

    if algo not in CONFIGS:
        return Launch(problems=[f"unknown algorithm {algo!r}; expected one of {sorted(CONFIGS)}"])
    run_dir = jobs.new_run_dir(f"train-{algo}")
    try:
        config = CONFIGS[algo](**values | {"output_dir": str(run_dir)})
        config.check_reward_source()
    except (TypeError, ValueError) as error:
        return Launch(problems=[str(error)])
    prompts = browse_prompts(store, "", limit=10_000_000)["text"].tolist()
    pairs = inputs_dir(run_dir) / "pairs.jsonl"
    pair_count = _export_pairs(store, pairs) if algo == "dpo" else 0
    problems, warnings = policy_checks(config, prompts, pair_count, online)
    if problems:
        _remove_inputs(run_dir)
        return Launch(problems, warnings)
    if algo == "dpo":
        config.pairs_file = str(pairs)
    else:
        config.prompts_file = str(_write_prompts(prompts, inputs_dir(run_dir) / "prompts.jsonl"))
    given = {*values, "prompts_file", "pairs_file"}
    return _queue(store, "train-policy", ["--algo", algo, *config_flags(config, given)], run_dir, warnings)


def _write_prompts(prompts: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in prompts))
    return path


def _export_pairs(store: Store, path: Path) -> int:
    return export(store, path, kind="pairs", fmt="jsonl")


def _remove_inputs(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


def _queue(store: Store, kind: str, args: list[str], run_dir: Path, warnings: list[str]) -> Launch:
    job_id = jobs.submit(store, kind, args, run_dir)
    command = jobs.command_line(job_table.get_job(store, job_id)["argv"])
    return Launch([], warnings, job_id, command, run_dir)


def inputs_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "inputs"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# ------------------------------------------------------------------------------------------ following a job


def read_run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def total_steps(job_kind: str, config: dict, run_dir: str | Path) -> int | None:
    """Return how many optimizer steps the run will take, from its config (and data.json for a reward model)."""
    if job_kind == "train-rm":
        try:
            record = json.loads((Path(run_dir) / "data.json").read_text())
        except (OSError, ValueError):
            return None
        if "planned_steps" in record:  # epochs chosen from the data size; early stopping may end sooner
            return record["planned_steps"]
        if "train_ranking_ids" not in record:
            return None
        return (config.get("epochs") or 1) * math.ceil(len(record["train_ranking_ids"]) / config.get("batch_size", 1))
    if config.get("algo") in ("ppo", "grpo"):
        return config.get("steps")
    return None


def progress(job_kind: str, run_dir: str | Path, records: list[dict]) -> tuple[float, str]:
    """Return (fraction done in [0, 1], a caption) from metrics.jsonl against the config's steps or epochs."""
    config = read_run_config(run_dir)
    steps_done = max((record.get("step", 0) for record in records), default=0)
    total = total_steps(job_kind, config, run_dir)
    if total:
        return min(1.0, steps_done / total), f"step {steps_done} / {total}"
    epochs = config.get("epochs")
    epoch_done = max((record.get("epoch", 0) for record in records), default=0)
    if epochs:
        return min(1.0, epoch_done / epochs), f"epoch {epoch_done:.2f} / {epochs} (step {steps_done})"
    return 0.0, f"step {steps_done}"


PLOTTED = {
    "train-rm": ("train/loss", "val/loss", "val/accuracy", "train/accuracy"),
    "ppo": ("objective/reward_mean", "objective/kl", "policy/entropy", "charts/response_length"),
    "grpo": ("objective/reward_mean", "objective/kl", "policy/entropy", "charts/response_length"),
    "dpo": ("loss", "rewards/margins", "rewards/accuracies", "eval/accuracy"),
}


def plotted_metrics(job_kind: str, config: dict) -> tuple[str, ...]:
    """Return the metric names worth plotting for a job: what its trainer writes to metrics.jsonl."""
    return PLOTTED.get("train-rm" if job_kind == "train-rm" else config.get("algo", ""), ())


def metric_rows(records: list[dict], names: tuple[str, ...]) -> list[dict]:
    """Return long-form rows (step, metric, value) of the named metrics, for one line chart per metric."""
    return [
        {"step": record["step"], "metric": name, "value": record[name]}
        for record in records
        for name in names
        if isinstance(record.get(name), int | float) and not isinstance(record.get(name), bool) and "step" in record
    ]


# --------------------------------------------------------------------------------------------- the registry


def final_metrics(job_kind: str, run_dir: str | Path) -> dict:
    """Return a run's headline numbers: a reward model's kept epoch (summary.json), else every metric's last value."""
    summary = Path(run_dir) / "summary.json"
    if job_kind == "train-rm" and summary.exists():
        return json.loads(summary.read_text())
    final = {}
    for record in read_metrics(run_dir):
        final |= record
    return final


def record_finished_run(store: Store, job: dict) -> int | None:
    """Record a finished training job in the registry (JobRunner's on_done): its kind, folder, parent and metrics."""
    if job["kind"] not in ("train-rm", "train-policy"):
        return None
    run_dir = Path(job["run_dir"])
    config = read_run_config(run_dir)
    metrics = final_metrics(job["kind"], run_dir)
    try:
        existing = registry.get_model(store, run_dir.name)
    except KeyError:
        existing = None
    if existing is not None:
        registry.update_metrics(store, existing["id"], metrics)
        return existing["id"]
    kind = "reward" if job["kind"] == "train-rm" else "policy"
    return registry.record_model(
        store, kind, run_dir.name, str(run_dir.resolve()), _parent_id(store, kind, config), config, metrics
    )


def _parent_id(store: Store, kind: str, config: dict) -> int | None:
    """Return the registry id of the run's parent: the reward-model run a policy learned from, else its base model."""
    if kind == "policy" and config.get("algo") != "dpo" and config.get("reward_model"):
        found = _registered(store, config["reward_model"])
        if found is not None:
            return found
    base = config.get("backbone") if kind == "reward" else config.get("model")
    if not base:
        return None
    return _registered(store, base) or registry.record_model(store, "base", base, base)


def _registered(store: Store, name_or_path: str) -> int | None:
    """Return the id of a recorded model with this name or folder."""
    try:
        return registry.get_model(store, name_or_path)["id"]
    except KeyError:
        pass
    wanted = str(Path(name_or_path).expanduser().resolve())
    for model in registry.list_models(store):
        if model["path"] and str(Path(model["path"]).expanduser().resolve()) == wanted:
            return model["id"]
    return None
