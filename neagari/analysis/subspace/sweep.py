"""The subspace sweep end to end: one patch's per-layer table (:func:`sweep_patch`), the summary
over layers (:func:`summarize`), the joint R_act-vs-R_w scatter (:func:`neagari.report.subspace_figure.plot_joint_scatter`) and
a ranked conclusion in Markdown (:func:`write_conclusion`). Definitions in :mod:`neagari.analysis.subspace.measures`.
"""

from __future__ import annotations

import math
from typing import Sequence

import polars as pl

from neagari.analysis.subspace.measures import (COMBINED_TARGETS, NullCache, layer_targets, left_basis, matched_target, pca_basis,
                       resolve_ranks, score_rows)
from neagari.analysis.subspace.bases import (Candidate, activation_candidates, activation_delta, last_token_residuals,
                             weight_delta_factors)
from neagari.analysis.subspace.schemas import SubspacePerLayer
from neagari.tables import polars_schema

_ZERO = 1e-20  # an activation delta below this energy per layer is "untouched" (layers before the patch)


# the columns of score_rows, plus the candidate's definition: the per-layer table less the patch's keys
# (model, patch, stage, run), which the caller adds
ROW_SCHEMA = {k: v for k, v in polars_schema(SubspacePerLayer).items() if k not in ("model", "patch", "stage", "run")}


def split_fit_eval(n: int) -> tuple[list[int], list[int]]:
    """Indices of the bases' half (even) and the scored half (odd); one probe: both are it."""
    if n < 2:
        return list(range(n)), list(range(n))
    return list(range(0, n, 2)), list(range(1, n, 2))


def sweep_patch(engine, moves, weight_cands: Sequence[Candidate], target_seqs: Sequence[Sequence[int]],
                control_seqs: Sequence[Sequence[int]], ranks: Sequence[int], n_random: int, seed: int,
                batch_size: int = 32) -> pl.DataFrame:
    """Score every candidate against one patch's deltas, layer by layer.

    engine: the model the patch applies to (its base), left unpatched on return. weight_cands:
    from :func:`neagari.analysis.subspace.bases.weight_candidates`. target_seqs / control_seqs: prompt token
    ids; even-indexed targets fit the activation bases and the activation ceiling, odd ones are
    scored, so no basis sees the probes it is scored on. Returns one row per layer × candidate ×
    rank × target (each patched tensor, the write/read/all combinations, 'activation')."""
    if not moves:  # the search kept nothing: no delta, no rows (the table still exists)
        return pl.DataFrame(schema=ROW_SCHEMA)
    fit, ev = split_fit_eval(len(target_seqs))
    kmax = max(ranks)
    base_t, delta = activation_delta(engine, moves, target_seqs, batch_size)  # (n_layer, N, H) each
    base_c = last_token_residuals(engine, control_seqs, batch_size) if control_seqs else base_t[:, fit]
    weights = weight_delta_factors(engine, moves)
    act_cands = activation_candidates(base_t[:, fit], base_c, kmax)
    nulls = NullCache(engine.cfg.hidden, n_random, seed)
    defs = {c.name: c.definition for c in [*weight_cands, *act_cands]}
    defs["delta_weight_svd"] = "ceiling: top left singular vectors of this layer's balanced weight delta"
    defs["delta_act_pca"] = "ceiling: uncentred PCA of the activation delta on the fitting half of the probes"
    rows = []
    for layer in range(engine.cfg.n_layer):
        targets = layer_targets(weights, layer)
        cands = {c.name: (c.kind, c.bases[layer]) for c in [*weight_cands, *act_cands]}
        if "all" in targets:
            cands["delta_weight_svd"] = ("ceiling", left_basis(targets["all"], kmax))
        X_fit, X_ev = delta[layer, fit], delta[layer, ev]
        if X_ev.pow(2).sum() > _ZERO and X_fit.pow(2).sum() > _ZERO:
            targets["activation"] = X_ev.T  # (H, N_eval)
            cands["delta_act_pca"] = ("ceiling", pca_basis(X_fit, kmax, center=False))
        if targets:
            rows += score_rows(layer, targets, cands, nulls, list(ranks))
    df = pl.DataFrame(rows, schema={k: v for k, v in ROW_SCHEMA.items() if k != "definition"})
    return df.with_columns(pl.col("candidate").replace_strict(defs, default="").alias("definition"))


def _pooled(prefix: str) -> list[pl.Expr]:
    """Mean over layers of R and energy, and the z of that mean against the mean of the layers'
    independent nulls: (R̄ − mean null) / (√Σσ² / n)."""
    n = pl.len()
    return [pl.col("R").mean().alias(f"R_{prefix}"), pl.col("energy").mean().alias(f"energy_{prefix}"),
            ((pl.col("R").mean() - pl.col("null_mean").mean())
             / (pl.col("null_std").pow(2).sum().sqrt() / n).clip(lower_bound=1e-12)).alias(f"z_{prefix}"),
            n.cast(pl.Int64).alias(f"n_layers_{prefix}")]


KEYS = ["model", "patch", "stage", "run", "candidate", "kind", "dim", "k"]


