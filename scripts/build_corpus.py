"""Rule build_corpus: one split of the procedural corpus as JSON lines {"domain", "text"}."""
import json

from neagari import toydata
from neagari.smk import rule_context

p = snakemake.params
with rule_context(snakemake, config_keys=["embedded"], seed=p.seed) as log:
    records = toydata.build_corpus(p.seed, p.n_per_domain, snakemake.wildcards.split)
    with open(snakemake.output.corpus, "w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    log.info("%d texts, %d characters", len(records), sum(len(r["text"]) for r in records))
