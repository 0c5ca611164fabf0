"""Rule plot_training_loss: training and held-out loss curves of one embedded model."""
import matplotlib

matplotlib.rc_file(snakemake.input.style)
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from neagari.workflow.smk import rule_context  # noqa: E402
from neagari.tables import read_table  # noqa: E402

with rule_context(snakemake, config_keys=[]) as log:
    df = read_table(snakemake.input.history)
    fig, ax = plt.subplots()
    ax.plot(df["step"], df["train_loss"], lw=0.8, alpha=0.6, label="train (batch)")
    ev = df.filter(pl.col("eval_loss").is_not_null())
    ax.plot(ev["step"], ev["eval_loss"], "o-", ms=3, label="held-out")
    n_copy = df.filter(pl.col("phase") == "copy").height
    if n_copy:  # the curriculum's first phase trains on copy drills only
        ax.axvspan(0.5, n_copy + 0.5, color="0.9", zorder=0, label="copy drills only")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(f"{snakemake.wildcards.model} ({df['variant'][0]})")
    ax.legend()
    for out in (snakemake.output.png, snakemake.output.pdf):
        fig.savefig(out, metadata={"CreationDate": None} if out.endswith(".pdf") else None)
    log.info("plotted %d steps", len(df))
