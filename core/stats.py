"""Small statistics every layer reports with: how sure a measured proportion is."""

import math


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion (sound near 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)
