"""Audits of finished searches, computed from flip records and acceptance flags alone (no model).

Every function is pure and returns polars DataFrames whose pandera models live in
:mod:`neagari.analysis.schemas` (each function names its model). Gaps are
logits (logit(correct) - logit(wrong)); a probe is right when its gap is > 0. Rates are
fractions in [0, 1]; columns ending in ``_pp`` or starting ``pct_`` are percent.

Flip records are read by :mod:`neagari.analysis.records`; the §7.6 boundary-crossing audit is
:mod:`neagari.analysis.crossing`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from neagari import stats
from neagari.analysis.crossing import boundary_crossing_pooled
from neagari.analysis.records import flip_gaps, frame, mean_or_none
from neagari.analysis.schemas import (FitnessModes, GroupOverlap, InterferenceByQuartile, MoveTypeShare,
                                      NullBaselineTable, NullBaselineVerdict, RandomFlipNull)
from neagari.search.patch import Move, Patch
from neagari.tables import polars_schema


# ---------------------------------------------------------------------------- §7.1 acceptance


def recorded_iterations(patch: Patch) -> int | None:
    """How many iterations the search behind an upstream-format patch ran, or None if unknown.

    Our runner records ``iterations_run``. Upstream's search appends one ``fitness_history`` entry
    per iteration it ran, so an auto-terminated run's history ends where the run stopped, while
    its ``iterations`` field is the budget it was given. The budget is never used: rejects
    past the stop would lower every rate read after it.
    """
    run = patch.metadata.get("iterations_run")
    if run is not None:
        return int(run)
    n = len(patch.fitness_history)
    last = max((int(r["iteration"]) for r in patch.records if "iteration" in r), default=-1)
    # a history shorter than the last kept iteration number is not one entry per iteration
    return n if n and n >= last else None


def recorded_flags(patch: Patch) -> list[bool] | None:
    """Accepted flag per iteration run, from a patch's kept-flip iteration numbers and
    :func:`recorded_iterations`; None when either is missing."""
    total = recorded_iterations(patch)
    kept = {int(r["iteration"]) for r in patch.records if "iteration" in r}
    if not total or not kept:
        return None
    if max(kept) == total and min(kept) >= 1:  # numbered from 1
        kept = {i - 1 for i in kept}
    if max(kept) >= total:
        return None
    return [i in kept for i in range(total)]


def acceptance_table(runs: Mapping[str, Sequence[bool]], checkpoints: Sequence[int] = (50, 200, 500, 1000),
                     window: int = 200) -> pl.DataFrame:
    """§7.1: one row per run (``runs``: name -> accepted flag per iteration, in order).

    Columns: run, iterations, accepted, rate (whole run), ``rate_at_<c>`` per checkpoint (the
    cumulative rate over the first c iterations; null when the run is shorter) and
    rolling_final (rate over the last ``window`` iterations). Rates are fractions.
    """
    schema = {"run": pl.String, "iterations": pl.Int64, "accepted": pl.Int64, "rate": pl.Float64,
              **{f"rate_at_{c}": pl.Float64 for c in checkpoints}, "rolling_final": pl.Float64}
    rows = []
    for name, flags in runs.items():
        flags = [bool(f) for f in flags]
        cum = stats.cumulative_rates(flags, checkpoints)
        n = len(flags)
        rows.append({"run": name, "iterations": n, "accepted": sum(flags),
                     "rate": sum(flags) / n if n else None,
                     **{f"rate_at_{c}": cum.get(c) for c in checkpoints},
                     "rolling_final": stats.rolling_rate(flags, window) if n else None})
    return pl.DataFrame(rows, schema=schema)


# ---------------------------------------------------------------------------- §7.4 interference


def interference_by_quartile(records: Sequence[dict], iterations_run: int,
                             by_move_type: bool = False) -> pl.DataFrame:
    """§7.4: per-flip interference in each quarter of a run's iterations.

    Flip with 0-based ``iteration`` i falls in quartile q = floor(4 i / iterations_run) + 1,
    covering iterations [iter_lo, iter_hi). Per quartile (and per move type, "weight" for group
    XORs and "scale", when ``by_move_type``): flips, mean_target_improvement (mean of
    after - before over all (flip, target) pairs, logits), mean_abs_control_disturbance (mean
    |after - before| over (flip, control) pairs), pct_controls_improved (percent of those
    control deltas > 0). Every quartile gets a row; empty ones have flips 0 and null means.
    """
    if iterations_run < 1:
        raise ValueError(f"iterations_run must be >= 1, got {iterations_run}")
    types = ("weight", "scale") if by_move_type else ("all",)
    cells = {(q, t): ([], []) for q in range(1, 5) for t in types}
    for i, rec in enumerate(records):
        it = rec.get("iteration")
        if not isinstance(it, int) or not 0 <= it < iterations_run:
            raise ValueError(f"flip {i}: iteration {it!r} is not in [0, {iterations_run})")
        g = flip_gaps(rec, i)
        kind = ("scale" if rec.get("type") == "scale" else "weight") if by_move_type else "all"
        t_d, c_d = cells[(4 * it // iterations_run + 1, kind)]
        t_d.append(g["target_gaps_after"][1] - g["target_gaps_before"][1])
        c_d.append(g["control_gaps_after"][1] - g["control_gaps_before"][1])
    rows = []
    for (q, kind), (t_d, c_d) in cells.items():
        t = np.concatenate(t_d) if t_d else np.empty(0)
        c = np.concatenate(c_d) if c_d else np.empty(0)
        rows.append({"quartile": q, "iter_lo": -(-(q - 1) * iterations_run // 4),
                     "iter_hi": -(-q * iterations_run // 4), "move_type": kind, "flips": len(t_d),
                     "mean_target_improvement": mean_or_none(t), "mean_abs_control_disturbance": mean_or_none(np.abs(c)),
                     "pct_controls_improved": 100 * float(np.mean(c > 0)) if c.size else None})
    return frame(rows, InterferenceByQuartile)


def interference_matrix(scores: pl.DataFrame) -> pl.DataFrame:
    """§6.6: mean probe-gap change per (patch domain, probe domain).

    ``scores``: one row per (patch_domain, probe_domain, probe) with gap_base and gap_patched
    (logits). Returns patch_domain, probe_domain, n_probes, mean_delta (mean of patched - base),
    n_fixed (base <= 0 < patched), n_broken (patched <= 0 < base), in order of first appearance.
    """
    need = {"patch_domain", "probe_domain", "probe", "gap_base", "gap_patched"}
    if missing := need - set(scores.columns):
        raise ValueError(f"scores lacks columns {sorted(missing)}")
    base, patched = pl.col("gap_base"), pl.col("gap_patched")
    return (scores.group_by("patch_domain", "probe_domain", maintain_order=True)
            .agg(n_probes=pl.len().cast(pl.Int64), mean_delta=(patched - base).mean().cast(pl.Float64),
                 n_fixed=((base <= 0) & (patched > 0)).sum().cast(pl.Int64),
                 n_broken=((base > 0) & (patched <= 0)).sum().cast(pl.Int64)))


# ---------------------------------------------------------------------------- §7.3, §7.5 where flips land


def move_type_share(moves_by_domain: Mapping[str, Sequence[Move]]) -> pl.DataFrame:
    """§7.5: per domain, flips, weight_flips (group XORs), scale_flips and scale_share
    (fraction of flips that are scale flips; null for a domain without flips)."""
    rows = []
    for domain, moves in moves_by_domain.items():
        scale = sum(m.type == "scale" for m in moves)
        rows.append({"domain": domain, "flips": len(moves), "weight_flips": len(moves) - scale,
                     "scale_flips": scale, "scale_share": scale / len(moves) if moves else None})
    return frame(rows, MoveTypeShare)


def layer_projection_counts(moves: Sequence[Move]) -> pl.DataFrame:
    """Flips per (layer, proj), long format for a heatmap: layer, proj, flips, distinct_groups
    (a group flipped twice counts once). Sorted by layer then proj; untouched cells are absent."""
    df = pl.DataFrame({"layer": [m.layer for m in moves], "proj": [m.proj for m in moves],
                       "group": [m.group for m in moves]},
                      schema={"layer": pl.Int64, "proj": pl.String, "group": pl.Int64})
    return (df.group_by("layer", "proj")
            .agg(flips=pl.len().cast(pl.Int64), distinct_groups=pl.col("group").n_unique().cast(pl.Int64))
            .sort("layer", "proj"))


def group_overlap(moves_by_domain: Mapping[str, Sequence[Move]], n_groups: Mapping[str, int]) -> pl.DataFrame:
    """§7.3: do two domains' patches touch the same (tensor, group) more often than chance?

    ``n_groups``: tensor name (``Move.tensor``, e.g. "blk.3.ffn_up.weight") -> its number of
    groups. Any move of a group (weight or scale) touches it. One row per domain pair (in the
    mapping's order): groups_a, groups_b (distinct groups touched), shared, jaccard,
    expected_shared = sum over tensors t of a_t * b_t / N_t (the mean overlap if each domain's
    a_t, b_t groups in t were drawn uniformly without replacement), overlap_ratio =
    shared / expected_shared (null when nothing is expected).
    """
    touched: dict[str, dict[str, set[int]]] = {}
    for domain, moves in moves_by_domain.items():
        per_tensor = touched.setdefault(domain, {})
        for m in moves:
            n = n_groups.get(m.tensor)
            if n is None:
                raise ValueError(f"{domain}: n_groups has no entry for tensor {m.tensor!r}")
            if m.group >= n:
                raise ValueError(f"{domain}: {m.describe()} is out of range, {m.tensor} has {n} groups")
            per_tensor.setdefault(m.tensor, set()).add(m.group)
    rows = []
    for a, b in itertools.combinations(touched, 2):
        ta, tb = touched[a], touched[b]
        size_a = sum(map(len, ta.values()))
        size_b = sum(map(len, tb.values()))
        common = sorted(ta.keys() & tb.keys())  # a fixed order keeps the float sum reproducible
        shared = sum(len(ta[t] & tb[t]) for t in common)
        expected = sum(len(ta[t]) * len(tb[t]) / n_groups[t] for t in common)
        union = size_a + size_b - shared
        rows.append({"domain_a": a, "domain_b": b, "groups_a": size_a, "groups_b": size_b,
                     "shared": shared, "jaccard": shared / union if union else None,
                     "expected_shared": float(expected),
                     "overlap_ratio": shared / expected if expected > 0 else None})
    return frame(rows, GroupOverlap)


# ---------------------------------------------------------------------------- §7.1.1 null baseline


def null_baseline_table(rows: Sequence[Mapping]) -> pl.DataFrame:
    """One row per (model, seed) search: model, seed, accepted, iterations, rate, ci_lo, ci_hi
    (Wilson 95% interval of the acceptance rate; fractions)."""
    out = []
    for r in rows:
        k, n = int(r["accepted"]), int(r["iterations"])
        lo, hi = stats.wilson_interval(k, n)
        out.append({"model": str(r["model"]), "seed": int(r["seed"]), "accepted": k, "iterations": n,
                    "rate": k / n, "ci_lo": lo, "ci_hi": hi})
    return frame(out, NullBaselineTable)


def null_baseline_verdict(trained_rows: Sequence[Mapping], null_rows: Sequence[Mapping],
                          threshold_pp: float = 10) -> pl.DataFrame:
    """The pre-registered test (§7.1.1), one row: the trained model's acceptance rate must exceed
    the sign-randomized model's by >= ``threshold_pp`` points with disjoint Wilson intervals.

    Seeds are pooled as one binomial sample per model (sum of accepted over sum of iterations);
    ``<side>_rate_sd`` (sample SD of the per-seed rates, null under two seeds) shows whether
    seed-to-seed spread, which pooling ignores, is small next to the gap.
    """
    trained, null = _pool_seeds("trained", trained_rows), _pool_seeds("null", null_rows)
    test = stats.two_proportion_gap_test(trained["trained_accepted"], trained["trained_iterations"],
                                         null["null_accepted"], null["null_iterations"], threshold_pp)
    row = {**trained, "trained_rate": test.rate1, "trained_ci_lo": test.ci1[0], "trained_ci_hi": test.ci1[1],
           **null, "null_rate": test.rate2, "null_ci_lo": test.ci2[0], "null_ci_hi": test.ci2[1],
           "gap_pp": test.gap_pp, "threshold_pp": float(threshold_pp),
           "gap_meets_threshold": test.gap_meets_threshold, "intervals_disjoint": test.intervals_disjoint,
           "passed": test.passed}
    return frame([row], NullBaselineVerdict)


def _pool_seeds(side: str, rows: Sequence[Mapping]) -> dict:
    """One model's runs as a single binomial sample, keys prefixed with ``side``."""
    if not rows:
        raise ValueError(f"no {side} runs")
    rates = [int(r["accepted"]) / int(r["iterations"]) for r in rows]
    return {f"{side}_model": ",".join(dict.fromkeys(str(r["model"]) for r in rows)),
            f"{side}_seeds": len(rows), f"{side}_accepted": sum(int(r["accepted"]) for r in rows),
            f"{side}_iterations": sum(int(r["iterations"]) for r in rows),
            f"{side}_rate_sd": float(np.std(rates, ddof=1)) if len(rates) > 1 else None}


# ---------------------------------------------------------------------------- one model's searches
# What rule audit_search computes from every search run of one model (scripts/audit_search.py reads
# the records and writes the tables). The pipeline is pass 1 and pass 2, in the config's order.

PIPELINE_STAGES = ("pass1", "pass2")


@dataclass(frozen=True)
class AuditedRun:
    """One finished search run: its record's identity, its patch, summary.json and acceptance
    flags (one per iteration, in iteration order)."""

    stage: str
    name: str
    patch: Patch
    summary: Mapping
    flags: Sequence[bool]
    kind: str | None = None  # null baselines: "trained" or "null"
    seed: int | None = None

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.name}"


