"""Confidence intervals and tests for click-through rates.

The normal distribution is Python's own (`statistics.NormalDist`); the formulas are the
textbook ones, checked in tests/server/api/test_stats.py against published worked examples:

- Wilson score interval (Wilson 1927; Newcombe 1998, "Two-sided confidence intervals
  for the single proportion", Statistics in Medicine 17, method 3):
      centre = (p + z²/2n) / (1 + z²/n)
      half   = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²)
  It stays inside [0, 1] and is sound for small counts and rates near 0, where the
  textbook `p ± z·sqrt(p(1-p)/n)` is not: a new variant's first clicks are both.
- Two-proportion z-test with the pooled proportion, two-sided: is an arm's rate
  different from the control's?
      p = (x1 + x2) / (n1 + n2),  z = (p1 - p2) / sqrt(p(1-p)(1/n1 + 1/n2))
"""

from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of `successes` out of `trials` (trials > 0)."""
    if trials <= 0:
        raise ValueError("an interval needs at least one trial")
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """The two-sided p-value of the pooled two-proportion z-test of x1/n1 against x2/n2."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("each group needs at least one trial")
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:
        return 1.0  # both rates are 0, or both 1: no difference to see
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return 2 * _NORMAL.cdf(-abs(z))
