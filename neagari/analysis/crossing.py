"""The §7.6 boundary-crossing audit: how often an accepted flip carries a target across zero, and
how far the wrong probes sit from the boundary against the mean per-flip effect, from flip records
alone (no model). Tables: ``BoundaryCrossingFlips`` and ``BoundaryCrossingSummary``
(:mod:`neagari.analysis.schemas`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from neagari.analysis.records import crossings, flip_gaps, frame, mean_or_none
from neagari.analysis.schemas import BoundaryCrossingFlips, BoundaryCrossingSummary

# Wrong probes are counted the way upstream's notebook (boundary_crossing_audit.ipynb) counts
# them, which is how the paper arrives at 141: a probe is a name. The notebook reads a gap list
# into a dict, so a name listed twice in one patch is one probe carrying the gap listed last
# (upstream's math probe set lists five names twice: 33 wrong positions, 28 wrong probes).
# ``n_wrong_listed`` keeps the count by position beside it.


@dataclass(frozen=True)
class _PatchAudit:
    per_flip: pl.DataFrame
    deltas: np.ndarray  # (flips * targets,) after - before of every listed (flip, target) pair
    wrong_listed: int  # targets listed with gap <= 0 before the first flip, counted by position
    names: list[str]  # the target names as listed
    wrong: dict[str, float]  # probe name -> gap before the first flip, wrong probes only
    nearest: dict | None


def _wrong_by_name(names: Sequence[str], start: np.ndarray) -> dict[str, float]:
    """Wrong probes by name, in first-listed order; a repeated name keeps the gap listed last."""
    last = dict(zip(names, start.tolist()))
    return {n: g for n, g in last.items() if g <= 0}


def _audit_patch(records: Sequence[dict], label: str) -> _PatchAudit:
    """Per-flip frame plus the raw material of the summary, for one patch."""
    if not records:
        raise ValueError(f"{label}: no flips to audit")
    rows, deltas = [], []
    names0 = None
    for i, rec in enumerate(records):
        g = flip_gaps(rec, i)
        (t_names, tb), (_, ta) = g["target_gaps_before"], g["target_gaps_after"]
        (_, cb), (_, ca) = g["control_gaps_before"], g["control_gaps_after"]
        if names0 is None:
            names0, start = t_names, tb
        elif t_names != names0:  # the drift below follows a probe by its position
            raise ValueError(f"{label}: flip {i} lists other targets than flip 0; audit each patch separately")
        d, dc = ta - tb, ca - cb
        fixes, breaks = crossings(tb, ta)
        c_fixes, c_breaks = crossings(cb, ca)
        deltas.append(d)
        rows.append({"patch": label, "flip": i, "iteration": rec.get("iteration"),
                     "layer": rec.get("layer"), "proj": rec.get("proj"), "group": rec.get("group"),
                     "move_type": rec.get("type", "group"), "n_targets": tb.size, "n_fixes": fixes,
                     "n_breaks": breaks, "n_controls": cb.size, "n_control_fixes": c_fixes,
                     "n_control_breaks": c_breaks, "mean_delta": mean_or_none(d),
                     "mean_abs_delta": mean_or_none(np.abs(d)), "control_mean_delta": mean_or_none(dc),
                     "control_mean_abs_delta": mean_or_none(np.abs(dc)),
                     "changes_target_sign": fixes + breaks > 0})
    d = np.stack(deltas)  # (flips, targets)
    end = ta  # the last flip's gaps after
    wrong = np.flatnonzero(start <= 0)
    nearest = None
    if wrong.size:
        j = int(wrong[np.argmax(start[wrong])])  # the wrong target closest to zero from below
        nearest = {"nearest_wrong_index": j, "nearest_wrong_name": names0[j],
                   "nearest_wrong_start": float(start[j]),
                   "nearest_wrong_mean_delta": float(d[:, j].mean()), "nearest_wrong_end": float(end[j])}
    return _PatchAudit(frame(rows, BoundaryCrossingFlips), d.ravel(), int(wrong.size), names0,
                       _wrong_by_name(names0, start), nearest)


_NEAREST_KEYS = ("nearest_wrong_index", "nearest_wrong_name", "nearest_wrong_start",
                 "nearest_wrong_mean_delta", "nearest_wrong_end")
_DISTANCE_KEYS = ("n_wrong_probes", "n_wrong_listed", "median_wrong_distance", "mean_wrong_distance",
                  "median_distance_ratio", "mean_distance_ratio")


def _empty_row(label: str) -> dict:
    """The summary of a patch that kept no flip: its records carry no gaps, so the wrong targets
    are unknown here (their counts null)."""
    return {"patch": label, "flips": 0, "flips_changing_any_target_sign": 0,
            "flips_changing_any_control_sign": 0, "total_fixes": 0, "total_breaks": 0,
            "mean_delta": None, "mean_abs_delta": None, **dict.fromkeys(_DISTANCE_KEYS),
            **dict.fromkeys(_NEAREST_KEYS)}


def _distances(wrong_gaps: Sequence[float], n_listed: int | None, mean_delta: float | None) -> dict:
    """The wrong-probe columns: counts, median and mean |gap|, each over |mean_delta|."""
    dist = np.abs(np.asarray(wrong_gaps, dtype=np.float64))
    median = float(np.median(dist)) if dist.size else None
    mean = float(dist.mean()) if dist.size else None

    def ratio(x):
        return x / abs(mean_delta) if x is not None and mean_delta else None

    return {"n_wrong_probes": int(dist.size), "n_wrong_listed": n_listed, "median_wrong_distance": median,
            "mean_wrong_distance": mean, "median_distance_ratio": ratio(median), "mean_distance_ratio": ratio(mean)}


def _summary_row(label: str, per_flip: pl.DataFrame, deltas: np.ndarray, wrong_gaps: Sequence[float],
                 n_listed: int | None, nearest: dict | None) -> dict:
    mean_delta = mean_or_none(deltas)
    control_sign = (per_flip["n_control_fixes"] + per_flip["n_control_breaks"]) > 0
    return {"patch": label, "flips": per_flip.height,
            "flips_changing_any_target_sign": int(per_flip["changes_target_sign"].sum()),
            "flips_changing_any_control_sign": int(control_sign.sum()),
            "total_fixes": int(per_flip["n_fixes"].sum()), "total_breaks": int(per_flip["n_breaks"].sum()),
            "mean_delta": mean_delta, "mean_abs_delta": mean_or_none(np.abs(deltas)),
            **_distances(wrong_gaps, n_listed, mean_delta), **(nearest or dict.fromkeys(_NEAREST_KEYS))}


def boundary_crossing(records: Sequence[dict], label: str = "patch") -> tuple[pl.DataFrame, pl.DataFrame]:
    """§7.6: how many accepted flips moved any target across the decision boundary, and how far
    the wrong targets are from it compared with one flip's typical effect.

    ``records``: one patch's flip records (all accepted), each with the four gap lists.
    Returns ``(per_flip, summary)``: per_flip has one row per flip (columns of
    ``BoundaryCrossingFlips``; deltas are after - before, in logits, means over targets or
    controls); summary is one row (``BoundaryCrossingSummary``) where ``mean_delta`` is the mean
    over all listed (flip, target) pairs and the wrong probes are those with gap <= 0 before the
    first flip, keyed by name (see the note above ``_PatchAudit``):

    - ``n_wrong_probes``: wrong probes by name (the notebook's and the paper's count);
      ``n_wrong_listed``: wrong targets by position, a repeated name counted each time;
    - ``median_wrong_distance``: median |gap| of the wrong probes (the paper's text, §7.6);
      ``mean_wrong_distance``: their mean |gap| (the notebook's "average wrong probe");
    - ``median_distance_ratio`` and ``mean_distance_ratio``: each distance / |mean_delta|. The
      notebook divides by the mean of its name-keyed deltas instead, which differs from
      ``mean_delta`` only where a name is listed twice.

    The ``nearest_wrong_*`` columns follow the wrong target closest to zero, by position (null if
    none is wrong).
    """
    if not records:
        return frame([], BoundaryCrossingFlips), frame([_empty_row(label)], BoundaryCrossingSummary)
    a = _audit_patch(records, label)
    row = _summary_row(label, a.per_flip, a.deltas, list(a.wrong.values()), a.wrong_listed, a.nearest)
    return a.per_flip, frame([row], BoundaryCrossingSummary)


POOLINGS = ("first", "every")


def boundary_crossing_pooled(records_by_patch: Mapping[str, Sequence[dict]],
                             pool: str = "first") -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`boundary_crossing` for several patches (e.g. every domain of both passes).

    Returns the per-flip rows of all patches and one summary row per patch plus a last row,
    patch ``"all"``, pooling every flip and (flip, target) delta (the paper's 2,252 flips). Its
    wrong probes depend on ``pool``:

    - ``"first"``: each probe name once, at the start of the first patch (in mapping order) that
      lists it. With pass 1 before pass 2, whose searches reuse pass 1's probe sets, these are
      the probes wrong on the base model: the paper's "141 wrong probes at baseline";
      ``n_wrong_listed`` is then null (positions do not carry across patches);
    - ``"every"``: every patch's wrong probes at its own start, pooled, as the notebook's
      histogram and "average wrong probe" do (a probe of both passes counts twice).

    The pooled nearest wrong probe is the closest of all patches', named ``"<patch>:<probe>"``.
    """
    if pool not in POOLINGS:
        raise ValueError(f"pool must be one of {POOLINGS}, got {pool!r}")
    if "all" in records_by_patch:
        raise ValueError('"all" names the pooled row; rename that patch')
    frames, rows, all_d, wrong_every, wrong_first, n_listed = [], [], [], [], {}, 0
    for label, records in records_by_patch.items():
        if not records:  # a search that kept no move: a row of its own, nothing to pool
            rows.append(_empty_row(label))
            continue
        a = _audit_patch(records, label)
        frames.append(a.per_flip)
        rows.append(_summary_row(label, a.per_flip, a.deltas, list(a.wrong.values()), a.wrong_listed, a.nearest))
        all_d.append(a.deltas)
        wrong_every.extend(a.wrong.values())
        n_listed += a.wrong_listed
        for name in a.names:
            if name not in wrong_first:
                wrong_first[name] = a.wrong.get(name)  # None: right at the first patch that lists it
    if not frames:
        raise ValueError("no patch kept a flip: nothing to audit")
    per_flip = pl.concat(frames)
    candidates = [r for r in rows if r["nearest_wrong_start"] is not None]
    best = max(candidates, key=lambda r: r["nearest_wrong_start"], default=None)
    nearest = None
    if best is not None:
        nearest = {k: best[k] for k in _NEAREST_KEYS}
        nearest["nearest_wrong_name"] = f"{best['patch']}:{best['nearest_wrong_name']}"
    if pool == "first":
        wrong, listed = [g for g in wrong_first.values() if g is not None], None
    else:
        wrong, listed = wrong_every, n_listed
    rows.append(_summary_row("all", per_flip, np.concatenate(all_d), wrong, listed, nearest))
    return per_flip, frame(rows, BoundaryCrossingSummary)
