"""Rule build_corpus: one split of the procedural corpus (plus WordNet-derived text if configured) as
JSON lines {"domain", "text"}."""
import os

from neagari.embedded import toydata
from neagari.workflow.smk import rule_context

p = snakemake.params
with rule_context(snakemake, config_keys=["embedded"], seed=p.seed) as log:
    split = snakemake.wildcards.split
    if p.n_wordnet:  # is-a sentences and definitions from WordNet 3.0 (the terrain stage's alignment)
        os.environ["NEAGARI_WORDNET_DIR"] = snakemake.input.wordnet[0]  # the workflow's own WordNet copy
    records = toydata.build_corpus(p.seed, p.n_per_domain, split, n_wordnet=p.n_wordnet)
    with open(snakemake.output.corpus, "w", encoding="utf-8") as f:
        f.write(toydata.corpus_jsonl(records))
    log.info("%d texts, %d characters", len(records), sum(len(r["text"]) for r in records))