def summarize(per_layer: pl.DataFrame) -> pl.DataFrame:
    """One row per patch × candidate × rank: activation scores, weight scores on each combined
    target (write, read, all) and on the target the candidate's axis kind is ranked on (R_w, z_w)."""
    out = (per_layer.group_by(KEYS).agg(pl.col("rank").mean().alias("mean_rank")))
    act = per_layer.filter(pl.col("target") == "activation").group_by(KEYS).agg(_pooled("act"))
    out = out.join(act, on=KEYS, how="left")
    for side in COMBINED_TARGETS:
        w = per_layer.filter(pl.col("target") == side).group_by(KEYS).agg(_pooled(f"w_{side}"))
        out = out.join(w.drop(f"energy_w_{side}"), on=KEYS, how="left")
    out = out.with_columns(pl.col("kind").map_elements(matched_target, return_dtype=pl.String).alias("w_target"))
    for col in ("R", "z"):
        out = out.with_columns(pl.coalesce(
            pl.when(pl.col("w_target") == s).then(pl.col(f"{col}_w_{s}")) for s in COMBINED_TARGETS).alias(f"{col}_w"))
    n_int = [c for c in out.columns if c.startswith("n_layers_")]
    return out.with_columns(pl.col(n_int).fill_null(0)).sort(["model", "patch", "k", "kind", "candidate"])


def pick_rank(summary: pl.DataFrame, requested) -> int:
    """The rank of the summary to report: ``requested`` (an int, or a fraction of H as in the config)
    if it was scored, else the largest scored rank below it, else the smallest scored."""
    if summary.is_empty():
        return int(requested) if requested >= 1 else 1
    (k,) = resolve_ranks([requested], int(summary["dim"][0]))
    ks = sorted(summary["k"].unique().to_list())
    below = [x for x in ks if x <= k]
    return below[-1] if below else ks[0]


# ---------------------------------------------------------------------------- conclusion


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def write_conclusion(summary: pl.DataFrame, k: int, null_stage: str = "randomflip",
                     empty_patches: Sequence[str] = ()) -> str:
    """A short Markdown conclusion from the summary table at rank ``k``: per axis kind, candidates
    ranked by their weight z (matched side) over the searched patches, next to the same scores on
    the random-flip null patches; then each searched patch's best write, read and mixed candidate
    beside its own null patch (same run name) where there is one. ``empty_patches``: patches that
    kept no move (named, not scored)."""
    df = summary.filter(pl.col("k") == k)
    searched, null = df.filter(pl.col("stage") != null_stage), df.filter(pl.col("stage") == null_stage)
    lines = [f"# Subspace sweep: where the patches' deltas live (rank {k})", "",
             "R is the energy fraction over the random-subspace expectation k/H (1 = random, H/k = all of "
             "it); z is against random orthonormal bases of the same rank, pooled over layers. Weight "
             "scores are on the side the candidate's kind can explain: write bases on write-side deltas, "
             "read bases on read-side deltas, the rest on all. A ranking means something only where it "
             f"beats the random-flip null patches ({null_stage}/*), which flip as many groups at random.", ""]
    if searched.is_empty():
        empty = [f"Patches that kept no move: {', '.join(sorted(empty_patches))}.", ""] if empty_patches else []
        return "\n".join(lines + ["No searched patch was scored.", ""] + empty)
    agg = [pl.col(c).mean().alias(c) for c in ("R_act", "z_act", "R_w", "z_w")]
    s = searched.group_by("candidate", "kind").agg(agg)
    n = null.group_by("candidate", "kind").agg([e.name.suffix("_null") for e in agg]) if null.height else None
    table = s.join(n, on=["candidate", "kind"], how="left") if n is not None else s
    for kind in ("write", "read", "mixed", "ceiling", "random"):
        t = table.filter(pl.col("kind") == kind).sort("z_w", descending=True, nulls_last=True)
        if t.is_empty():
            continue
        lines += [f"## {kind} candidates", "",
                  "| rank | candidate | R_act | z_act | R_w | z_w | null R_act | null z_act | null R_w | null z_w |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(t.iter_rows(named=True), 1):
            lines.append(f"| {i} | `{r['candidate']}` | {_f(r['R_act'])} | {_f(r['z_act'], '{:+.1f}')} | "
                         f"{_f(r['R_w'])} | {_f(r['z_w'], '{:+.1f}')} | {_f(r.get('R_act_null'))} | "
                         f"{_f(r.get('z_act_null'), '{:+.1f}')} | {_f(r.get('R_w_null'))} | "
                         f"{_f(r.get('z_w_null'), '{:+.1f}')} |")
        lines.append("")
    lines += ["## Best candidate of each kind, per patch (by weight z)", ""]
    for patch in sorted(searched["patch"].unique().to_list()):
        p = searched.filter(pl.col("patch") == patch)
        run = p["run"][0]
        own_null = null.filter(pl.col("run") == run)
        parts = []
        for kind in ("write", "read", "mixed"):
            top = p.filter((pl.col("kind") == kind) & pl.col("z_w").is_not_null()).sort("z_w", descending=True)
            if top.is_empty():
                continue
            r = top.row(0, named=True)
            ref = own_null.filter(pl.col("candidate") == r["candidate"])
            vs = (f" (null {null_stage}/{run}: R_w {_f(ref['R_w'][0])}, z {_f(ref['z_w'][0], '{:+.1f}')})"
                  if ref.height else "")
            parts.append(f"{kind} `{r['candidate']}` R_w {_f(r['R_w'])}, z {_f(r['z_w'], '{:+.1f}')}{vs}")
        lines.append(f"- **{patch}**: " + ("; ".join(parts) if parts else "no weight scores"))
    if empty_patches:
        lines += ["", "Patches that kept no move (nothing to score): " + ", ".join(sorted(empty_patches)) + "."]
    return "\n".join(lines) + "\n"
