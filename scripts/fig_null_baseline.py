"""Rule fig_null_baseline: acceptance rate of the trained model and of its MLP-sign-randomized
copy with Wilson 95% intervals, per seed and seeds pooled (PAPER.md §7.1.1)."""
from neagari.report.plotting import CONTROL_COLOR, NEUTRAL_COLOR, legend, save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from neagari.tables import read_table  # noqa: E402

with rule_context(snakemake, config_keys=[], seed=snakemake.params.seed) as log:
    per_seed = read_table(snakemake.input.table).sort("seed")
    verdict = read_table(snakemake.input.verdict).row(0, named=True)
    sides = {"trained": (verdict["trained_model"], CONTROL_COLOR),
             "null": (verdict["null_model"], NEUTRAL_COLOR)}
    seeds = sorted(per_seed["seed"].unique())
    labels = [f"seed {s}" for s in seeds] + ["pooled"]
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 3.0, 3.6))
    for offset, (side, (model, color)) in zip((-0.12, 0.12), sides.items()):
        rows = per_seed.filter(pl.col("model") == model)
        x = [seeds.index(s) + offset for s in rows["seed"]]
        rate = rows["rate"].to_numpy()
        err = [rate - rows["ci_lo"].to_numpy(), rows["ci_hi"].to_numpy() - rate]
        ax.errorbar(x, 100 * rate, yerr=100 * np.asarray(err), fmt="o", color=color,
                    capsize=3, label=model)
        r, lo, hi = verdict[f"{side}_rate"], verdict[f"{side}_ci_lo"], verdict[f"{side}_ci_hi"]
        ax.errorbar([len(seeds) + offset], [100 * r], yerr=[[100 * (r - lo)], [100 * (hi - r)]], fmt="s",
                    color=color, capsize=4, ms=7)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("acceptance rate (%)")
    ax.set_ylim(0, None)
    legend(ax)
    verdict_word = "passed" if verdict["passed"] else "failed"
    ax.set_title(f"{snakemake.wildcards.model}: gap {verdict['gap_pp']:+.1f} pp "
                 f"(threshold {verdict['threshold_pp']:.0f} pp): {verdict_word}")
    save(fig, snakemake.output.png, snakemake.output.pdf)
    log.info("plotted %d seeds", len(seeds))
