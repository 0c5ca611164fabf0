"""Rule build_paper: read every result file named in the manifest into tables and facts
(neagari.report.facts), set the paper's published figures (resources/paper/published.yaml) beside
them, then render the template to results/paper/paper.md and the self-contained
results/paper/index.html."""
from pathlib import Path

from neagari.report.facts import write_paper
from neagari.workflow.smk import rule_context

inp, out = snakemake.input, snakemake.output
# the published figures sit beside the template unless the rule names them as an input
published = getattr(inp, "published", None) or str(Path(inp.template).parent / "published.yaml")
# the fidelity table reads the choices of the whole (defaults-filled) config
config = dict(snakemake.config)
with rule_context(snakemake, config_keys=["run_name", "models", "embedded", "search", "score", "evaluation",
                                          "published_patches", "terrain", "subspace"]) as log:
    context, tables, figures = write_paper(snakemake.params.manifest, inp.results, inp.template, inp.shell, inp.css,
                                           out.html, out.markdown, published_path=published, config=config,
                                           fidelity_path=getattr(inp, "fidelity", None))
    log.info("paper: %d searched models, %d tables, %d figure sets", len(context["models"]), len(tables),
             len(figures))
