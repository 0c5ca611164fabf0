"""Rule fig_trajectories: gap of the wrong targets nearest the boundary, after each accepted move,
one panel per pass-1 domain and per targeted run (PAPER.md §7.6: how far one run moves them)."""
from neagari.report.plotting import PALETTE, panel_grid, read_summary, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

n_nearest = snakemake.params.n_nearest
with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    fig, axes = panel_grid(len(snakemake.input.iterations), ncols=3)
    for ax, (stage, run), it_path, summary_path in zip(axes, snakemake.params.runs, snakemake.input.iterations,
                                                       snakemake.input.summaries):
        s = read_summary(summary_path)
        base = np.asarray(s["base_gaps"][: s["n_targets"]], dtype=float)
        wrong = np.flatnonzero(base <= 0)
        nearest = wrong[np.argsort(-base[wrong])][:n_nearest]  # closest to zero from below first
        kept = pl.read_parquet(it_path, columns=["iteration", "accepted", "gaps"]).filter(pl.col("accepted"))
        kept = kept.sort("iteration")
        n_probes = len(s["base_gaps"])
        gaps = (np.array(kept["gaps"].to_list(), dtype=float) if kept.height
                else np.empty((0, n_probes)))  # a run that kept no move

        x = np.concatenate([[0], kept["iteration"].to_numpy() + 1])
        for color, j in zip(PALETTE, nearest):
            y = np.concatenate([[base[j]], gaps[:, j]])
            ax.step(x, y, where="post", color=color, label=s["probes"][j]["name"])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{stage}/{run} ({kept.height} kept)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("gap (logits)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(nearest):
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no wrong target", transform=ax.transAxes, ha="center")
    fig.suptitle(f"{snakemake.wildcards.model}: the {n_nearest} wrong targets nearest the boundary")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted %d runs", len(axes))
