"""Fitness functions (PAPER.md §4) and our proposed variant.

Each takes the baseline gaps once, then judges candidate gaps against the current accepted state.
``judge`` returns a :class:`Verdict`: accept or not, the fitness value to log, and ``margin``, the
smallest distance of any comparison from its threshold (speculative search re-checks a verdict
whose margin is within floating-point noise by evaluating that proposal alone).

T targets, C controls, Δ current gaps, b baseline gaps:
- ``average``: F = mean_T(Δ − b) − λ · mean_C(max(0, b_c − Δ_c)); accept iff F' > F.
- ``borderline``: F = Σ_T Δ/(0.1 + |Δ|) + 0.5 · (fixes − breaks) − λ · breaks_C; fixes/breaks are
  targets whose sign flipped up/down relative to baseline; breaks_C controls positive at baseline
  and ≤ 0 now. Accept iff F' > F.
- ``focused`` (lexicographic): p* = the wrong, not yet crossed target nearest zero. Accept iff
  Δ_p* improves, every control keeps Δ_c ≥ b_c − ε, and every crossed target stays > 0.
- ``focused_proportional`` (ours, PAPER.md §8/§9.5): as focused, but each control's slack is
  proportional to its own baseline, Δ_c ≥ b_c − ρ·|b_c|. With ρ < 1 a control that was right at
  baseline can never be pushed across zero, however small its margin (the paper's fixed ε = 0.5
  broke controls at +0.005 and +0.053).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FITNESS_NAMES = ("average", "borderline", "focused", "focused_proportional")


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
    epsilon: float = 0.5  # focused: fixed control slack
    slack_ratio: float = 0.5  # focused_proportional: ρ
    crossed: set = field(default_factory=set)  # focused: targets already carried over zero

    def __post_init__(self):
        if self.name not in FITNESS_NAMES:
            raise ValueError(f"unknown fitness {self.name!r} (choose from {', '.join(FITNESS_NAMES)})")
        self.base_t = np.asarray(self.base_t, dtype=np.float64)
        self.base_c = np.asarray(self.base_c, dtype=np.float64)
        if self.focused and not len(self.base_t):
            raise ValueError("focused fitness needs at least one target")

    @property
    def focused(self) -> bool:
        return self.name.startswith("focused")

    # ------------------------------------------------------------------ scalar fitness
    def value(self, t: np.ndarray, c: np.ndarray) -> float:
        t, c = np.asarray(t, np.float64), np.asarray(c, np.float64)
        if self.name == "average":
            ctrl = np.maximum(0.0, self.base_c - c).mean() if len(c) else 0.0
            return float((t - self.base_t).mean() - self.lam * ctrl)
        if self.name == "borderline":
            fixes = int(((self.base_t <= 0) & (t > 0)).sum())
            breaks = int(((self.base_t > 0) & (t <= 0)).sum())
            breaks_c = int(((self.base_c > 0) & (c <= 0)).sum())
            return float((t / (0.1 + np.abs(t))).sum() + 0.5 * (fixes - breaks) - self.lam * breaks_c)
        p = self.focus(t)
        return float(t[p]) if p is not None else 0.0

    def focus(self, t: np.ndarray) -> int | None:
        """Focused: index of the wrong, not yet crossed target nearest zero (None: all done)."""
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
        p = self.focus(np.asarray(cur_t, np.float64))
        if p is None:
            return Verdict(False, 0.0, np.inf)
        floor = self.base_c - self.slack()
        checks = [new_t[p] - cur_t[p]]  # must be > 0
        checks += list(new_c - floor)  # must be >= 0
        checks += [new_t[i] for i in self.crossed]  # must be > 0
        ok = checks[0] > 0 and all(x >= 0 for x in checks[1 : 1 + len(new_c)]) and all(
            x > 0 for x in checks[1 + len(new_c):])
        return Verdict(bool(ok), float(new_t[p]), float(min(abs(x) for x in checks)))

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
        return self.focused and self.focus(np.asarray(cur_t, np.float64)) is None
