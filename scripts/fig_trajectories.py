"""Rule fig_trajectories: gap of the wrong targets nearest the boundary, after each accepted move,
one panel per pass-1 domain and per targeted run (PAPER.md §7.6: how far one run moves them).
A run that kept no move shows its targets flat at their base gaps, with a note."""
from neagari.report.plotting import panel_grid, read_summary, save, trajectory_panel, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

n_nearest = snakemake.params.n_nearest
with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    fig, axes = panel_grid(len(snakemake.input.iterations), ncols=3)
    for ax, (stage, run), it_path, summary_path in zip(axes, snakemake.params.runs, snakemake.input.iterations,
                                                       snakemake.input.summaries):
        s = read_summary(summary_path)
        kept = pl.read_parquet(it_path, columns=["iteration", "accepted", "gaps"]).filter(pl.col("accepted"))
        kept = kept.sort("iteration")
        gaps = (np.array(kept["gaps"].to_list(), dtype=float) if kept.height
                else np.empty((0, len(s["base_gaps"]))))
        trajectory_panel(ax, np.asarray(s["base_gaps"][: s["n_targets"]], dtype=float),
                         [p["name"] for p in s["probes"]], kept["iteration"].to_numpy(), gaps,
                         s["iterations_run"], n_nearest)
        ax.set_title(f"{stage}/{run} ({kept.height} kept)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("gap (logits)")
    fig.suptitle(f"{snakemake.wildcards.model}: the {n_nearest} wrong targets nearest the boundary")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted %d runs", len(axes))
