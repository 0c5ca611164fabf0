"""Rule audit_search: every audit computed from one model's search records alone (no model):
§7.6 boundary crossing, §7.1 acceptance and λ sweep, §7.4 interference by quartile (weight and
scale passes), §7.5 scale share, §7.3 group overlap, §7.1.1 null baseline, §6.8 fitness modes, and
the random-flip null (neagari.analysis.audits)."""
import json
from pathlib import Path

import polars as pl

from neagari.analysis import audits
from neagari.analysis.schemas import (AcceptanceTable, BoundaryCrossingFlips, BoundaryCrossingSummary, FitnessModes,
                                      GroupOverlap, LayerProjectionByRun, MoveTypeShare, NullBaselineTable,
                                      NullBaselineVerdict, QuartilesByRun, RandomFlipNull)
from neagari.engine.quants import block_format
from neagari.engine.gguf_io import GGUFFile
from neagari.search.patch import read_patch
from neagari.workflow.smk import rule_context
from neagari.tables import write_table

inp, out, p = snakemake.input, snakemake.output, snakemake.params
model = snakemake.wildcards.model


def load(run, patch, summary, iterations):
    flags = pl.read_parquet(iterations, columns=["iteration", "accepted"]).sort("iteration")["accepted"].to_list()
    return audits.AuditedRun(stage=run["stage"], name=run["name"], kind=run["kind"], seed=run["seed"],
                             patch=read_patch(patch), summary=json.loads(Path(summary).read_text()), flags=flags)


with rule_context(snakemake, config_keys=["search"]) as log:
    runs = [load(*r) for r in zip(p.runs, inp.patches, inp.summaries, inp.iterations)]
    per_flip, summary = audits.search_crossing(runs)
    write_table(per_flip, out.crossing_flips, BoundaryCrossingFlips)
    write_table(summary, out.crossing_summary, BoundaryCrossingSummary)
    write_table(audits.search_acceptance(runs, p.checkpoints, p.window), out.acceptance, AcceptanceTable)
    write_table(audits.search_acceptance(runs, p.checkpoints, p.window, stage="lambda"), out.lambda_sweep,
                AcceptanceTable)
    write_table(audits.pipeline_quartiles(runs), out.quartiles, QuartilesByRun)
    write_table(audits.pipeline_move_share(runs), out.scale_share, MoveTypeShare)
    write_table(audits.pipeline_layer_projection(runs), out.layer_projection, LayerProjectionByRun)
    base = GGUFFile(inp.base_model)
    n_groups = {n: r.nbytes // block_format(r.ggml_type).BLOCK_BYTES for n, r in base.tensors.items()
                if block_format(r.ggml_type) is not None}  # Q1_0 and Q2_0 blocks alike
    write_table(audits.pipeline_group_overlap(runs, n_groups), out.overlap, GroupOverlap)
    trained, null = audits.null_baseline_sides(runs, model)
    write_table(audits.null_baseline_table(trained + null), out.null_table, NullBaselineTable)
    write_table(audits.null_baseline_verdict(trained, null, p.threshold_pp), out.null_verdict, NullBaselineVerdict)
    write_table(audits.fitness_modes(runs, model), out.fitness_modes, FitnessModes)
    write_table(audits.random_flip_null(runs, model), out.random_flip, RandomFlipNull)
    log.info("audited %d runs of %s", len(runs), model)
