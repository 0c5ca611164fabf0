"""neagari.stats against hand arithmetic and the paper's published figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neagari import stats


# ---------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize("k, n, lo, hi", [
    (234, 500, 0.425, 0.512),  # §7.1.1 trained 1.7B
    (84, 500, 0.138, 0.203),   # §7.1.1 sign-randomized 1.7B
    (6, 78, 0.036, 0.158),     # §6.8.1 COPY->PASS
])
def test_wilson_matches_paper(k, n, lo, hi):
    got = stats.wilson_interval(k, n)
    assert (round(got[0], 3), round(got[1], 3)) == (lo, hi)


def test_wilson_by_hand():
    # k=5, n=10, z=2: p=0.5, z^2/n=0.4, centre=(0.5+0.2)/1.4=0.5,
    # half = 2*sqrt(0.5*0.5/10 + 0.4/40)/1.4 = 2*sqrt(0.035)/1.4
    half = 2 * math.sqrt(0.035) / 1.4
    assert stats.wilson_interval(5, 10, z=2) == pytest.approx((0.5 - half, 0.5 + half))


def test_wilson_edges_stay_in_unit_interval():
    lo, hi = stats.wilson_interval(0, 20)
    assert lo == 0.0 and 0 < hi < 0.2
    lo, hi = stats.wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 1


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError):
        stats.wilson_interval(k, n)


# ---------------------------------------------------------------------------- McNemar, paired CI


def test_mcnemar_matches_paper_gsm8k():
    assert round(stats.mcnemar_exact(21, 11), 3) == 0.110
    assert stats.mcnemar_exact(11, 21) == stats.mcnemar_exact(21, 11)


def test_mcnemar_by_hand():
    # b=0, c=3: P[X<=0] = 1/8 for X~Bin(3, 1/2), two-sided 2/8
    assert stats.mcnemar_exact(0, 3) == pytest.approx(0.25)
    # b=1, c=4: P[X<=1] = (1+5)/32, two-sided 12/32
    assert stats.mcnemar_exact(1, 4) == pytest.approx(12 / 32)
    # b=c=2: 2*(1+4+6)/16 > 1, capped at 1; no discordant pairs: 1
    assert stats.mcnemar_exact(2, 2) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_mcnemar_large_counts_do_not_overflow():
    p = stats.mcnemar_exact(600, 400)
    assert 0 < p < 1e-9


def test_paired_wald_matches_paper_gsm8k():
    # b = base wrong & patched right (21), c = base right & patched wrong (11), n = 1319
    diff, lo, hi = stats.paired_difference_wald(21, 11, 1319)
    assert (round(100 * diff, 2), round(100 * lo, 2), round(100 * hi, 2)) == (0.76, -0.08, 1.60)
    # the accuracies of §6.7: 1125 -> 1135 correct is the same +10 items
    assert diff == pytest.approx((1135 - 1125) / 1319)


def test_paired_wald_by_hand():
    # b=3, c=1, n=10: diff=0.2, se = sqrt(4 - 2^2/10)/10 = sqrt(3.6)/10
    se = math.sqrt(3.6) / 10
    assert stats.paired_difference_wald(3, 1, 10) == pytest.approx((0.2, 0.2 - 1.96 * se, 0.2 + 1.96 * se))
    # swapping b and c mirrors the interval
    diff, lo, hi = stats.paired_difference_wald(1, 3, 10)
    assert (diff, lo, hi) == pytest.approx((-0.2, -0.2 - 1.96 * se, -0.2 + 1.96 * se))
    # no discordant pairs: the Wald interval collapses, which is why it is not the default
    assert stats.paired_difference_wald(0, 0, 10) == (0.0, 0.0, 0.0)


def test_paired_wald_rejects_impossible_counts():
    with pytest.raises(ValueError):
        stats.paired_difference_wald(6, 5, 10)


def _wilson_by_formula(x, n, z=stats.Z95):
    """Wilson limits in their closed form (2np + z^2 -/+ z sqrt(z^2 + 4np(1-p))) / (2(n + z^2))."""
    p = x / n
    root = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    return (2 * n * p + z * z - root) / (2 * (n + z * z)), (2 * n * p + z * z + root) / (2 * (n + z * z))


def _newcombe_reference(a, b, c, d, z=stats.Z95):
    """Newcombe (1998), method 10, written out once more from the paper's definitions."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson_by_formula(a + b, n, z)
    l2, u2 = _wilson_by_formula(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    ad_bc = a * d - b * c
    if den == 0:
        phi = 0.0
    elif ad_bc > n / 2:
        phi = (ad_bc - n / 2) / math.sqrt(den)
    elif ad_bc >= 0:
        phi = 0.0
    else:
        phi = ad_bc / math.sqrt(den)
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    eps = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    theta = (b - c) / n
    return theta, max(-1.0, theta - delta), min(1.0, theta + eps)


@pytest.mark.parametrize("cells", [
    (12, 9, 2, 21),      # ad - bc > n/2: phi with the n/2 correction
    (14, 5, 0, 22),
    (1, 1, 7, 12),
    (59, 6, 16, 80),
    (2, 8, 9, 1),        # ad - bc < 0: phi negative
    (5, 1, 1, 5),        # 0 <= ad - bc <= n/2: phi = 0
    (1114, 21, 11, 173),  # §6.7 GSM8K
    (0, 3, 0, 7),        # a zero marginal: phi = 0
    (10, 0, 0, 0),
])
def test_newcombe_matches_the_formula(cells):
    assert stats.paired_difference_ci(*cells) == pytest.approx(_newcombe_reference(*cells), abs=1e-12)


def test_newcombe_matches_published_value():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: complete
    # response before/after consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]:
    # Newcombe square-and-add estimate -0.0621, 95% CI -0.1186 to -0.0046.
    diff, lo, hi = stats.paired_difference_ci(59, 6, 16, 80)
    assert (round(diff, 4), round(lo, 4), round(hi, 4)) == (-0.0621, -0.1186, -0.0046)


def test_newcombe_by_hand_no_discordant_pairs():
    # a = 10 of 10 right in both runs: p1 = p2 = 1, Wilson lower limit 10 / (10 + z^2), upper 1;
    # the margins' product is zero, so phi = 0 and the interval is -/+ (1 - 10 / (10 + z^2))
    z2 = stats.Z95 ** 2
    half = 1 - 10 / (10 + z2)
    assert stats.paired_difference_ci(10, 0, 0, 0) == pytest.approx((0.0, -half, half))
    # mixed concordant pairs (6 right, 4 wrong in both): open interval around zero, unlike Wald
    diff, lo, hi = stats.paired_difference_ci(6, 0, 0, 4)
    assert diff == 0 and lo < 0 < hi and hi - lo > 0.05


def test_newcombe_mirrors_and_stays_in_range():
    diff, lo, hi = stats.paired_difference_ci(12, 9, 2, 21)
    assert stats.paired_difference_ci(12, 2, 9, 21) == pytest.approx((-diff, -hi, -lo))
    assert lo < diff < hi
    assert stats.paired_difference_ci(0, 30, 0, 0)[2] <= 1.0
    assert stats.paired_difference_ci(0, 0, 30, 0)[1] >= -1.0


def test_newcombe_gsm8k_close_to_wald_at_large_n():
    # 1,125 -> 1,135 of 1,319 (21 vs 11 discordant): both intervals near [-0.1, +1.6] pp
    diff, lo, hi = stats.paired_difference_ci(1114, 21, 11, 173)
    wald = stats.paired_difference_wald(21, 11, 1319)
    assert diff == pytest.approx(wald[0])
    assert abs(lo - wald[1]) < 0.001 and abs(hi - wald[2]) < 0.001


@pytest.mark.parametrize("cells", [(-1, 1, 1, 1), (0, 0, 0, 0)])
def test_newcombe_rejects_impossible_counts(cells):
    with pytest.raises(ValueError):
        stats.paired_difference_ci(*cells)


# ---------------------------------------------------------------------------- acceptance rates


FLAGS = [True, False, True, True]


def test_cumulative_rates_skip_checkpoints_past_the_run():
    # first 1: 1/1; first 2: 1/2; first 4: 3/4; 5 is past the run
    assert stats.cumulative_rates(FLAGS, (1, 2, 4, 5)) == {1: 1.0, 2: 0.5, 4: 0.75}


def test_rolling_rate():
    assert stats.rolling_rate(FLAGS, window=2) == 1.0      # last two: T, T
    assert stats.rolling_rate(FLAGS, window=3) == pytest.approx(2 / 3)  # F, T, T
    assert stats.rolling_rate(FLAGS, window=10) == 0.75    # shorter run: all of it
    assert math.isnan(stats.rolling_rate([], window=10))


def test_rolling_series():
    # window 2: [T] -> 1, [T,F] -> .5, [F,T] -> .5, [T,T] -> 1
    np.testing.assert_allclose(stats.rolling_series(FLAGS, 2), [1.0, 0.5, 0.5, 1.0])
    # its last entry is the rolling rate
    long = [i % 3 == 0 for i in range(500)]
    assert stats.rolling_series(long, 200)[-1] == pytest.approx(stats.rolling_rate(long, 200))


# ---------------------------------------------------------------------------- null baseline test


def test_gap_test_on_paper_null_baseline():
    t = stats.two_proportion_gap_test(234, 500, 84, 500)
    assert t.gap_pp == pytest.approx(30.0)
    assert t.gap_meets_threshold and t.intervals_disjoint and t.passed


def test_gap_test_exact_threshold_passes():
    # 30/100 - 20/100 is 9.999999999999998 pp in floating point; the threshold is meant inclusive
    t = stats.two_proportion_gap_test(300, 1000, 200, 1000, threshold_pp=10)
    assert t.gap_meets_threshold and t.passed


def test_gap_test_large_gap_with_overlapping_intervals_fails():
    # 6/10 vs 4/20: gap 40 pp, but n is tiny and the Wilson intervals overlap
    t = stats.two_proportion_gap_test(6, 10, 4, 20)
    assert t.gap_meets_threshold and not t.intervals_disjoint and not t.passed


def test_gap_test_small_gap_or_wrong_direction_fails():
    assert not stats.two_proportion_gap_test(60, 100, 55, 100).passed
    reverse = stats.two_proportion_gap_test(84, 500, 234, 500)
    assert reverse.gap_pp == pytest.approx(-30.0) and not reverse.intervals_disjoint and not reverse.passed


@pytest.mark.parametrize("counts, published", [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
])
def test_independent_difference_matches_newcombe_1998(counts, published):
    # Newcombe (1998), Stat. Med. 17:873-890, Table II, method 10 (hybrid score, no continuity correction)
    diff, lo, hi = stats.difference_ci(*counts)
    assert diff == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
    assert (round(lo, 4), round(hi, 4)) == published
