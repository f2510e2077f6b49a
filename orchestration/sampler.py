"""Keep responses ready ahead of the annotators, so the next item appears at once after a submit."""

import logging
import threading

from core.generation import SamplingParams, sample_responses
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
        max_new_tokens=int(settings["max_new_tokens"]),
        seed=settings["seed"],
    )


class Generator:
    """The generator model named in the settings, loaded once and reloaded when the setting changes."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.name: str | None = None
        self.model = self.tokenizer = None

    def get(self, name: str):
        if name != self.name:
            self.model, self.tokenizer = load_causal_lm(name, self.device)
            self.name = name
        return self.model, self.tokenizer


def sample_batch(store: Store, generator: Generator, prompt_id: int, prompt: str, settings: dict) -> int:
    """Sample K responses to one prompt with the current settings and store them as one batch."""
    params = sampling_params(settings)
    model, tokenizer = generator.get(settings["generator_model"])
    samples = sample_responses(model, tokenizer, prompt, params)
    return annotation.add_batch(store, prompt_id, settings["generator_model"], params.to_dict(), samples)


def fill(store: Store, generator: Generator, count: int, progress=None, settings: dict | None = None) -> int:
    """Sample batches for up to `count` prompts that have none waiting (with `settings`, else the stored ones)."""
    settings = settings or load_settings(store)
    made = 0
    for prompt_id, prompt in annotation.prompts_to_sample(store, count):
        sample_batch(store, generator, prompt_id, prompt, settings)
        made += 1
        if progress:
            progress(made)
    return made


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
        self.scorers = SuggestionScorer(device)
        self.idle_seconds = idle_seconds
        self.stop_event = threading.Event()
        self.last_error: str | None = None
        self.batches_made = 0

    def next_prompt(self, ready: int) -> tuple[int, str] | None:
        """Return the prompt to sample next, or None while every active annotator has `ready` items to take.

        Counted per annotator, not in total: items waiting for prompts an annotator already ranked do not
        keep that annotator from waiting. With nobody active, a shared queue of `ready` items is kept.
        """
        active = annotation.active_annotators(self.store)
        if not active:
            if annotation.open_batch_count(self.store) >= ready:
                return None
            prompts = annotation.prompts_to_sample(self.store, 1)
            return prompts[0] if prompts else None
        for annotator_id in active:
            if annotation.claimable_count(self.store, annotator_id) < ready:
                prompts = annotation.prompts_to_sample(self.store, 1, annotator_id=annotator_id)
                if prompts:
                    return prompts[0]
        return None

    def step(self) -> bool:
        """Sample one batch if an annotator is short of items; else score suggestions. Return whether it worked."""
        settings = load_settings(self.store)
        prompt = self.next_prompt(int(settings["ready_per_annotator"]))
        if prompt is None:
            return self.score_suggestions(settings)
        sample_batch(self.store, self.generator, *prompt, settings)
        self.batches_made += 1
        self.score_suggestions(settings)  # so suggestions and "uncertain first" see the new batch at once
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
