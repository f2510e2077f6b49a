"""Keep responses ready ahead of the annotators, so the next item appears at once after a submit."""

import logging
import threading
import time
from dataclasses import dataclass

from core.generation import Engine, SamplingParams, default_batch_rows, default_max_new_tokens, sample_prompts
from core.models import load_causal_lm
from data import annotation
from data.registry import path_of
from data.settings import load_settings
from data.store import Store

log = logging.getLogger(__name__)


def sampling_params(settings: dict) -> SamplingParams:
    return SamplingParams(
        k=int(settings["k"]),
        temperature=float(settings["temperature"]),
        top_p=float(settings["top_p"]),
        max_new_tokens=int(settings["max_new_tokens"] or default_max_new_tokens()),
        seed=settings["seed"],
    )


@dataclass
class SamplerStatus:
    """What the sampler is doing and how fast it goes, for the waiting box and the Settings page.

    Written by the sampling thread, read by page threads: each field is replaced whole, never mutated.
    """

    phase: str = "idle"  # 'idle', 'loading' (the generator model) or 'sampling'
    model: str | None = None
    prompts: int = 0  # prompts in the call being sampled
    rows: int = 0  # sequences in that call
    started: float = 0.0  # time.monotonic() when the phase began
    tokens_per_s: float | None = None  # measured over recent calls (exponential average)
    tokens_per_response: float | None = None

    def begin(self, phase: str, model: str | None = None, prompts: int = 0, rows: int = 0) -> None:
        self.phase, self.model, self.prompts, self.rows, self.started = phase, model, prompts, rows, time.monotonic()

    def record_call(self, tokens: int, responses: int, seconds: float) -> None:
        """Fold one finished call into the measured speed (recent calls weigh most)."""
        speed, length = tokens / max(seconds, 1e-6), tokens / max(responses, 1)
        self.tokens_per_s = speed if self.tokens_per_s is None else 0.7 * self.tokens_per_s + 0.3 * speed
        previous = self.tokens_per_response
        self.tokens_per_response = length if previous is None else 0.7 * previous + 0.3 * length
        self.phase = "idle"

    def seconds_left(self) -> float | None:
        """Return the estimated seconds until the call being sampled ends (None before any call was measured)."""
        if self.phase != "sampling" or not self.tokens_per_s or not self.tokens_per_response:
            return None
        expected = self.rows * self.tokens_per_response / self.tokens_per_s
        return max(0.0, expected - (time.monotonic() - self.started))

    def annotators_kept_busy(self, k: int, seconds_per_item: float = 30.0) -> float | None:
        """Return how many annotators taking `seconds_per_item` each the measured speed keeps supplied."""
        if not self.tokens_per_s or not self.tokens_per_response:
            return None
        return self.tokens_per_s / (k * self.tokens_per_response) * seconds_per_item

    def describe(self) -> str:
        """Return one sentence on what is happening, for someone waiting."""
        if self.phase == "loading":
            return f"Loading the generator model ({self.model}); the first responses follow."
        if self.phase == "sampling":
            left = self.seconds_left()
            eta = f", about {left:.0f} s left" if left is not None else " (the first call: no estimate yet)"
            return f"Sampling {self.rows} responses for {self.prompts} prompt(s){eta}."
        return "Waiting for the next prompt to sample."


class Generator:
    """The generator model named in the settings, loaded once and reloaded when the setting changes."""

    def __init__(self, device: str | None = None, status: SamplerStatus | None = None):
        self.device = device
        self.status = status or SamplerStatus()
        self.name: str | None = None
        self.model = self.tokenizer = None

    def get(self, name: str):
        if name != self.name:
            self.status.begin("loading", name)
            self.model, self.tokenizer = load_causal_lm(name, self.device)
            self.name = name
            self.status.phase = "idle"
        return self.model, self.tokenizer


def prompts_per_call(settings: dict) -> int:
    """Return how many prompts share one generate call: `batch_rows` sequences of K responses each."""
    return max(1, int(settings["batch_rows"] or default_batch_rows()) // int(settings["k"]))


def sample_batches(store: Store, generator: Generator, prompts: list[tuple[int, str]], settings: dict, progress=None):
    """Sample K responses for each (prompt id, text), several prompts per call; store each prompt's as one batch.

    Returns how many batches were stored. Each call's prompts are stored as soon as it ends (one transaction
    each), so an annotator never waits for more than one call.
    """
    params = sampling_params(settings)
    model, tokenizer = generator.get(settings["generator_model"])
    engine = Engine(model, tokenizer)
    per_call, made = prompts_per_call(settings), 0
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start : start + per_call]
        texts = [text for _, text in chunk]
        generator.status.begin("sampling", generator.name, len(chunk), len(chunk) * params.k)
        found = sample_prompts(
            engine, texts, params.k, params.temperature, params.top_p, params.max_new_tokens, params.seed
        )
        tokens = sum(sample.num_tokens for samples in found for sample in samples)
        generator.status.record_call(tokens, len(chunk) * params.k, time.monotonic() - generator.status.started)
        for (prompt_id, _), samples in zip(chunk, found, strict=True):
            annotation.add_batch(store, prompt_id, settings["generator_model"], params.to_dict(), samples)
            made += 1
            if progress:
                progress(made)
    return made