def _pipeline(runs: Sequence[AuditedRun]) -> list[AuditedRun]:
    return [r for r in runs if r.stage in PIPELINE_STAGES]


def search_crossing(runs: Sequence[AuditedRun]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """§7.6 boundary crossing, pooled over every pipeline patch: (per flip, summary). Pass 1 goes
    first, so the pooled wrong probes are those wrong on the base model (the paper's count)."""
    ordered = sorted(_pipeline(runs), key=lambda r: PIPELINE_STAGES.index(r.stage))
    return boundary_crossing_pooled({r.label: r.patch.records for r in ordered})


def search_acceptance(runs: Sequence[AuditedRun], checkpoints: Sequence[int], window: int,
                      stage: str | None = None) -> pl.DataFrame:
    """§7.1 acceptance of every search (of one stage, given one) but the random-flip null, which
    accepts every proposal."""
    return acceptance_table({r.label: list(r.flags) for r in runs
                             if r.stage != "randomflip" and (stage is None or r.stage == stage)}, checkpoints, window)


def pipeline_quartiles(runs: Sequence[AuditedRun]) -> pl.DataFrame:
    """§7.4 interference by iteration quartile of each pipeline run; pass 2 split by move type."""
    frames = []
    for r in _pipeline(runs):
        q = interference_by_quartile(r.patch.records, r.summary["iterations_run"], by_move_type=r.stage == "pass2")
        frames.append(q.with_columns(pl.lit(r.stage).alias("stage"), pl.lit(r.name).alias("domain")))
    return pl.concat(frames)


def pipeline_move_share(runs: Sequence[AuditedRun]) -> pl.DataFrame:
    """§7.5 scale share of the pass-2 flips (of every pipeline patch when there is no pass 2)."""
    pass2 = {r.name: r.patch.moves for r in _pipeline(runs) if r.stage == "pass2"}
    return move_type_share(pass2 or {r.name: r.patch.moves for r in _pipeline(runs)})


def pipeline_layer_projection(runs: Sequence[AuditedRun]) -> pl.DataFrame:
    """§7.3 where each pipeline patch acts: flips per (layer, projection), with stage and domain."""
    frames = [layer_projection_counts(r.patch.moves).with_columns(pl.lit(r.stage).alias("stage"),
                                                                  pl.lit(r.name).alias("domain"))
              for r in _pipeline(runs) if r.patch.moves]
    if frames:
        return pl.concat(frames)
    return pl.DataFrame(schema={**dict.fromkeys(["layer", "flips", "distinct_groups"], pl.Int64), "proj": pl.String,
                                "stage": pl.String, "domain": pl.String})


def pipeline_group_overlap(runs: Sequence[AuditedRun], n_groups: Mapping[str, int]) -> pl.DataFrame:
    """§7.3 overlap of the groups the pass-1 patches flip (``n_groups``: tensor -> Q1_0 groups)."""
    return group_overlap({r.name: r.patch.moves for r in _pipeline(runs) if r.stage == "pass1"}, n_groups)


def null_baseline_sides(runs: Sequence[AuditedRun], model: str) -> tuple[list[dict], list[dict]]:
    """§7.1.1 (trained rows, null rows): one per seed of each side of the null baseline."""
    rows = {"trained": [], "null": []}
    for r in runs:
        if r.stage == "nullbase":
            rows[r.kind].append({"model": model if r.kind == "trained" else f"{model}-mlp-randomized",
                                 "seed": int(r.seed), "accepted": r.summary["accepted"],
                                 "iterations": r.summary["iterations_run"]})
    return rows["trained"], rows["null"]


def fitness_modes(runs: Sequence[AuditedRun], model: str) -> pl.DataFrame:
    """§6.8 one row per targeted run (one fitness function each): rate, the iterations of the
    first two target crossings, targets crossed, controls broken."""
    modes = []
    for r in runs:
        if r.stage != "targeted":
            continue
        summ = r.summary
        nt = summ["n_targets"]
        base_t, base_c = np.array(summ["base_gaps"][:nt]), np.array(summ["base_gaps"][nt:])
        crossings = [rec["iteration"] for rec in r.patch.records
                     if any(b <= 0 < a for (_, b), (_, a) in zip(rec["target_gaps_before"], rec["target_gaps_after"]))]
        final_c = np.array(summ["final_gaps"][nt:])
        broken = (base_c > 0) & (final_c <= 0)
        modes.append({"model": model, "fitness": r.name, "iterations": summ["iterations_run"],
                      "accepted": summ["accepted"], "rate": summ["acceptance_rate"],
                      "first_crossing": crossings[0] if crossings else None,
                      "second_crossing": crossings[1] if len(crossings) > 1 else None,
                      "crossings": int(((base_t <= 0) & (np.array(summ["final_gaps"][:nt]) > 0)).sum()),
                      "targets_wrong_at_start": int((base_t <= 0).sum()), "controls": len(base_c),
                      "controls_broken": int(broken.sum()),
                      "broken_control_baselines": ", ".join(f"{b:+.3f}" for b in base_c[broken])})
    # a model searched without targeted runs (search.comparison) gets the table's columns, no row
    return pl.DataFrame(modes, schema=polars_schema(FitnessModes))


def random_flip_null(runs: Sequence[AuditedRun], model: str) -> pl.DataFrame:
    """§8 random-flip null: each random-flip run (as many flips as its domain's pass-1 search
    kept, all kept) beside that pass-1 search."""
    randomized = {r.name for r in runs if r.stage == "randomflip"}
    rows = []
    for r in runs:
        if r.stage != "randomflip" and not (r.stage == "pass1" and r.name in randomized):
            continue
        summ = r.summary
        nt = summ["n_targets"]
        b, f = np.array(summ["base_gaps"]), np.array(summ["final_gaps"])
        rows.append({"model": model, "domain": r.name, "kind": "random" if r.stage == "randomflip" else "search",
                     "flips": summ["accepted"], "mean_target_delta": float((f[:nt] - b[:nt]).mean()),
                     "targets_fixed": int(((b[:nt] <= 0) & (f[:nt] > 0)).sum()),
                     "targets_broken": int(((b[:nt] > 0) & (f[:nt] <= 0)).sum()),
                     "mean_control_delta": float((f[nt:] - b[nt:]).mean()) if len(b) > nt else 0.0,
                     "controls_broken": int(((b[nt:] > 0) & (f[nt:] <= 0)).sum())})
    return pl.DataFrame(rows, schema=polars_schema(RandomFlipNull))
