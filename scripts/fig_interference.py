"""Rule fig_interference: the cross-domain interference matrix (PAPER.md §6.6): mean gap change
(patched − base, logits) of each probe set (columns) on the model after each pipeline patch (rows)."""
from neagari.report.plotting import heatmap, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from neagari.tables import read_table  # noqa: E402

with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    df = read_table(snakemake.input.matrix)
    rows = list(dict.fromkeys(df["patch_domain"].to_list()))
    cols = list(dict.fromkeys(df["probe_domain"].to_list()))
    grid = np.full((len(rows), len(cols)), np.nan)
    for r, c, v in df.select("patch_domain", "probe_domain", "mean_delta").iter_rows():
        grid[rows.index(r), cols.index(c)] = np.nan if v is None else v
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 3.0, 0.5 * len(rows) + 1.8))
    heatmap(ax, grid, rows, cols, cmap="RdBu", center_zero=True, fmt="{:+.3f}",
            colorbar_label="mean gap change (logits)")
    ax.set_xlabel("probe set")
    ax.set_ylabel("model after patch")
    ax.set_title(f"{snakemake.wildcards.model}: cross-domain interference")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted a %d x %d matrix", len(rows), len(cols))