def fill(store: Store, generator: Generator, count: int, progress=None, settings: dict | None = None) -> int:
    """Sample batches for up to `count` prompts that have none waiting (with `settings`, else the stored ones)."""
    settings = settings or load_settings(store)
    sampling_params(settings)  # refuse bad settings before loading a model
    return sample_batches(store, generator, annotation.prompts_to_sample(store, count), settings, progress)


class SuggestionScorer:
    """The reward model named in the settings' suggestion_model, loaded once, reloaded when it changes."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.name: str | None = None
        self.scorer = None

    def get(self, store: Store, name: str):
        if name != self.name:
            from rm.score import RewardScorer

            self.scorer = RewardScorer.from_run(path_of(store, name), self.device)
            self.name = name
        return self.scorer


def score_waiting_responses(store: Store, scorers: SuggestionScorer, reward_model: str, limit: int = 32) -> int:
    """Score up to `limit` waiting responses with the suggestion reward model; return how many were scored."""
    waiting = annotation.unscored_responses(store, reward_model, limit)
    if not waiting:
        return 0
    ids, prompts, responses = zip(*waiting, strict=True)
    rewards = scorers.get(store, reward_model).score(list(prompts), list(responses))
    annotation.store_scores(store, reward_model, dict(zip(ids, rewards.tolist(), strict=True)))
    return len(ids)


class BackgroundSampler(threading.Thread):
    """Daemon thread: while fewer than `ready_per_annotator` × active annotators items wait, sample more."""

    def __init__(self, store: Store, device: str | None = None, idle_seconds: float = 0.5):
        super().__init__(daemon=True, name="rlhf-studio-sampler")
        self.store = store
        self.generator = Generator(device)
        self.status = self.generator.status  # what the waiting box and Settings show
        self.scorers = SuggestionScorer(device)
        self.idle_seconds = idle_seconds
        self.stop_event = threading.Event()
        self.last_error: str | None = None
        self.batches_made = 0

    def next_prompts(self, ready: int, per_call: int = 1) -> list[tuple[int, str]]:
        """Return the prompts to sample next (up to `per_call`), or [] while every active annotator has `ready` items.

        Counted per annotator, not in total: items waiting for prompts an annotator already ranked do not
        keep that annotator from waiting. Several prompts share a call (on a CPU 4 prompts cost 1.5x one), except
        the very first, sampled alone so the first item comes soonest. With nobody active, a shared queue of
        `ready` items is kept.
        """
        active = annotation.active_annotators(self.store)
        if not active:
            waiting = annotation.open_batch_count(self.store)
            limit = 1 if waiting == 0 else per_call  # the first item as soon as it can be
            return annotation.prompts_to_sample(self.store, limit) if ready > waiting else []
        for annotator_id in active:
            have = annotation.claimable_count(self.store, annotator_id)
            if have < ready:  # a full call even when short by one: on a CPU 4 prompts cost 1.5x one
                prompts = annotation.prompts_to_sample(self.store, per_call, annotator_id=annotator_id)
                if prompts:
                    return prompts
        return []

    def next_prompt(self, ready: int) -> tuple[int, str] | None:
        """Return the one prompt to sample next, or None (see `next_prompts`)."""
        prompts = self.next_prompts(ready)
        return prompts[0] if prompts else None

    def step(self) -> bool:
        """Sample the next prompts if an annotator is short of items; else score suggestions. Return whether it worked."""
        settings = load_settings(self.store)
        prompts = self.next_prompts(int(settings["ready_per_annotator"]), prompts_per_call(settings))
        if not prompts:
            return self.score_suggestions(settings)
        self.batches_made += sample_batches(self.store, self.generator, prompts, settings)
        self.score_suggestions(settings)  # so suggestions and "uncertain first" see the new batches at once
        return True

    def score_suggestions(self, settings: dict) -> bool:
        """Score waiting responses with the suggestion reward model, if one is set; return whether it did any."""
        if not settings["suggestion_model"]:
            return False
        return score_waiting_responses(self.store, self.scorers, settings["suggestion_model"]) > 0

    def run(self):
        while not self.stop_event.is_set():
            try:
                busy = self.step()
                self.last_error = None
            except Exception as error:  # keep serving: the app shows the error and the thread retries
                log.exception("background sampling failed")
                self.last_error = f"{type(error).__name__}: {error}"
                busy = False
                self.stop_event.wait(5)
            if not busy:
                self.stop_event.wait(self.idle_seconds)

    def stop(self):
        self.stop_event.set()
