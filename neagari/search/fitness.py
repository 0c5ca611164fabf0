"""Fitness functions (PAPER.md §4) and our proposed variants.

Each takes the baseline gaps once, then judges candidate gaps against the current accepted state.
``judge`` returns a :class:`Verdict`: accept or not, the fitness value to log, and ``margin``, the
smallest distance of any comparison from its threshold (speculative search re-checks a verdict
whose margin is within floating-point noise by evaluating that proposal alone).

T targets, C controls, Δ current gaps, b baseline gaps; fixes/breaks are targets whose sign
flipped up (b ≤ 0 < Δ) / down (b > 0 ≥ Δ) relative to baseline, breaks_C controls with
b_c > 0 ≥ Δ_c. Scalar fitnesses accept iff F' > F:

- ``average``: F = mean_T(Δ − b) − λ · mean_C(max(0, b_c − Δ_c)).
- ``borderline`` (the paper's code): F = mean_T(max(0, Δ − b) / (0.1 + |b|)) + 0.5 · fixes
  − 0.5 · breaks − λ · breaks_C. Each target's gain over its baseline counts only upward and is
  weighted by 1 / (0.1 + |b|), so targets near the boundary at baseline weigh most; the weights
  are fixed at baseline.
- ``borderline_saturating`` (ours): F = Σ_T Δ/(0.1 + |Δ|) + 0.5 · (fixes − breaks) − λ · breaks_C.
  Each target's term saturates at ±1 as its current gap moves away from zero, so the steepest
  gains are for targets near the boundary now, and losses count as much as gains.

Focused fitnesses are lexicographic: one focus target p* at a time. Accept iff Δ_p* improves
strictly, every already-crossed target stays > 0, and the controls hold (below). When an accepted
move carries p* over zero it joins the crossed set and the next target takes over; once every
target has crossed every proposal is refused (the search then runs out its budget, as the paper's
runs did, unless SearchConfig.stop_when_done). Δ_p* is the value logged.

The focus target (``focus_order``):
- ``"fixed"`` (the paper's code): the order is set once at baseline: the targets wrong at baseline
  (b ≤ 0), by |b| ascending, ties by index; p* = the first of them not yet crossed. p* stays the
  focus until it crosses, whatever the other targets do meanwhile.
- ``"dynamic"`` (ours, the paper's proposed frontier re-ranking): re-ranked every iteration:
  p* = the target now wrong (Δ ≤ 0) and not crossed whose Δ is largest (nearest zero), ties by
  index.

How the controls hold:
- ``focused``: every control keeps Δ_c ≥ b_c − ε (fixed slack ε).
- ``focused_proportional`` (ours, PAPER.md §8/§9.5): Δ_c ≥ b_c − ρ·|b_c|. With ρ < 1 a control that
  was right at baseline can never be pushed across zero, however small its margin (the paper's
  fixed ε = 0.5 broke controls at +0.005 and +0.053).
- ``focused_barrier`` (ours, the log-barrier §9.5 proposes): controls right at baseline (b_c > 0,
  the set C+) must stay > 0, and the move must not lower the potential
  Φ = Δ_p* + μ · Σ_{c ∈ C+} log Δ_c, i.e. Φ' − Φ = (Δ'_p* − Δ_p*) + μ · Σ_{C+} log(Δ'_c / Δ_c) ≥ 0.
  A control's loss costs μ times its relative loss of margin, so it is nearly free far from zero and
  refused near zero: a gain g of the focus buys at most a factor e^(g/μ) of margin. Controls wrong
  at baseline (b_c ≤ 0) have no margin to protect and hold as in ``focused``, Δ_c ≥ b_c − ε.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FITNESS_NAMES = ("average", "borderline", "borderline_saturating", "focused", "focused_proportional",
                 "focused_barrier")
FOCUS_ORDERS = ("fixed", "dynamic")
_TINY = np.finfo(np.float64).tiny  # keeps log finite for a current control at exactly zero


@dataclass(frozen=True)
class Verdict:
    accept: bool
    value: float  # fitness of the candidate (focused: Δ of the focus target)
    margin: float  # distance of the closest comparison from its threshold


@dataclass
class Fitness:
    name: str
    base_t: np.ndarray
    base_c: np.ndarray
    lam: float = 1.0
    epsilon: float = 0.5  # focused, and focused_barrier's controls wrong at baseline: fixed slack
    slack_ratio: float = 0.5  # focused_proportional: ρ
    barrier_mu: float = 0.1  # focused_barrier: μ
    focus_order: str = "fixed"  # focused: "fixed" at baseline or "dynamic" (re-ranked every iteration)
    crossed: set = field(default_factory=set)  # focused: targets already carried over zero

    def __post_init__(self):
        if self.name not in FITNESS_NAMES:
            raise ValueError(f"unknown fitness {self.name!r} (choose from {', '.join(FITNESS_NAMES)})")
        if self.focus_order not in FOCUS_ORDERS:
            raise ValueError(f"unknown focus order {self.focus_order!r} (choose from {', '.join(FOCUS_ORDERS)})")
        if self.barrier_mu < 0:
            raise ValueError(f"barrier_mu must be >= 0, got {self.barrier_mu}")
        self.base_t = np.asarray(self.base_t, dtype=np.float64)
        self.base_c = np.asarray(self.base_c, dtype=np.float64)
        if self.focused and not len(self.base_t):
            raise ValueError("focused fitness needs at least one target")
        b = self.base_t
        # sorted() is stable, so equal |b| keep index order
        self.order = tuple(sorted((i for i in range(len(b)) if b[i] <= 0), key=lambda i: abs(b[i])))

    @property
    def focused(self) -> bool:
        return self.name.startswith("focused")

    # ------------------------------------------------------------------ scalar fitness
    def value(self, t: np.ndarray, c: np.ndarray) -> float:
        t, c = np.asarray(t, np.float64), np.asarray(c, np.float64)
        if self.name == "average":
            ctrl = np.maximum(0.0, self.base_c - c).mean() if len(c) else 0.0
            return float((t - self.base_t).mean() - self.lam * ctrl)
        if self.name in ("borderline", "borderline_saturating"):
            fixes = int(((self.base_t <= 0) & (t > 0)).sum())
            breaks = int(((self.base_t > 0) & (t <= 0)).sum())
            breaks_c = int(((self.base_c > 0) & (c <= 0)).sum())
            if self.name == "borderline":
                gain = (np.maximum(0.0, t - self.base_t) / (0.1 + np.abs(self.base_t))).mean()
            else:
                gain = (t / (0.1 + np.abs(t))).sum()
            return float(gain + 0.5 * fixes - 0.5 * breaks - self.lam * breaks_c)
        p = self.focus(t)
        return float(t[p]) if p is not None else 0.0

    def focus(self, t: np.ndarray) -> int | None:
        """Focused: index of the focus target p* in state t (None: every target has crossed)."""
        if self.focus_order == "fixed":
            return next((i for i in self.order if i not in self.crossed), None)
        wrong = [i for i in range(len(t)) if t[i] <= 0 and i not in self.crossed]
        return max(wrong, key=lambda i: (t[i], -i)) if wrong else None

    def slack(self) -> np.ndarray:
        if self.name == "focused_proportional":
            return self.slack_ratio * np.abs(self.base_c)
        return np.full(len(self.base_c), self.epsilon)

    # ------------------------------------------------------------------ decisions
    def judge(self, cur_t, cur_c, new_t, new_c) -> Verdict:
        """Is (new_t, new_c) an improvement over the accepted state (cur_t, cur_c)?"""
        new_t, new_c = np.asarray(new_t, np.float64), np.asarray(new_c, np.float64)
        if not self.focused:
            f_new, f_cur = self.value(new_t, new_c), self.value(cur_t, cur_c)
            return Verdict(f_new > f_cur, f_new, abs(f_new - f_cur))
        cur_t, cur_c = np.asarray(cur_t, np.float64), np.asarray(cur_c, np.float64)
        p = self.focus(cur_t)
        if p is None:
            return Verdict(False, 0.0, np.inf)
        gain = float(new_t[p] - cur_t[p])  # must be > 0
        strict = [float(new_t[i]) for i in sorted(self.crossed)]  # each must be > 0
        floor = self.base_c - self.slack()
        if self.name == "focused_barrier":
            pos = self.base_c > 0
            strict += list(new_c[pos])
            weak = list(new_c[~pos] - floor[~pos])  # each must be >= 0
            if np.all(new_c[pos] > 0):
                log_ratio = np.log(new_c[pos]) - np.log(np.maximum(cur_c[pos], _TINY))
                weak.append(gain + self.barrier_mu * float(log_ratio.sum()))  # Φ' − Φ
        else:
            weak = list(new_c - floor)
        ok = gain > 0 and all(x > 0 for x in strict) and all(x >= 0 for x in weak)
        return Verdict(bool(ok), float(new_t[p]), float(min(abs(x) for x in [gain] + strict + weak)))

    def accepted(self, cur_t, new_t) -> list[int]:
        """Update focused state after an acceptance: if the focus target crossed zero it joins the
        crossed set (and is protected from then on). Returns the targets that joined."""
        if not self.focused:
            return []
        p = self.focus(np.asarray(cur_t, np.float64))
        if p is not None and new_t[p] > 0:
            self.crossed.add(p)
            return [p]
        return []

    def done(self, cur_t) -> bool:
        """Focused: every target has crossed, so every further proposal is refused."""
        return self.focused and self.focus(np.asarray(cur_t, np.float64)) is None
