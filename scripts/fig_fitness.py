"""Rule fig_fitness: best fitness (fitness after each accepted move) against iteration, one panel
per pipeline domain, one line per pass (PAPER.md §6.5 "Fitness" column)."""
from neagari.report.plotting import domain_colors, legend, panel_grid, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    runs = {}
    for (stage, domain), path in zip(snakemake.params.runs, snakemake.input.iterations):
        runs.setdefault(domain, {})[stage] = pl.read_parquet(
            path, columns=["iteration", "accepted", "fitness_before", "fitness_after"]).sort("iteration")
    stages = sorted({s for per in runs.values() for s in per})
    colors = domain_colors(stages)
    fig, axes = panel_grid(len(runs), ncols=3)
    for ax, (domain, per_stage) in zip(axes, runs.items()):
        for stage, df in per_stage.items():
            kept = df.filter(pl.col("accepted"))
            start = float(df["fitness_before"][0]) if df.height else 0.0
            x = [0] + (kept["iteration"] + 1).to_list() + [df.height]
            y = [start] + kept["fitness_after"].to_list()
            y.append(y[-1])
            ax.step(x, y, where="post", color=colors[stage], label=f"{stage} ({kept.height} kept)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(domain)
        ax.set_xlabel("iteration")
        ax.set_ylabel("best fitness")
        legend(ax)
    fig.suptitle(f"{snakemake.wildcards.model}: fitness of the accepted moves")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted fitness of %d domains", len(runs))
