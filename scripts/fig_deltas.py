"""Rule fig_deltas: one flip's effect against the distance still to go. Upper panel: |mean gap
change over targets| of every accepted pipeline flip; lower panel: distance to the boundary
(|gap|) of every target wrong when its patch's search started. Shared log-scale x (PAPER.md §7.6)."""
from neagari.report.plotting import CONTROL_COLOR, TARGET_COLOR, read_summary, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from neagari.tables import read_table  # noqa: E402

with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    effect = np.abs(read_table(snakemake.input.flips)["mean_delta"].drop_nulls().to_numpy())
    effect = effect[effect > 0]  # a zero effect has no place on a log axis
    distance = []
    for path in snakemake.input.summaries:
        s = read_summary(path)
        base = np.asarray(s["base_gaps"][: s["n_targets"]], dtype=float)
        distance.extend(-base[base <= 0])
    distance = np.asarray(distance)
    distance = distance[distance > 0]
    pooled = read_table(snakemake.input.summary).filter(patch="all")
    values = np.concatenate([effect, distance])
    fig, (ax_eff, ax_dist) = plt.subplots(2, 1, figsize=(6.4, 4.6), sharex=True)
    if values.size:
        bins = np.logspace(np.log10(values.min()) - 0.1, np.log10(values.max()) + 0.1, 40)
        for ax, data, color, what in ((ax_eff, effect, CONTROL_COLOR, "flips"),
                                      (ax_dist, distance, TARGET_COLOR, "wrong targets")):
            ax.hist(data, bins=bins, color=color)
            if data.size:
                ax.axvline(np.median(data), color="black", lw=1, ls="--")
                ax.text(np.median(data), ax.get_ylim()[1] * 0.9, f" median {np.median(data):.3g}", fontsize=8)
            ax.set_ylabel(what)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_eff.set_xscale("log")
    ax_eff.set_title("|mean target-gap change| of one accepted flip (logits)")
    ax_dist.set_title("distance of a wrong target to the boundary, |gap| at the start (logits)")
    ax_dist.set_xlabel("logits (log scale)")
    ratio = pooled["median_distance_ratio"][0] if pooled.height else None
    suffix = f": median distance / |mean effect| = {ratio:,.0f}" if ratio is not None else ""
    fig.suptitle(f"{snakemake.wildcards.model}{suffix}")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted %d flips and %d wrong targets", effect.size, distance.size)
