"""Rule eval_heldout_summary: outcome cross-tab and COPY -> PASS conversion (PAPER.md §6 item 8)."""
import itertools

import polars as pl

from neagari.evaluation.heldout import CLASSES
from neagari.workflow.smk import rule_context
from neagari.stats import wilson_interval
from neagari.evaluation.schemas import HeldoutCrosstab, HeldoutSummary
from neagari.tables import read_table, write_table

wc, threshold = snakemake.wildcards, snakemake.params.threshold


def conversion(part: pl.DataFrame, domain: str) -> dict:
    """COPY -> PASS among the probes the base model copied on, with a Wilson 95% interval."""
    copy = part.filter(pl.col("base_outcome") == "COPY")
    n, k = copy.height, int((copy["patched_outcome"] == "PASS").sum())
    lo, hi = wilson_interval(k, n) if n else (None, None)
    base_pass = part["base_outcome"] == "PASS"
    return {"model": wc.model, "fitness": wc.fitness, "domain": domain, "probes": part.height, "base_copy": n,
            "converted": k, "rate": k / n if n else None, "ci_lo": lo, "ci_hi": hi,
            "base_pass": int(base_pass.sum()), "patched_pass": int((part["patched_outcome"] == "PASS").sum()),
            "pass_lost": int((base_pass & (part["patched_outcome"] != "PASS")).sum()), "threshold": threshold,
            # the pre-registered verdict is on all probes; a domain row only reports its counts
            "generalizes": (k / n >= threshold if n else None) if domain == "all" else None}


with rule_context(snakemake, config_keys=[]) as log:
    table = read_table(snakemake.input.table)
    cells = pl.DataFrame(list(itertools.product(CLASSES, CLASSES)), schema=["base_outcome", "patched_outcome"],
                         orient="row")
    counts = table.group_by("base_outcome", "patched_outcome").agg(pl.len().cast(pl.Int64).alias("count"))
    crosstab = (cells.join(counts, on=["base_outcome", "patched_outcome"], how="left", maintain_order="left")
                .with_columns(pl.col("count").fill_null(0), pl.lit(wc.model).alias("model"),
                              pl.lit(wc.fitness).alias("fitness"))
                .select("model", "fitness", "base_outcome", "patched_outcome", "count"))
    write_table(crosstab, snakemake.output.crosstab, HeldoutCrosstab)
    rows = [conversion(table, "all")]
    rows += [conversion(table.filter(pl.col("domain") == d), d) for d in sorted(table["domain"].unique())]
    summary = pl.DataFrame(rows, schema_overrides={"rate": pl.Float64, "ci_lo": pl.Float64, "ci_hi": pl.Float64,
                                                   "generalizes": pl.Boolean})
    write_table(summary, snakemake.output.summary, HeldoutSummary)
    log.info("cross-tab (base -> patched):\n%s", crosstab.filter(pl.col("count") > 0))
    log.info("COPY -> PASS:\n%s", summary.select("domain", "base_copy", "converted", "rate", "ci_lo", "ci_hi",
                                                 "generalizes"))
