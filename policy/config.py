"""One config dataclass per policy-optimization job: the same object behind the CLI flags, the app's forms and run.json.

Every field carries its help text in `metadata["help"]`; `orchestration.train_policy_command` turns fields into flags from it.
"""

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.fields import DEVICES, PRECISION_HELP, PRECISIONS, check_choices, documented
from core.layouts import ACCELERATE_CONFIG_HELP, layout_file
from core.paths import runs_dir
from core.runs import REPORT_TO, REPORT_TO_HELP, check_trackers
from policy.reward_specs import RewardSpec, parse_rewards, reward_specs_of

REWARD_KINDS = ("model", "function")
GRPO_LOSS_TYPES = ("grpo", "dapo", "dr_grpo")  # each one a function in policy/grpo.py LOSS_AVERAGING
REWARD_SCALINGS = ("group", "batch", "none")
DPO_LOSS_TYPES = ("sigmoid", "ipo")
DPO_FORWARD_MODES = ("auto", "shared_prompt", "padded")  # how policy/dpo.py lays chosen and rejected out for a forward
VALUE_MODELS = ("shared", "separate")


@dataclass
class RunConfig:
    """What every policy run shares: the model, the prompts, sampling, the optimizer and where the run goes."""

    model: str = documented(
        "default", "policy to start from: 'default', a hub id, a model folder or a previous policy run"
    )
    lora_rank: int = documented(
        16, "LoRA rank r (Hu et al. 2021); 0 = full fine-tuning with an explicit reference copy"
    )
    lora_alpha: int = documented(32, "LoRA scaling alpha (update is alpha/r * B A)")
    learning_rate: float = documented(1e-5, "Adam learning rate (LoRA usually wants 10x more than full fine-tuning)")
    steps: int = documented(100, "optimizer steps, one rollout batch each (DPO: ignored, see epochs)")
    batch_prompts: int = documented(8, "prompts per step on each process (DPO: preference pairs per step)")
    max_new_tokens: int = documented(64, "longest response sampled during training")
    max_prompt_tokens: int = documented(512, "prompts longer than this keep only their last tokens")
    temperature: float = documented(1.0, "sampling temperature; log-probs for ratios and KL use the same temperature")
    missing_eos_penalty: float | None = documented(
        None, "subtract this from the reward of a response cut by max_new_tokens before its EOS (None: no penalty)"
    )
    max_grad_norm: float = documented(1.0, "clip the gradient's global norm to this")
    seed: int = documented(0, "random seed (each data-parallel process adds its rank)")
    output_dir: str | None = documented(
        None, "run folder: metrics.jsonl, config, checkpoints (default: runs/<algo>-<time>)"
    )
    save_every: int = documented(0, "also checkpoint every N steps (0: only at the end)")
    reward_model: str | None = documented(None, "reward-model run folder or registry name (reward_kind='model')")
    reward_kind: str = documented(
        "model", "'model': score with a reward-model run; 'function': a Python reward function", REWARD_KINDS
    )
    reward_function: str | None = documented(
        None, "'package.module:function' taking (prompts, responses) -> list of floats (reward_kind='function')"
    )
    rewards: str | None = documented(
        None,
        "weighted reward components, comma-separated SOURCE=WEIGHT, SOURCE a 'package.module:function' or"
        " 'model:RUN' (a reward-model run folder or registry name); e.g. 'policy.rewards:exact_answer=1,"
        "policy.rewards:format_answer_line=0.5,model:runs/rm-x=1'. The run optimizes the weighted sum; set, it"
        " replaces reward_kind, reward_model and reward_function",
    )
    prompts_file: str | None = documented(
        None, "prompts from a .jsonl/.csv/.parquet file or datasets folder (default: DuckDB)"
    )
    device: str = documented("auto", "'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'", DEVICES)
    precision: str = documented("auto", PRECISION_HELP, PRECISIONS)
    accelerate_config: str | None = documented(None, ACCELERATE_CONFIG_HELP)
    report_to: str = documented("none", REPORT_TO_HELP, REPORT_TO)
    gradient_checkpointing: bool = documented(
        False,
        "recompute each layer's activations in the backward pass instead of keeping them: a fraction of the"
        " activation memory for about a third more compute per training pass",
    )
    log_every: int = documented(
        1,
        "read metrics off the device and write a record every N steps (and at the first and last step); a PPO or"
        " GRPO step samples for seconds, so reading each one costs nothing",
    )

    def __post_init__(self):
        if self.output_dir is None:
            self.output_dir = str(runs_dir() / f"{self.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
        positive = ("steps", "batch_prompts", "max_new_tokens", "max_prompt_tokens", "lora_alpha", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be >= 0, got {self.save_every}")
        check_choices(self)
        check_trackers(self.report_to)
        if self.accelerate_config:
            layout_file(
                self.accelerate_config
            )  # a clear error for an unknown name or a missing file  # a missing tracker package fails now, not after the model has loaded
        if self.rewards is not None:
            parse_rewards(self.rewards)  # a clear error now for a malformed component or weight
        if self.reward_function is not None and ":" not in self.reward_function:
            raise ValueError(f"reward_function must look like 'package.module:function', got {self.reward_function!r}")

    def check_reward_source(self) -> None:
        """Raise unless the reward the run needs is named (PPO and GRPO need one, DPO does not)."""
        if self.rewards:
            return
        if self.reward_kind == "function" and not self.reward_function:
            raise ValueError("reward_kind='function' needs reward_function ('package.module:function')")
        if self.reward_kind == "model" and not self.reward_model:
            raise ValueError("no reward: name a reward model (a reward-model run folder or registry name)")

    def reward_specs(self) -> list[RewardSpec]:
        """Return the run's reward components: `rewards` parsed, else the one reward_kind names (weight 1)."""
        self.check_reward_source()
        return reward_specs_of(self.rewards, self.reward_kind, self.reward_function, self.reward_model)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        """Write the config beside the run, so the run can be traced and resumed with the same settings."""
        path = Path(folder) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"algo": self.algo, **self.to_dict()}, indent=2))
        return path

    @classmethod
    def from_dict(cls, values: dict):
        """Return a config from saved values, ignoring keys the class does not know (such as 'algo')."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    algo = "run"
    samples = True  # PPO and GRPO sample responses to prompts and need a reward; DPO and SFT learn from given data


@dataclass
class PPOConfig(RunConfig):
    """PPO with a KL-shaped per-token reward and GAE (Schulman et al. 2017; Ziegler et al. 2019; Ouyang et al. 2022)."""

    kl_coef: float = documented(0.05, "beta: weight of the per-token KL(policy || reference) penalty in the reward")
    adaptive_kl: bool = documented(False, "adapt kl_coef toward target_kl (Ziegler et al. 2019 adaptive controller)")
    target_kl: float = documented(6.0, "adaptive KL: the KL per response the controller aims for")
    kl_horizon: int = documented(10000, "adaptive KL: horizon in samples; larger adapts more slowly")
    gamma: float = documented(1.0, "GAE discount gamma (1: no discount within a response)")
    lam: float = documented(0.95, "GAE lambda")
    clip_eps: float = documented(0.2, "policy ratio clip epsilon")
    value_clip_eps: float = documented(0.2, "value clip: new values stay within this of the rollout's values")
    vf_coef: float = documented(0.1, "weight of the value loss")
    ppo_epochs: int = documented(4, "passes over each rollout batch")
    num_minibatches: int = documented(1, "minibatches per pass (batch_prompts must divide evenly)")
    value_model: str = documented(
        "shared", "'shared': value head on the policy trunk; 'separate': own copy of the model", VALUE_MODELS
    )

    algo = "ppo"

    def __post_init__(self):
        super().__post_init__()
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if not self.target_kl > 0 or self.kl_horizon < 1:
            raise ValueError("target_kl must be > 0 and kl_horizon >= 1")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= lam <= 1, got gamma={self.gamma}, lam={self.lam}")
        if not self.clip_eps > 0 or not self.value_clip_eps > 0:
            raise ValueError("clip_eps and value_clip_eps must be > 0")
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef}")
        if self.ppo_epochs < 1 or self.num_minibatches < 1:
            raise ValueError("ppo_epochs and num_minibatches must be >= 1")
        if self.batch_prompts % self.num_minibatches:
            raise ValueError(
                f"batch_prompts ({self.batch_prompts}) must be divisible by num_minibatches ({self.num_minibatches})"
            )


@dataclass
class GRPOConfig(RunConfig):
    """Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath), with the DAPO and Dr. GRPO variants."""

    num_generations: int = documented(4, "G: responses sampled per prompt; advantages are relative within the group")
    beta: float = documented(0.0, "weight of the k3 KL to the reference; 0 skips the reference pass entirely")
    epsilon_low: float = documented(0.2, "ratio clip below: 1 - epsilon_low")
    epsilon_high: float = documented(0.2, "ratio clip above: 1 + epsilon_high (DAPO's clip-higher uses 0.28)")
    num_iterations: int = documented(1, "mu: optimizer passes per rollout batch (1: old log-probs = detached current)")
    loss_type: str = documented(
        "dapo",
        "'grpo': mean per sequence then over sequences; 'dapo': over all valid tokens; 'dr_grpo': B x max_len",
        GRPO_LOSS_TYPES,
    )
    scale_rewards: str = documented(
        "group",
        "advantage scaling: 'group' std (GRPO), 'batch' std, or 'none' (Dr. GRPO: mean-centred only)",
        REWARD_SCALINGS,
    )

    algo = "grpo"

    def __post_init__(self):
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (advantages compare within a group), got {self.num_generations}"
            )
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.epsilon_low < 0 or self.epsilon_high < 0:
            raise ValueError("epsilon_low and epsilon_high must be >= 0")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")


@dataclass
class DPOConfig(RunConfig):
    """Direct Preference Optimization (Rafailov et al. 2023) on chosen/rejected pairs, with IPO (Azar et al. 2023)."""

    beta: float = documented(0.1, "beta: strength of the implicit KL to the reference")
    loss_type: str = documented("sigmoid", "'sigmoid' (DPO) or 'ipo'", DPO_LOSS_TYPES)
    label_smoothing: float = documented(0.0, "conservative DPO: assumed fraction of flipped labels, in [0, 0.5)")
    epochs: int = documented(1, "passes over the preference pairs")
    pairs_file: str | None = documented(
        None, "chosen/rejected pairs (.jsonl/.parquet with prompt, chosen, rejected); default: DuckDB rankings"
    )
    max_length: int = documented(512, "prompt + response tokens kept per example (longer ones are truncated)")
    gradient_checkpointing: bool = documented(
        True,
        "recompute each layer's activations in the backward pass instead of keeping them: a fraction of the"
        " activation memory (the most of a step at max_length 512) for about a third more compute",
    )
    forward_mode: str = documented(
        "auto",
        "'shared_prompt': each prompt runs once for both responses (fastest on CPU); 'padded': one padded pass over"
        " chosen and rejected, pairs bucketed by length (fastest on CUDA); 'auto': by device",
        DPO_FORWARD_MODES,
    )
    log_every: int = documented(
        10, "read metrics off the device and write a record every N steps (and at the first and last step)"
    )  # a DPO step is short: a read each step would stall a GPU

    algo = "dpo"
    samples = False

    def check_reward_source(self) -> None:
        """DPO learns from preference pairs: it needs no reward."""

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss_type == "ipo":
            raise ValueError("label_smoothing (conservative DPO) applies to loss_type 'sigmoid', not 'ipo'")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")


@dataclass
class SFTConfig(RunConfig):
    """Supervised fine-tuning on demonstrations, completion-only loss (the first stage: Ouyang et al. 2022)."""

    learning_rate: float = documented(2e-4, "Adam learning rate (LoRA usually wants 10x more than full fine-tuning)")
    epochs: int = documented(2, "passes over the demonstrations")
    sft_file: str | None = documented(
        None,
        "demonstrations (.jsonl/.parquet in TRL's prompt/completion or messages format); default: the best-ranked"
        " response of each DuckDB ranking",
    )
    max_length: int = documented(512, "prompt + answer tokens kept per example (longer ones are truncated)")
    gradient_checkpointing: bool = documented(
        True,
        "recompute each layer's activations in the backward pass instead of keeping them: a fraction of the"
        " activation memory (the most of a step at max_length 512) for about a third more compute",
    )
    log_every: int = documented(
        10, "read metrics off the device and write a record every N steps (and at the first and last step)"
    )

    algo = "sft"
    samples = False

    def check_reward_source(self) -> None:
        """SFT imitates demonstrations: it needs no reward."""

    def __post_init__(self):
        super().__post_init__()
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")


CONFIGS = {"ppo": PPOConfig, "grpo": GRPOConfig, "dpo": DPOConfig, "sft": SFTConfig}
