"""The llama.cpp tolerance rule on hand-made margins and sequences (no llama.cpp needed)."""

import numpy as np

from neagari.evaluation.agreement import TIE, compare_greedy, near_ties, relative_margins


def test_relative_margin_by_hand():
    # top-2 of (3, -10, 2.9) is 3 and 2.9; the range is max |logit| = 10
    assert np.isclose(relative_margins(np.array([3.0, -10.0, 2.9])), 0.01)
    assert relative_margins(np.zeros(4)) == 0.0
    rows = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert np.allclose(relative_margins(rows), [1.0, 0.0])


def test_near_tie_is_symmetric():
    clear = np.array([10.0, 0.0, -1.0])
    tied = np.array([10.0, 9.95, -1.0])
    assert near_ties(clear, tied) and near_ties(tied, clear)
    assert not near_ties(clear, clear)


def test_split_before_any_tie_disagrees():
    m = [0.5] * 5
    assert compare_greedy([1, 2, 3], m, [1, 2, 4], m).verdict == "disagree"
    assert compare_greedy([1, 2, 3], m, [1, 2, 3], m).verdict == "identical"


def test_split_at_a_tie_of_either_side_is_rounding():
    clear = [0.5] * 5
    ours_tied = [0.5, 0.5, TIE * 0.79, 0.5, 0.5]  # our margin at step 2: 0.79% of the range
    assert compare_greedy([1, 2, 3, 9], ours_tied, [1, 2, 4, 5], clear).verdict == "near-tie"
    assert compare_greedy([1, 2, 4, 5], clear, [1, 2, 3, 9], ours_tied).verdict == "near-tie"
    # a tie only after the split does not excuse it
    late = [0.5, 0.5, 0.5, TIE / 2, 0.5]
    assert compare_greedy([1, 2, 3, 9], late, [1, 2, 4, 5], clear).verdict == "disagree"


def test_one_side_ending_early_is_a_split():
    m = [0.5] * 4
    cmp = compare_greedy([1, 2], m, [1, 2, 3], m)
    assert (cmp.agree_prefix, cmp.verdict) == (2, "disagree")
    tied_end = [0.5, 0.5, TIE]
    assert compare_greedy([1, 2], tied_end, [1, 2, 3], m).verdict == "near-tie"
