"""Rule build_paper: read every result file named in the manifest into tables and facts
(neagari.report.facts), then render the template to results/paper/paper.md and the
self-contained results/paper/index.html."""
from neagari.report.facts import write_paper
from neagari.workflow.smk import rule_context

inp, out = snakemake.input, snakemake.output
with rule_context(snakemake, config_keys=["run_name", "models", "search", "published_patches", "terrain",
                                          "subspace"]) as log:
    context, tables, figures = write_paper(snakemake.params.manifest, inp.results, inp.template, inp.shell, inp.css,
                                           out.html, out.markdown)
    log.info("paper: %d searched models, %d tables, %d figure sets", len(context["models"]), len(tables),
             len(figures))
