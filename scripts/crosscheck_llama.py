"""Rule crosscheck_llama: greedy answers of our engine and of llama.cpp on the exported file agree
(PAPER-scale trust in the engine, checked on the model the workflow trained)."""
import json

import polars as pl

from neagari.evaluation.agreement import compare_greedy, continuation_margins, tie_for
from neagari.engine.engine import Engine
from neagari.evaluation.llama_eval import LlamaGenerator
from neagari.workflow.smk import rule_context
from neagari.evaluation.schemas import LlamaCrosscheck
from neagari.tables import write_table

p = snakemake.params
with rule_context(snakemake, config_keys=["quality"]) as log:
    items = [json.loads(line) for line in open(snakemake.input.eval_sets)]
    by_domain = {}
    for it in items:
        by_domain.setdefault(it["domain"], []).append(it)
    chosen = [it for k in range(p.n_prompts) for d in sorted(by_domain) if k < len(by_domain[d])
              for it in [by_domain[d][k]]][: p.n_prompts]
    engine = Engine.load(snakemake.input.model)
    tie = tie_for(r.ggml_type for r in engine.gguf.tensors.values())
    log.info("near-tie threshold %.3f of the logit range (neagari.evaluation.agreement)", tie)
    llama = LlamaGenerator(snakemake.input.model, n_ctx=engine.cfg.context_length, n_threads=snakemake.threads)
    rows = []
    for it in chosen:
        ids = engine.tokenizer.encode(it["prompt"])
        ours = engine.generate([ids], max_new_tokens=p.max_new_tokens)[0]
        ref = llama.generate_ids(ids, p.max_new_tokens, track_margins=True)
        cmp = compare_greedy(ours, continuation_margins(engine, ids, ours), ref.ids, ref.margins, tie=tie)
        rows.append({"id": it["id"], "domain": it["domain"], "tokens_ours": len(ours), "tokens_llama": len(ref.ids),
                     "agree_prefix": cmp.agree_prefix, "first_near_tie_ours": cmp.first_tie_ours,
                     "first_near_tie_llama": cmp.first_tie_ref, "verdict": cmp.verdict,
                     "text_ours": engine.tokenizer.decode(ours), "text_llama": engine.tokenizer.decode(ref.ids)})
    llama.close()
    table = pl.DataFrame(rows, schema_overrides={"first_near_tie_ours": pl.Int64, "first_near_tie_llama": pl.Int64})
    write_table(table, snakemake.output.table, LlamaCrosscheck)
    log.info("%s", table["verdict"].value_counts())
    if (table["verdict"] == "disagree").any():
        raise RuntimeError(f"llama.cpp disagrees with the engine beyond near-ties:\n{table.filter(pl.col('verdict') == 'disagree')}")
