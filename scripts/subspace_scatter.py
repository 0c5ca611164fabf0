"""Rule subspace_scatter: joint R_act-vs-R_w scatter, one panel per patch, at one rank."""
from neagari.report.plotting import save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
from neagari.analysis.subspace.sweep import pick_rank  # noqa: E402
from neagari.report.subspace_figure import plot_joint_scatter  # noqa: E402
from neagari.tables import read_table  # noqa: E402

with rule_context(snakemake, config_keys=["subspace"], seed=snakemake.params.seed) as log:
    summary = read_table(snakemake.input.summary)
    k = pick_rank(summary, snakemake.params.rank)
    fig = plot_joint_scatter(summary, k, title=f"{snakemake.wildcards.model}: concentration over the "
                                               f"random-subspace null (rank {k})")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("scatter of %d patches at rank %d", summary["patch"].n_unique(), k)
