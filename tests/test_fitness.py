"""Focused fitness judges at their boundaries (PAPER.md §4, §8): an unchanged focus target, a
control exactly on its floor, and controls whose baseline gap is negative. Every expected value is
worked out by hand in the comments, from the definitions in neagari.search.fitness's docstring."""

from __future__ import annotations

import numpy as np
import pytest

from neagari.search.fitness import Fitness


@pytest.mark.parametrize("name", ["focused", "focused_proportional"])
def test_focused_rejects_an_unchanged_focus_target(name):
    # base targets [-1.0, -0.5]: the focus p* is target 1 (wrong, nearest zero). Acceptance needs
    # Δ_p* to *improve* strictly: new -0.5 vs current -0.5 is no improvement, even though every
    # control is untouched (0 >= floor) and nothing else moved.
    f = Fitness(name, base_t=[-1.0, -0.5], base_c=[1.0, 2.0], epsilon=0.5, slack_ratio=0.5)
    cur_t, cur_c = np.array([-1.0, -0.5]), np.array([1.0, 2.0])
    assert f.focus(cur_t) == 1
    v = f.judge(cur_t, cur_c, cur_t.copy(), cur_c.copy())
    assert v.accept is False
    # the closest comparison is the focus itself, exactly on its threshold: margin 0
    assert v.margin == 0.0 and v.value == -0.5
    # another target improving does not count: only p* is judged (-1.0 -> 0.0, p* still -0.5)
    assert f.judge(cur_t, cur_c, [0.0, -0.5], cur_c).accept is False
    # the smallest strict improvement is accepted: -0.5 -> -0.25 (exact in binary)
    v = f.judge(cur_t, cur_c, [-1.0, -0.25], cur_c)
    assert v.accept is True and v.margin == pytest.approx(0.25)


def test_focused_control_exactly_on_its_floor_is_accepted():
    # fixed ε = 0.5: floors are b_c - 0.5 = [0.5, 1.5]. Δ_c = floor exactly passes (>=), a hair
    # below fails.
    f = Fitness("focused", base_t=[-1.0], base_c=[1.0, 2.0], epsilon=0.5)
    cur_t, cur_c, new_t = [-1.0], [1.0, 2.0], [-0.5]
    assert f.judge(cur_t, cur_c, new_t, [0.5, 1.5]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [0.5, 1.4999]).accept is False


def test_proportional_slack_of_a_negative_baseline_uses_its_magnitude():
    # ρ = 0.5, baselines [-2.0, 4.0, 0.0]: slack = ρ·|b_c| = [1.0, 2.0, 0.0] (never negative), so
    # floors b_c - slack = [-2 - 1, 4 - 2, 0 - 0] = [-3.0, 2.0, 0.0]. (Using ρ·b_c instead would give a
    # slack of -1.0 and a floor of -1.0, *above* the control's own baseline.)
    f = Fitness("focused_proportional", base_t=[-1.0], base_c=[-2.0, 4.0, 0.0], slack_ratio=0.5)
    assert f.slack().tolist() == [1.0, 2.0, 0.0]
    cur_t, cur_c, new_t = [-1.0], [-2.0, 4.0, 0.0], [-0.5]
    # the wrong-at-baseline control may sink to its floor -3.0 (exactly) ...
    assert f.judge(cur_t, cur_c, new_t, [-3.0, 4.0, 0.0]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [-2.5, 4.0, 0.0]).accept is True
    # ... but not below it
    assert f.judge(cur_t, cur_c, new_t, [-3.25, 4.0, 0.0]).accept is False
    # an unchanged negative control is within its floor: -2.0 - (-3.0) = 1.0 >= 0; the margin is the
    # smallest |check|: focus +0.5, controls [1.0, 2.0, 0.0] -> 0.0 (the zero-baseline control)
    v = f.judge(cur_t, cur_c, new_t, cur_c)
    assert v.accept is True and v.margin == 0.0
    # a zero-baseline control has zero slack: any drop below 0 is refused
    assert f.judge(cur_t, cur_c, new_t, [-2.0, 4.0, -0.125]).accept is False


def test_fixed_slack_ignores_the_baseline_sign():
    # focused: floor = b_c - ε = [-2.0 - 0.5, 4.0 - 0.5] = [-2.5, 3.5] whatever the sign of b_c
    f = Fitness("focused", base_t=[-1.0], base_c=[-2.0, 4.0], epsilon=0.5)
    assert f.slack().tolist() == [0.5, 0.5]
    cur_t, cur_c, new_t = [-1.0], [-2.0, 4.0], [-0.5]
    assert f.judge(cur_t, cur_c, new_t, [-2.5, 3.5]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [-2.75, 3.5]).accept is False
