"""Rule fig_heldout: held-out verbatim outcomes, base model (rows) against patched model
(columns), one panel per targeted fitness (PAPER.md §6.8.1)."""
from neagari.report.plotting import heatmap, panel_grid, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import numpy as np  # noqa: E402

from neagari.tables import read_table  # noqa: E402

ORDER = ("PASS", "COPY", "PARTIAL", "OTHER")
with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    tables = [read_table(p) for p in snakemake.input.crosstabs]
    fig, axes = panel_grid(len(tables), ncols=2, panel_size=(4.4, 3.6))
    for ax, df in zip(axes, tables):
        classes = [c for c in ORDER if c in set(df["base_outcome"]) | set(df["patched_outcome"])]
        grid = np.zeros((len(classes), len(classes)))
        for b, p, n in df.select("base_outcome", "patched_outcome", "count").iter_rows():
            grid[classes.index(b), classes.index(p)] += n
        heatmap(ax, grid, classes, classes, cmap="Blues", fmt="{:.0f}", colorbar_label="probes", vmin=0)
        ax.set_xlabel("patched outcome")
        ax.set_ylabel("base outcome")
        ax.set_title(df["fitness"][0] if "fitness" in df.columns and df.height else "")
    fig.suptitle(f"{snakemake.wildcards.model}: held-out verbatim probes, base → patched")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted %d cross-tabs", len(tables))
