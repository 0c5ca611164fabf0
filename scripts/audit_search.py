"""Rule audit_search: every audit computed from one model's search records alone (no model):
§7.6 boundary crossing, §7.1 acceptance and λ sweep, §7.4 interference by quartile (weight and
scale passes), §7.5 scale share, §7.3 group overlap, §7.1.1 null baseline, §6.8 fitness modes, and
the random-flip null."""
import json
from pathlib import Path

import numpy as np
import polars as pl

from neagari.analysis import audits
from neagari.engine.gguf_io import GGUFFile
from neagari.search.patch import read_patch
from neagari.workflow.smk import rule_context
from neagari.tables import write_table

out, p = snakemake.output, snakemake.params
model = snakemake.wildcards.model


def run_dir(stage, run):
    return Path(f"results/search/{model}/{stage}/{run}")


def load(stage, run):
    d = run_dir(stage, run)
    return (read_patch(d / "patch.json"), json.loads((d / "summary.json").read_text()),
            pl.read_parquet(d / "iterations.parquet", columns=["iteration", "accepted"]))


with rule_context(snakemake, config_keys=["search"]) as log:
    runs = {(stage, run): load(stage, run) for stage, run in p.runs}
    pipeline = [(s, r) for s, r in p.runs if s in ("pass1", "pass2")]
    # §7.6: pooled over every pipeline patch
    per_flip, summary = audits.boundary_crossing_pooled({f"{s}/{r}": runs[(s, r)][0].records for s, r in pipeline})
    write_table(per_flip, out.crossing_flips, "boundary_crossing")
    write_table(summary, out.crossing_summary, "boundary_crossing_summary")
    # §7.1: acceptance trajectories of every search but the random-flip null (which accepts all)
    flags = {f"{s}/{r}": v[2].sort("iteration")["accepted"].to_list() for (s, r), v in runs.items() if s != "randomflip"}
    write_table(audits.acceptance_table(flags, p.checkpoints, p.window), out.acceptance, "acceptance_table")
    write_table(audits.acceptance_table({k: v for k, v in flags.items() if k.startswith("lambda/")},
                                        p.checkpoints, p.window), out.lambda_sweep, "acceptance_table")
    # §7.4: interference by iteration quartile, weight (pass1) and scale (pass2) passes
    frames = []
    for s, r in pipeline:
        patch, summ, _ = runs[(s, r)]
        q = audits.interference_by_quartile(patch.records, summ["iterations_run"], by_move_type=s == "pass2")
        frames.append(q.with_columns(pl.lit(s).alias("stage"), pl.lit(r).alias("domain")))
    write_table(pl.concat(frames), out.quartiles, "quartiles_by_run")
    # §7.5 scale share of pass-2 flips; §7.3 where each domain's patch acts
    pass2 = {r: runs[(s, r)][0].moves for s, r in pipeline if s == "pass2"}
    write_table(audits.move_type_share(pass2 or {r: runs[(s, r)][0].moves for s, r in pipeline}),
                out.scale_share, "move_type_share")
    frames = [audits.layer_projection_counts(runs[(s, r)][0].moves).with_columns(
        pl.lit(s).alias("stage"), pl.lit(r).alias("domain")) for s, r in pipeline if runs[(s, r)][0].moves]
    write_table(pl.concat(frames) if frames else pl.DataFrame(schema={**dict.fromkeys(["layer", "flips", "distinct_groups"], pl.Int64), "proj": pl.String, "stage": pl.String, "domain": pl.String}),
                out.layer_projection, "layer_projection_by_run")
    base = GGUFFile(snakemake.input.base_model)
    n_groups = {n: r.nbytes // 18 for n, r in base.tensors.items() if r.ggml_type == 41}
    pass1 = {r: runs[(s, r)][0].moves for s, r in pipeline if s == "pass1"}
    write_table(audits.group_overlap(pass1, n_groups), out.overlap, "group_overlap")
    # §7.1.1: null baseline, several seeds per side
    rows = {"trained": [], "null": []}
    for (s, r), (_, summ, _) in runs.items():
        if s == "nullbase":
            kind, seed = r.split("-s")
            rows[kind].append({"model": f"{model}" if kind == "trained" else f"{model}-mlp-randomized",
                               "seed": int(seed), "accepted": summ["accepted"], "iterations": summ["iterations_run"]})
    write_table(audits.null_baseline_table(rows["trained"] + rows["null"]), out.null_table, "null_baseline_table")
    write_table(audits.null_baseline_verdict(rows["trained"], rows["null"], p.threshold_pp), out.null_verdict,
                "null_baseline_verdict")
    # §6.8: fitness modes on the targeted probes
    modes = []
    for (s, r), (patch, summ, it) in runs.items():
        if s != "targeted":
            continue
        nt = summ["n_targets"]
        base_t, base_c = np.array(summ["base_gaps"][:nt]), np.array(summ["base_gaps"][nt:])
        crossings = [rec["iteration"] for rec in patch.records
                     if any(b <= 0 < a for (_, b), (_, a) in zip(rec["target_gaps_before"], rec["target_gaps_after"]))]
        final_c = np.array(summ["final_gaps"][nt:])
        broken = (base_c > 0) & (final_c <= 0)
        modes.append({"model": model, "fitness": r, "iterations": summ["iterations_run"], "accepted": summ["accepted"],
                      "rate": summ["acceptance_rate"], "first_crossing": crossings[0] if crossings else None,
                      "second_crossing": crossings[1] if len(crossings) > 1 else None,
                      "crossings": int(((base_t <= 0) & (np.array(summ["final_gaps"][:nt]) > 0)).sum()),
                      "targets_wrong_at_start": int((base_t <= 0).sum()), "controls": len(base_c),
                      "controls_broken": int(broken.sum()),
                      "broken_control_baselines": ", ".join(f"{b:+.3f}" for b in base_c[broken])})
    write_table(pl.DataFrame(modes, schema_overrides={"first_crossing": pl.Int64, "second_crossing": pl.Int64}),
                out.fitness_modes, "fitness_modes")
    # §8 random-flip null: the same number of flips, kept regardless of fitness
    rf = []
    for (s, r), (_, summ, _) in runs.items():
        if s not in ("randomflip",) and not (s == "pass1" and ("randomflip", r) in runs):
            continue
        nt = summ["n_targets"]
        b, f = np.array(summ["base_gaps"]), np.array(summ["final_gaps"])
        rf.append({"model": model, "domain": r, "kind": "random" if s == "randomflip" else "search",
                   "flips": summ["accepted"], "mean_target_delta": float((f[:nt] - b[:nt]).mean()),
                   "targets_fixed": int(((b[:nt] <= 0) & (f[:nt] > 0)).sum()),
                   "targets_broken": int(((b[:nt] > 0) & (f[:nt] <= 0)).sum()),
                   "mean_control_delta": float((f[nt:] - b[nt:]).mean()) if len(b) > nt else 0.0,
                   "controls_broken": int(((b[nt:] > 0) & (f[nt:] <= 0)).sum())})
    write_table(pl.DataFrame(rf), out.random_flip, "random_flip_null")
    log.info("audited %d runs of %s", len(runs), model)
