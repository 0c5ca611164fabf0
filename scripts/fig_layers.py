"""Rule fig_layers: accepted moves per layer and MLP projection, summed over the domains of each
pipeline stage (pass 1 weight XORs, pass 2 mostly scale flips)."""
from neagari.report.plotting import empty_figure, heatmap, panel_grid, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from neagari.tables import read_table  # noqa: E402

PROJ_ORDER = ("ffn_gate", "ffn_up", "ffn_down")
with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    df = read_table(snakemake.input.table).with_columns(pl.col("proj").str.replace(r"\.weight$", ""))
    stages = list(dict.fromkeys(df["stage"].to_list()))
    if not stages:
        fig = empty_figure("no accepted moves in any pipeline stage")
    else:
        fig, axes = panel_grid(len(stages), ncols=2, panel_size=(4.2, 0.35 * df["layer"].n_unique() + 2.0))
        projs = sorted(df["proj"].unique(), key=lambda p: (PROJ_ORDER.index(p) if p in PROJ_ORDER else 9, p))
        layers = sorted(df["layer"].unique())
        for ax, stage in zip(axes, stages):
            cells = df.filter(pl.col("stage") == stage).group_by("layer", "proj").agg(pl.col("flips").sum())
            grid = np.zeros((len(layers), len(projs)))
            for layer, proj, flips in cells.iter_rows():
                grid[layers.index(layer), projs.index(proj)] = flips
            heatmap(ax, grid, [str(l) for l in layers], projs, cmap="viridis", fmt="{:.0f}",
                    colorbar_label="accepted moves", vmin=0)
            ax.set_title(stage)
            ax.set_ylabel("layer")
    fig.suptitle(f"{snakemake.wildcards.model}: where the accepted moves land")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted %d stages", len(stages))
