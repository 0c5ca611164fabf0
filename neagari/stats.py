"""Small-sample statistics the paper reports: Wilson intervals, exact McNemar, paired differences
(Newcombe's hybrid score interval, and the paper's Wald interval beside it),
acceptance rates over a search run, and the pre-registered null-baseline gap test.

Pure ``math``/``numpy``: no scipy. Proportions are fractions in [0, 1] unless a name ends in
``_pp`` (percentage points).
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% standard normal quantile


def _check_counts(k: int, n: int) -> None:
    if n <= 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials; returns (lo, hi) fractions.

    Unlike the Wald interval it stays inside [0, 1] and keeps its coverage near k = 0 or k = n,
    which matters for the paper's small counts (6/78).
    """
    _check_counts(k, n)
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts ``b`` and ``c``.

    Under the null each discordant pair goes either way with probability 1/2, so
    p = min(1, 2 * P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2). No discordant pairs: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    # exact integer sum, then one division: no underflow for large n
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_difference_ci(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval for the difference of two paired proportions (Newcombe 1998,
    "Improved confidence intervals for the difference between binomial proportions based on paired
    data", Stat. Med. 17:2635-2650, method 10): patched minus base accuracy on the same items.

    The four cells of the paired table: ``a`` both right, ``b`` base wrong and patched right
    (improvements), ``c`` base right and patched wrong (regressions), ``d`` both wrong. With
    n = a + b + c + d, p1 = (a + b) / n (patched), p2 = (a + c) / n (base) and their Wilson
    intervals (l1, u1), (l2, u2), the difference is theta = p1 - p2 = (b - c) / n and

        lo = theta - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        hi = theta + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2)

    where phi estimates the correlation of the two proportions: (ad - bc) / sqrt of the product of
    the four marginal totals, with the numerator replaced by ad - bc - n/2 when that is positive,
    by 0 when 0 <= ad - bc <= n/2, and phi = 0 when a marginal total is zero. Bounds are clipped to
    [-1, 1]. Unlike the Wald interval it does not collapse to a point when there are no discordant
    pairs (b = c = 0): the Wilson intervals of the two accuracies keep it open.
    Returns (theta, lo, hi) as fractions.
    """
    if min(a, b, c, d) < 0 or a + b + c + d == 0:
        raise ValueError(f"need non-negative cells, not all zero, got a={a}, b={b}, c={c}, d={d}")
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins:
        cross = a * d - b * c
        numerator = cross - n / 2 if cross > n / 2 else cross if cross < 0 else 0.0
        phi = numerator / math.sqrt(margins)
    theta = (b - c) / n
    dl, du = p1 - l1, u2 - p2
    lo = theta - math.sqrt(max(0.0, dl * dl - 2 * phi * dl * du + du * du))
    dl, du = p2 - l2, u1 - p1
    hi = theta + math.sqrt(max(0.0, dl * dl - 2 * phi * dl * du + du * du))
    return theta, max(-1.0, lo), min(1.0, hi)


def difference_ci(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval for the difference of two independent proportions
    (Newcombe 1998, "Interval estimation for the difference between independent proportions",
    Stat. Med. 17:873-890, method 10): p1 - p2 with p1 = k1/n1, p2 = k2/n2 and their Wilson
    intervals (l1, u1), (l2, u2):

        lo = (p1 - p2) - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        hi = (p1 - p2) + sqrt((u1 - p1)^2 + (p2 - l2)^2)

    Returns (difference, lo, hi) as fractions.
    """
    _check_counts(k1, n1)
    _check_counts(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def paired_difference_wald(b: int, c: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """The Wald interval for the same difference, the paper's §6.7 GSM8K interval: diff = (b - c) / n,
    se = sqrt(b + c - (b - c)^2 / n) / n, bounds diff -/+ z * se (``b``, ``c``: the discordant
    counts as in :func:`paired_difference_ci`; ``n``: all items). It collapses to [0, 0] when
    b = c = 0; kept to set our figures beside the published ones, not for new claims.
    """
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need b, c >= 0 and b + c <= n > 0, got b={b}, c={c}, n={n}")
    diff = (b - c) / n
    se = math.sqrt(max(0.0, b + c - (b - c) ** 2 / n)) / n
    return diff, diff - z * se, diff + z * se


# ---------------------------------------------------------------------------- acceptance rates


def _as_bool_array(accepted: Iterable[bool]) -> np.ndarray:
    return np.asarray(list(accepted), dtype=bool)


def cumulative_rates(accepted: Sequence[bool], checkpoints: Iterable[int]) -> dict[int, float]:
    """Acceptance rate over the first ``c`` iterations for each checkpoint ``c`` (a fraction).

    ``accepted``: one bool per iteration, in order. Checkpoints beyond the run (or < 1) are
    left out of the result rather than reported as a rate over fewer iterations.
    """
    acc = _as_bool_array(accepted)
    counts = np.cumsum(acc)
    return {int(c): float(counts[c - 1] / c) for c in checkpoints if 1 <= c <= len(acc)}


def rolling_rate(accepted: Sequence[bool], window: int = 200) -> float:
    """Acceptance rate over the last ``window`` iterations (the whole run if shorter); NaN if empty.

    This is the quantity the search's auto-termination watches (< 1% over the trailing 200).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    acc = _as_bool_array(accepted)
    if len(acc) == 0:
        return float("nan")
    return float(acc[-window:].mean())


def rolling_series(accepted: Sequence[bool], window: int) -> np.ndarray:
    """Trailing acceptance rate after each iteration, shape (n_iterations,), fractions.

    Entry i is the rate over iterations max(0, i - window + 1) .. i, so the first ``window - 1``
    entries average over the shorter prefix instead of being undefined.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    acc = _as_bool_array(accepted).astype(np.int64)
    counts = np.concatenate([[0], np.cumsum(acc)])
    idx = np.arange(1, len(acc) + 1)
    start = np.maximum(0, idx - window)
    return (counts[idx] - counts[start]) / (idx - start)


# ---------------------------------------------------------------------------- null baseline


class GapTest(NamedTuple):
    """Outcome of :func:`two_proportion_gap_test`. Rates and intervals are fractions."""

    rate1: float
    ci1: tuple[float, float]
    rate2: float
    ci2: tuple[float, float]
    gap_pp: float  # 100 * (rate1 - rate2)
    gap_meets_threshold: bool
    intervals_disjoint: bool  # lower bound of 1 above upper bound of 2
    passed: bool


def two_proportion_gap_test(k1: int, n1: int, k2: int, n2: int, threshold_pp: float = 10) -> GapTest:
    """The pre-registered null-baseline test (§7.1.1): does rate 1 (trained model) exceed
    rate 2 (sign-randomized model) by at least ``threshold_pp`` percentage points with
    non-overlapping Wilson 95% intervals?

    The test is one-sided: intervals count as disjoint only when interval 1 lies wholly above
    interval 2, since a null model beating the trained one is a failure, not a pass.
    """
    _check_counts(k1, n1)
    _check_counts(k2, n2)
    r1, r2 = k1 / n1, k2 / n2
    ci1, ci2 = wilson_interval(k1, n1), wilson_interval(k2, n2)
    gap_pp = 100 * (r1 - r2)
    meets = gap_pp >= threshold_pp - 1e-9  # a gap of exactly the threshold passes despite rounding
    disjoint = ci1[0] > ci2[1]
    return GapTest(r1, ci1, r2, ci2, gap_pp, meets, disjoint, meets and disjoint)
