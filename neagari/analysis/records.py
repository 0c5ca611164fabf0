"""Flip records as the audits read them (neagari.analysis.audits, neagari.analysis.crossing).

Flip records are the dicts of a patch's ``flips`` list (``Patch.records``). Their gap lists are
``[[name, gap], ...]`` read positionally: names may repeat, so they are never used as keys. Gaps
are logits (logit(correct) - logit(wrong)); a probe is right when its gap is > 0.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from neagari.tables import polars_schema

GAP_KEYS = ("target_gaps_before", "target_gaps_after", "control_gaps_before", "control_gaps_after")


def gap_list(rec: dict, key: str, i: int) -> tuple[list[str], np.ndarray]:
    """Names and gaps (float64, shape (n_probes,)) of one gap list of flip ``i``."""
    pairs = rec.get(key)
    if pairs is None:
        raise ValueError(f"flip {i}: no {key!r}; the search did not record per-flip gaps "
                         f"(upstream: --log-flip-detail), so this audit cannot run")
    try:
        names = [str(p[0]) for p in pairs]
        gaps = np.array([float(p[1]) for p in pairs], dtype=np.float64)
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"flip {i}: {key} must be a list of [name, gap] pairs") from None
    return names, gaps


def flip_gaps(rec: dict, i: int) -> dict[str, tuple[list[str], np.ndarray]]:
    """All four gap lists of flip ``i``, checked to pair up positionally before vs after."""
    g = {k: gap_list(rec, k, i) for k in GAP_KEYS}
    for kind in ("target", "control"):
        before, after = g[f"{kind}_gaps_before"], g[f"{kind}_gaps_after"]
        if before[0] != after[0]:
            raise ValueError(f"flip {i}: {kind} probes before and after differ in number or order")
    return g


def crossings(before: np.ndarray, after: np.ndarray) -> tuple[int, int]:
    """(fixes, breaks): probes going from <= 0 to > 0, and from > 0 to <= 0."""
    return int(np.sum((before <= 0) & (after > 0))), int(np.sum((before > 0) & (after <= 0)))


def frame(rows: list[dict], schema) -> pl.DataFrame:
    """``rows`` as a frame with the dtypes of ``schema`` (all-null columns included)."""
    return pl.DataFrame(rows, schema=polars_schema(schema))


def mean_or_none(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None
