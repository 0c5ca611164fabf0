"""Rule build_corpus: one split of the procedural corpus (plus WordNet-derived text if configured) as
JSON lines {"domain", "text"}."""
import json

from neagari.embedded import toydata
from neagari.workflow.smk import rule_context

p = snakemake.params
with rule_context(snakemake, config_keys=["embedded"], seed=p.seed) as log:
    split = snakemake.wildcards.split
    extra = []
    if p.n_wordnet:  # is-a sentences and definitions from WordNet 3.0 (the terrain stage's alignment)
        import os

        from neagari.embedded.toydata import wordnet_text
        from neagari.embedded.toydata.common import domain_rng

        os.environ["NEAGARI_WORDNET_DIR"] = snakemake.input.wordnet[0]  # the workflow's own WordNet copy
        rng = domain_rng(p.seed, "corpus", split, "wordnet")
        extra = [{"domain": "wordnet", "text": wordnet_text.corpus_text(rng, split)} for _ in range(p.n_wordnet)]
    records = toydata.build_corpus(p.seed, p.n_per_domain, split, extra_texts=extra)
    with open(snakemake.output.corpus, "w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    log.info("%d texts, %d characters", len(records), sum(len(r["text"]) for r in records))
