"""Rule crosscheck_llama: greedy answers of our engine and of llama.cpp on the exported file agree
(PAPER-scale trust in the engine, checked on the model the workflow trained)."""
import json

import polars as pl

from neagari.engine import Engine
from neagari.llama_eval import LlamaGenerator
from neagari.smk import rule_context
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
    llama = LlamaGenerator(snakemake.input.model, n_ctx=engine.cfg.context_length, n_threads=snakemake.threads)
    rows = []
    for it in chosen:
        ids = engine.tokenizer.encode(it["prompt"])
        ours = engine.generate([ids], max_new_tokens=p.max_new_tokens)[0]
        ref = llama.generate_ids(ids, p.max_new_tokens, track_margins=True)
        n = min(len(ours), len(ref.ids))
        agree = next((i for i in range(n) if ours[i] != ref.ids[i]), n)
        first_tie = next((i for i, m in enumerate(ref.margins) if m <= p.tie), None)
        # Our own margin, where the two first part, between our token and llama.cpp's: llama.cpp
        # rounds activations to 8 bits, so a split where either side sees a near-tie is rounding.
        ours_margin = None
        if agree < n:
            lg = engine.logits([ids + ours[:agree]])[0].float()
            ours_margin = float((lg[ours[agree]] - lg[ref.ids[agree]]) / lg.abs().max().clamp(min=1e-12))
        if ours == ref.ids:
            verdict = "identical"
        elif (first_tie is not None and agree >= first_tie) or (ours_margin is not None and ours_margin <= p.tie):
            verdict = "near-tie"
        else:
            verdict = "disagree"
        rows.append({"id": it["id"], "domain": it["domain"], "tokens_ours": len(ours), "tokens_llama": len(ref.ids),
                     "agree_prefix": agree, "first_near_tie": first_tie, "ours_margin_at_split": ours_margin,
                     "verdict": verdict,
                     "text_ours": engine.tokenizer.decode(ours), "text_llama": engine.tokenizer.decode(ref.ids)})
    llama.close()
    table = pl.DataFrame(rows, schema_overrides={"first_near_tie": pl.Int64, "ours_margin_at_split": pl.Float64})
    write_table(table, snakemake.output.table, "llama_crosscheck")
    log.info("%s", table["verdict"].value_counts())
    if (table["verdict"] == "disagree").any():
        raise RuntimeError(f"llama.cpp disagrees with the engine beyond near-ties:\n{table.filter(pl.col('verdict') == 'disagree')}")
