"""Rule fig_acceptance: rolling-window and cumulative acceptance rate against iteration, one line
per pass-1 domain (PAPER.md §7.1)."""
from neagari.report.plotting import domain_colors, figure_legend, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from neagari.stats import rolling_series  # noqa: E402

window = snakemake.params.window
with rule_context(snakemake, config_keys=["audits"], seed=snakemake.params.seed) as log:
    runs = {run: pl.read_parquet(p, columns=["iteration", "accepted"]).sort("iteration")
            for (_, run), p in zip(snakemake.params.runs, snakemake.input.iterations)}
    colors = domain_colors(list(runs))
    fig, (ax_roll, ax_cum) = plt.subplots(1, 2, figsize=(9.6, 3.6), sharey=True)
    for domain, df in runs.items():
        flags = df["accepted"].to_numpy()
        x = df["iteration"].to_numpy() + 1  # iterations done so far
        ax_roll.plot(x, rolling_series(flags, window), color=colors[domain])  # one legend entry per domain
        ax_cum.plot(x, np.cumsum(flags) / x, color=colors[domain], label=domain)
    ax_roll.set_title(f"rolling acceptance (trailing {window} iterations)")
    ax_cum.set_title("cumulative acceptance")
    for ax in (ax_roll, ax_cum):
        ax.set_xlabel("iteration")
        ax.set_ylim(0, 1)
    ax_roll.set_ylabel("acceptance rate")
    figure_legend(fig, title="pass-1 domain")
    fig.suptitle(f"{snakemake.wildcards.model}: acceptance during the pass-1 pipeline")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted acceptance of %d runs", len(runs))
