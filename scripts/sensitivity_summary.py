"""Rule sensitivity_summary: the resampled searches and the null baseline's trained seeds read
over the pass-1 budget, the spread of each metric on each side, and the comparison of the two."""
import json
from pathlib import Path

import polars as pl

from neagari.analysis import sensitivity
from neagari.analysis.schemas import SensitivityComparison, SensitivityRuns, SensitivitySpread
from neagari.tables import write_table
from neagari.workflow.smk import rule_context

inp, out, p = snakemake.input, snakemake.output, snakemake.params
COLUMNS = ["iteration", "accepted", "fitness_before", "fitness_after", "gaps"]


def row(kind, run, summary, iterations, resample=None):
    return sensitivity.run_row(kind, run, json.loads(Path(summary).read_text()),
                               pl.read_parquet(iterations, columns=COLUMNS), p.upto, resample)


with rule_context(snakemake, config_keys=["search"]) as log:
    rows = [row("original", p.original, inp.original_summary, inp.original_iterations)]
    rows += [row("resample", run, s, it, i)
             for i, run, s, it in zip(p.resamples, p.resample_runs, inp.resample_summaries, inp.resample_iterations)]
    rows += [row("seed", run, s, it) for run, s, it in zip(p.seed_runs, inp.seed_summaries, inp.seed_iterations)]
    runs = sensitivity.runs_table(rows)
    spreads = sensitivity.spread_table(runs)
    comparison = sensitivity.comparison_table(spreads)
    write_table(runs, out.runs, SensitivityRuns)
    write_table(spreads, out.spread, SensitivitySpread)
    write_table(comparison, out.comparison, SensitivityComparison)
    verdicts = ", ".join(f"{r['metric']} {r['spread']}" for r in comparison.to_dicts())
    log.info("%d resamples, %d seeds; probe sampling against seeds: %s", len(p.resamples), len(p.seed_runs), verdicts)
