"""Rule eval_benchmark_compare: base vs patched accuracy per domain, paired (exact McNemar, 95% CI)."""
import polars as pl

from neagari.evaluation.llama_eval import paired_comparison
from neagari.workflow.smk import rule_context
from neagari.evaluation.schemas import BenchComparison
from neagari.tables import read_table, write_table

with rule_context(snakemake, config_keys=[]) as log:
    table = paired_comparison(read_table(snakemake.input.base), read_table(snakemake.input.patched))
    table = table.select(pl.lit(snakemake.wildcards.model).alias("model"), pl.all())
    write_table(table, snakemake.output.table, BenchComparison)
    log.info("\n%s", table)
