"""A pairwise accuracy as people should read it: with its count, a 95% interval, and a warning when too few back it.

"0.0% from 1 ranking" and "100%" from three pairs look alike on a page; the interval says how little they mean.
The pairs of one ranking are not independent (they share responses), so the Wilson interval over pairs is a little
too narrow; the minimum is therefore asked of rankings as well as pairs.
"""

from dataclasses import dataclass

from core.stats import wilson_interval

MIN_PAIRS = 30  # below this a 95% interval around 50% is wider than about ±17 points
MIN_RANKINGS = 5


@dataclass
class Accuracy:
    """A share of pairs ordered as people ordered them, with what it rests on."""

    correct: int
    pairs: int
    rankings: int | None = None  # the rankings the pairs come from, when known

    @classmethod
    def from_rate(cls, rate: float, pairs: int, rankings: int | None = None) -> "Accuracy":
        return cls(round(rate * pairs), pairs, rankings)

    @property
    def rate(self) -> float:
        return self.correct / self.pairs if self.pairs else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """Return the 95% Wilson interval of the rate (0 to 1 with no pairs)."""
        return wilson_interval(self.correct, self.pairs)

    @property
    def too_few(self) -> bool:
        return self.pairs < MIN_PAIRS or (self.rankings is not None and self.rankings < MIN_RANKINGS)

    def counts(self) -> str:
        pairs = f"{self.pairs} pair{'s' * (self.pairs != 1)}"
        if self.rankings is None:
            return pairs
        return f"{pairs} from {self.rankings} ranking{'s' * (self.rankings != 1)}"

    def __str__(self) -> str:
        """Return e.g. '83% (95% CI 70–91%, 48 pairs from 8 rankings)'."""
        if not self.pairs:
            return "no pairs to measure on"
        low, high = self.interval
        return f"{self.rate:.0%} (95% CI {low:.0%}–{high:.0%}, {self.counts()})"

    def warning(self) -> str | None:
        """Return why the number cannot be trusted yet, or None."""
        if not self.too_few:
            return None
        return (
            f"Only {self.counts()}: too few to tell this accuracy from chance (50%). Rank at least "
            f"{MIN_RANKINGS} held-out rankings and {MIN_PAIRS} untied pairs for a number that means something."
        )


def held_out_accuracy(metrics: dict) -> Accuracy | None:
    """Return a reward-model run's held-out accuracy from its metrics (summary.json or registry), if it has counts."""
    rate, pairs = metrics.get("val/accuracy"), metrics.get("val/pairs")
    if not isinstance(rate, int | float) or not isinstance(pairs, int):
        return None
    return Accuracy.from_rate(rate, pairs, metrics.get("val/rankings"))
