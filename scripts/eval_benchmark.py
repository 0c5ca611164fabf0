"""Rule eval_benchmark: greedy evaluation of one model (base or patched) through llama.cpp over
every evaluation item, each judged by its scorer (PAPER.md §6 item 7)."""
import json

import polars as pl

from neagari.evaluation.llama_eval import LlamaGenerator, evaluate_items
from neagari.workflow.smk import rule_context
from neagari.evaluation.schemas import BenchItems
from neagari.tables import write_table

p = snakemake.params
with rule_context(snakemake, config_keys=[], seed=p.seed, device="llama.cpp (cpu)") as log:
    items = [json.loads(line) for line in open(snakemake.input.eval_sets)]
    gen = LlamaGenerator(snakemake.input.model, n_ctx=p.n_ctx, seed=p.seed, n_threads=snakemake.threads,
                         n_gpu_layers=p.n_gpu_layers)
    table = evaluate_items(gen, items, max_new_tokens=p.max_new_tokens, desc=snakemake.wildcards.variant)
    gen.close()
    write_table(table, snakemake.output.table, BenchItems)
    log.info("%s %s: %d items\n%s", snakemake.wildcards.model, snakemake.wildcards.variant, table.height,
             table.group_by("domain").agg(pl.len(), pl.col("correct").mean().alias("accuracy"),
                                          (pl.col("finish") == "length").mean().alias("hit_budget")).sort("domain"))
