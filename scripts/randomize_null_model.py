"""Rule randomize_null_model: the model with its MLP weights randomized (PAPER.md §7.1.1): Q1_0 sign
bits flipped with probability 1/2, Q2_0 codes redrawn by the null mode (neagari.search.null)."""
from neagari.search.null import DEFAULT_MODE, randomize_mlp
from neagari.workflow.smk import rule_context

seed = int(snakemake.wildcards.seed)
mode = getattr(snakemake.params, "mode", DEFAULT_MODE)  # a param only where not the default
facts = {}
with rule_context(snakemake, config_keys=[], seed=seed, extra=facts) as log:
    null = randomize_mlp(snakemake.input.model, snakemake.output.gguf, seed, mode)
    log.info("null model %s sha256 %s", snakemake.output.gguf, null.sha256)
    if null.q2_tensors:
        log.info("%d Q2_0 MLP tensors (%d weights), mode %s: zero share %.4f trained, %.4f randomized; "
                 "+d share of the nonzero %.4f trained, %.4f randomized", null.q2_tensors, null.q2_weights,
                 null.mode, null.trained_zero_share, null.null_zero_share, null.trained_plus_share,
                 null.null_plus_share)
        facts.update({f"null.{k}": v for k, v in null.as_dict().items() if k != "sha256"})
