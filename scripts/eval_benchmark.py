"""Rule eval_benchmark: greedy evaluation of one model (base or patched) through llama.cpp over
every evaluation item, each judged by its scorer (PAPER.md §6 item 7).

Resumable: each finished item's row goes to <output>.partial.jsonl (flushed per item) under a
header of the model's sha256, the item set's hash and the generation settings; a rerun after a
kill skips the items it holds, a partial file made with anything else is refused. It is removed
once the table is written (neagari.evaluation.resumable)."""
import json

import polars as pl

from neagari.evaluation.harness import gpu_layers
from neagari.evaluation.llama_eval import LlamaGenerator, evaluate_items
from neagari.evaluation.resumable import partial_path
from neagari.evaluation.schemas import BenchItems
from neagari.hashing import sha256_file
from neagari.tables import write_table
from neagari.workflow.smk import rule_context

p = snakemake.params
out = snakemake.output.table
layers = gpu_layers(p.n_gpu_layers)
with rule_context(snakemake, config_keys=[], seed=p.seed, device=f"llama.cpp ({'gpu' if layers else 'cpu'})") as log:
    items = [json.loads(line) for line in open(snakemake.input.eval_sets)]
    gen = LlamaGenerator(snakemake.input.model, n_ctx=p.n_ctx, seed=p.seed, n_threads=snakemake.threads,
                         n_gpu_layers=layers)
    header = {"model_sha256": sha256_file(snakemake.input.model), "max_new_tokens": p.max_new_tokens,
              "generation": gen.settings()}
    table = evaluate_items(gen, items, max_new_tokens=p.max_new_tokens, desc=snakemake.wildcards.variant,
                           partial=partial_path(out), header=header,
                           write=lambda t: write_table(t, out, BenchItems))
    gen.close()
    log.info("%s %s: %d items\n%s", snakemake.wildcards.model, snakemake.wildcards.variant, table.height,
             table.group_by("domain").agg(pl.len(), pl.col("correct").mean().alias("accuracy"),
                                          (pl.col("finish") == "length").mean().alias("hit_budget")).sort("domain"))
