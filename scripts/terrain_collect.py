"""Rule terrain_collect: each terrain table of every model file of one model, stacked (label order
of the config: base, patched stages, null models)."""
from pathlib import Path

import polars as pl

from neagari.workflow.smk import rule_context
from neagari.tables import write_table
from neagari.analysis.terrain.profile import TABLES

with rule_context(snakemake, config_keys=["terrain"]) as log:
    for name, schema in TABLES.items():
        parts = [pl.read_parquet(f) for f in snakemake.input.tables if Path(f).stem == name]
        df = pl.concat([d for d in parts if d.height] or parts[:1], how="vertical_relaxed")
        write_table(df, snakemake.output[name], schema)
        log.info("%s: %d rows from %d files", name, df.height, len(parts))
