"""When our engine and llama.cpp may disagree: the one tolerance rule of every comparison of the two.

llama.cpp is compiled natively on each machine; its CPU kernels round activations (Q1_0 dots on
8-bit activations) in ways that differ by instruction set, so its top-1 token can flip wherever
the top two logits are close. Our engine computes in fp32 and has its own (smaller) rounding. The
rule is symmetric: a step is a near-tie when the top-2 margin of *either* side is at most ``TIE``
of that side's logit range, and two greedy sequences must agree on every step before the first
near-tie of either side. Used by the llama.cpp tests and by the workflow's cross-check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

TIE = 0.01  # top-2 margin / max |logit|; llama.cpp's activation rounding moves logits ~1% of this
# llama.cpp's Q2_0 kernel moves them more: 1.4-2.5% of the logit range on the test shapes
# (tests/test_engine_q2.py), so a greedy step of a file with ternary tensors is a near-tie at 2%
TERNARY_TIE = 0.02


def tie_for(ggml_types) -> float:
    """The near-tie threshold of a file whose tensors have these GGML types: TERNARY_TIE when any
    is Q2_0, else TIE."""
    from neagari.engine import q2

    return TERNARY_TIE if q2.GGML_TYPE in set(ggml_types) else TIE


def relative_margins(logits) -> np.ndarray:
    """(..., V) logits -> (...) top-2 margin over the largest |logit| of each row (0 for a flat row)."""
    x = np.asarray(logits, dtype=np.float64)
    top2 = np.partition(x, -2, axis=-1)[..., -2:]
    scale = np.abs(x).max(axis=-1)
    return np.where(scale > 0, (top2[..., 1] - top2[..., 0]) / np.maximum(scale, 1e-30), 0.0)


def near_ties(ours_logits, ref_logits, tie: float = TIE) -> np.ndarray:
    """(..., V) twice -> (...) bool: rows where either side's argmax may flip under rounding."""
    return (relative_margins(ours_logits) <= tie) | (relative_margins(ref_logits) <= tie)


def first_tie(margins: Sequence[float], tie: float = TIE) -> int | None:
    """Index of the first step whose margin is a near-tie, or None."""
    return next((i for i, m in enumerate(margins) if m <= tie), None)


def continuation_margins(engine, prompt: Sequence[int], continuation: Sequence[int]) -> list[float]:
    """Our engine's relative margin at each step of ``continuation`` after ``prompt`` (one more
    than its tokens: the step after the last one too), by one teacher-forced pass."""
    ids = list(prompt) + list(continuation)
    logits = engine.logits([ids], last_only=False)[0][len(prompt) - 1 :]
    return relative_margins(logits.float().numpy()).tolist()


@dataclass(frozen=True)
class GreedyAgreement:
    agree_prefix: int  # steps both emitted the same token (an end of generation counts as a step)
    first_tie_ours: int | None
    first_tie_ref: int | None
    verdict: str  # identical | near-tie | disagree

    @property
    def first_tie(self) -> int | None:
        ties = [t for t in (self.first_tie_ours, self.first_tie_ref) if t is not None]
        return min(ties) if ties else None


def compare_greedy(ours: Sequence[int], ours_margins: Sequence[float], ref: Sequence[int],
                   ref_margins: Sequence[float], tie: float = TIE) -> GreedyAgreement:
    """Two greedy continuations of one prompt, each with its per-step relative margins.

    ``*_margins[i]`` is the margin of the step that chose token ``i`` (one more than the tokens
    where a run ended on end-of-generation). The sequences share a prefix up to their first split,
    so up to and including that step both margins were taken on the same context: a split at or
    after either side's first near-tie is rounding, any earlier one is a real disagreement."""
    ours, ref = list(ours), list(ref)
    n = min(len(ours), len(ref))
    split = next((i for i in range(n) if ours[i] != ref[i]), n)
    t_ours, t_ref = first_tie(ours_margins, tie), first_tie(ref_margins, tie)
    result = GreedyAgreement(split, t_ours, t_ref, "identical")
    if ours == ref:
        return result
    tied = result.first_tie is not None and result.first_tie <= split
    return GreedyAgreement(split, t_ours, t_ref, "near-tie" if tied else "disagree")
