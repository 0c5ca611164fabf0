"""Rule plot_training_loss: training and held-out loss curves of one embedded model.

What the curves measure depends on the variant: a QAT model trains through its 1-bit forward pass,
so its curves are the loss of the 1-bit network the file holds; an fp model trains in full
precision and is rounded to Q1_0 only afterwards, so its curves are the full-precision network's
loss, not the shipped file's (the quality table measures the file). The labels and a note say so."""
import matplotlib

matplotlib.rc_file(snakemake.input.style)
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from neagari.report.plotting import NEUTRAL_COLOR, legend  # noqa: E402
from neagari.workflow.smk import rule_context  # noqa: E402
from neagari.tables import read_table  # noqa: E402

NETWORK = {"qat": "1-bit forward pass", "fp": "full precision, before 1-bit rounding"}
NOTE = {"fp": "loss of the full-precision network during training;\n"
              "the quality table measures the Q1_0 file rounded from it afterwards"}

with rule_context(snakemake, config_keys=[]) as log:
    df = read_table(snakemake.input.history)
    variant = df["variant"][0]
    network = NETWORK.get(variant, variant)
    fig, ax = plt.subplots()
    ax.plot(df["step"], df["train_loss"], lw=0.8, alpha=0.6, label=f"train (batch; {network})")
    ev = df.filter(pl.col("eval_loss").is_not_null())
    ax.plot(ev["step"], ev["eval_loss"], "o-", ms=3, label=f"held-out ({network})")
    n_copy = df.filter(pl.col("phase") == "copy").height
    if n_copy:  # the curriculum's first phase trains on copy drills only
        ax.axvspan(0.5, n_copy + 0.5, color="0.9", zorder=0, label="copy drills only")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(f"{snakemake.wildcards.model} ({variant})")
    if variant in NOTE:
        ax.text(0.98, 0.02, NOTE[variant], transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                color=NEUTRAL_COLOR)
    legend(ax)
    for out in (snakemake.output.png, snakemake.output.pdf):
        fig.savefig(out, metadata={"CreationDate": None} if out.endswith(".pdf") else None)
    log.info("plotted %d steps", len(df))
