"""Rule eval_benchmark with evaluation.harness on: one model (base or patched) served by llama.cpp's
OpenAI-compatible server and evaluated by lm-evaluation-harness on the pinned benchmark tables
(PAPER.md §6 item 7, neagari.evaluation.harness); the per-item table read from its sample logs.

Resumable per item: lm-eval's response cache lives under params.cache_dir, in a folder named by
the hash of the model's sha256, the server settings and the package versions, outside the rule's
outputs (Snakemake removes those before a rerun), so a rerun after a kill asks only for the items
the cache lacks."""
import polars as pl

from neagari.evaluation import harness
from neagari.evaluation.schemas import BenchItems
from neagari.tables import write_table
from neagari.workflow.smk import rule_context

p = snakemake.params
layers = harness.gpu_layers(p.n_gpu_layers)
device = f"llama.cpp server ({'gpu, n_gpu_layers %d' % layers if layers else 'cpu'})"
with rule_context(snakemake, config_keys=["evaluation"], seed=p.seed, device=device) as log:
    nltk_data = None
    if snakemake.input.get("punkt_tab"):
        nltk_data = harness.install_punkt_tab(snakemake.input.punkt_tab, f"{p.cache_dir}/nltk_data")
    recipes = harness.recipes_for(p.benchmarks, p.tasks)
    table = harness.evaluate(snakemake.input.model, p.benchmarks, snakemake.output.samples, recipes=recipes,
                             cache_dir=p.cache_dir, max_new_tokens=p.max_new_tokens, limit=p.limit, seed=p.seed,
                             n_ctx=p.n_ctx, n_gpu_layers=layers, n_threads=snakemake.threads, thinking=p.thinking,
                             nltk_data=nltk_data, startup_timeout_s=p.startup_timeout_s,
                             request_timeout_s=p.request_timeout_s, log=log)
    write_table(table, snakemake.output.table, BenchItems)
    log.info("%s %s: %d items (tasks %s)\n%s", snakemake.wildcards.model, snakemake.wildcards.variant, table.height,
             {b: r.template for b, r in recipes.items()},
             table.group_by("domain").agg(pl.len(), pl.col("correct").mean().alias("accuracy")).sort("domain"))
