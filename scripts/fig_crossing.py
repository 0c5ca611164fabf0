"""Rule fig_crossing: of each patch's accepted flips, how many changed the sign of any target's
gap (a fix or a break) and how many did not, per patch and pooled (PAPER.md §7.6)."""
from neagari.report.plotting import CONTROL_COLOR, TARGET_COLOR, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import matplotlib.pyplot as plt  # noqa: E402

from neagari.tables import read_table  # noqa: E402

with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    summary = read_table(snakemake.input.summary)
    labels = ["all (pooled)" if p == "all" else p for p in summary["patch"]]
    crossing = summary["flips_changing_any_target_sign"].to_numpy()
    other = summary["flips"].to_numpy() - crossing
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(labels) + 1.4))
    y = range(len(labels))[::-1]  # first patch on top, pooled row last
    ax.barh(y, other, color=CONTROL_COLOR, label="no target changed sign")
    ax.barh(y, crossing, left=other, color=TARGET_COLOR, label="changed a target's sign")
    for yi, n_other, n_cross in zip(y, other, crossing):
        ax.text(n_other + n_cross, yi, f"  {n_cross} / {n_other + n_cross}", va="center", fontsize=8)
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("accepted flips")
    ax.set_xlim(0, max(1, summary["flips"].max()) * 1.25)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize=8)
    fig.suptitle(f"{snakemake.wildcards.model}: flips that moved a target across the boundary")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted %d patches", len(labels))
