"""Rule subspace_summary: one model's per-layer tables joined, pooled over layers per patch x
candidate x rank, and the ranked conclusion written from that summary."""
from pathlib import Path

import polars as pl

from neagari.workflow.smk import rule_context
from neagari.analysis.subspace.sweep import pick_rank, summarize, write_conclusion
from neagari.analysis.subspace.schemas import SubspacePerLayer, SubspaceSummary
from neagari.tables import read_table, write_table

out = snakemake.output
with rule_context(snakemake, config_keys=["subspace"]) as log:
    tables = {"/".join(Path(t).parts[-2:]).removesuffix(".per_layer.parquet"): read_table(t)
              for t in snakemake.input.tables}
    empty = [name for name, t in tables.items() if t.is_empty()]
    per_layer = pl.concat(list(tables.values()), how="vertical_relaxed")
    write_table(per_layer, out.per_layer, SubspacePerLayer)
    summary = summarize(per_layer)
    write_table(summary, out.summary, SubspaceSummary)
    k = pick_rank(summary, snakemake.params.rank)
    text = write_conclusion(summary, k, empty_patches=empty)
    Path(out.conclusion).write_text(f"<!-- model {snakemake.wildcards.model} -->\n" + text, encoding="utf-8")
    log.info("%d patches, %d summary rows; conclusion at rank %d", summary["patch"].n_unique(), summary.height, k)
