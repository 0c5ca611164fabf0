"""Rule plot_probe_gaps: sorted horizontal bars of probe gaps, wrong probes highlighted."""
import matplotlib

matplotlib.rc_file(snakemake.input.style)
import matplotlib.pyplot as plt  # noqa: E402

from neagari.workflow.smk import rule_context  # noqa: E402
from neagari.tables import read_table  # noqa: E402

with rule_context(snakemake, config_keys=[]) as log:
    df = read_table(snakemake.input.table).sort("gap")
    fig, ax = plt.subplots(figsize=(6.4, 0.25 * len(df) + 1.2))
    colors = ["#c0392b" if g <= 0 else "#2e86c1" for g in df["gap"]]
    ax.barh(df["name"].to_list(), df["gap"].to_list(), color=colors)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("gap = logit(correct) − logit(wrong)")
    ax.set_title(f"{snakemake.wildcards.probeset} on {snakemake.wildcards.model}")
    for out in (snakemake.output.png, snakemake.output.pdf):
        fig.savefig(out, metadata={"CreationDate": None} if out.endswith(".pdf") else None)
    log.info("plotted %d probes", len(df))
