"""Rule randomize_null_model: every MLP sign bit flipped with probability 1/2 (PAPER.md §7.1.1)."""
from neagari.search.null import randomize_mlp_signs
from neagari.workflow.smk import rule_context

seed = int(snakemake.wildcards.seed)
with rule_context(snakemake, config_keys=[], seed=seed) as log:
    sha = randomize_mlp_signs(snakemake.input.model, snakemake.output.gguf, seed)
    log.info("null model %s sha256 %s", snakemake.output.gguf, sha)
