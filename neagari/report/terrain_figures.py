"""The terrain stage's figures, one function per figure: each takes the model's terrain tables
(``T[name]``, neagari.analysis.terrain.schemas) and returns a matplotlib figure. Base file black,
MLP-randomized null orange-red, patched files grey."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from neagari.report.plotting import NEUTRAL_COLOR, TARGET_COLOR, empty_figure, legend, panel_grid, panel_note

TABLES = ("embedding", "spectrum", "cosine_hist", "simplex", "digits", "layers", "wordnet_summary", "wordnet_bands",
          "wordnet_hypernym")
FIGURES = ("eigenspectrum", "cosine_hist", "simplex_cv", "digits", "layers", "wordnet")


def style(label):
    if label == "base":
        return dict(color="black", lw=1.8, alpha=1.0, zorder=3, label="base")
    if label.startswith("null"):
        return dict(color=TARGET_COLOR, lw=1.4, alpha=0.9, zorder=2, label=f"MLP-randomized ({label})")
    return dict(color=NEUTRAL_COLOR, lw=0.8, alpha=0.5, zorder=1, label="patched")


def dedupe_legend(ax):
    h, l = ax.get_legend_handles_labels()
    keep = dict(zip(l, h))
    legend(ax, handles=list(keep.values()), labels=list(keep.keys()), fontsize=7)


def err(d):
    """Asymmetric error bars from the ci_lo/ci_hi columns."""
    m = d["cos_mean"].to_numpy()  # the mean may sit a rounding error outside a percentile interval
    return [np.clip(m - d["ci_lo"].to_numpy(), 0, None), np.clip(d["ci_hi"].to_numpy() - m, 0, None)]


def per_label(df):
    return [(lab, df.filter(pl.col("label") == lab)) for lab in dict.fromkeys(df["label"].to_list())]


def eigenspectrum(T: dict[str, pl.DataFrame], model: str):
    """Token-embedding covariance eigenvalues and cumulative variance share, one line per file."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.0))
    for lab, d in per_label(T["spectrum"]):
        a.plot(d["rank"], d["eigenvalue"], **style(lab))
        b.plot(d["rank"], d["cumulative_share"], **style(lab))
    a.set(yscale="log", xlabel="rank", ylabel="covariance eigenvalue", title="token-embedding eigenspectrum")
    b.set(xlabel="rank", ylabel="cumulative variance share", title="variance captured")
    for f in (0.8, 0.9, 0.95, 0.99):
        b.axhline(f, color=NEUTRAL_COLOR, lw=0.5, ls=":")
    dedupe_legend(a)
    fig.suptitle(f"{model}: participation ratio {T['embedding']['participation_ratio'][0]:.1f} of "
                 f"{T['embedding']['hidden'][0]} dims (base)")
    return fig


def cosine_hist(T: dict[str, pl.DataFrame], model: str):
    """Pairwise cosines of the base file's token embeddings against a matched Gaussian (embeddings are
    shared by patches that leave token_embd alone)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    base = T["cosine_hist"].filter(pl.col("label") == "base")
    for src, color in (("embedding", "black"), ("gaussian", TARGET_COLOR)):
        d = base.filter(pl.col("source") == src)
        mid = (d["bin_lo"] + d["bin_hi"]).to_numpy() / 2
        dens = d["count"].to_numpy() / max(d["count"].sum(), 1) / (d["bin_hi"] - d["bin_lo"]).to_numpy()
        ax.step(mid, dens, where="mid", color=color,
                label="token embeddings" if src == "embedding" else "matched Gaussian")
    ax.set(xlabel="pairwise cosine", ylabel="density", title=f"{model}: pairwise cosines (base)")
    legend(ax, fontsize=7)
    return fig


def simplex_cv(T: dict[str, pl.DataFrame], model: str):
    """CV of 4-simplex (Cayley-Menger) volumes per file, embeddings vs matched Gaussian, 95% over seeds."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * T["simplex"]["label"].n_unique() + 2), 3.2))
    labels = list(dict.fromkeys(T["simplex"]["label"].to_list()))
    for k, lab in enumerate(labels):
        for src, dx, color in (("embedding", -0.15, "black"), ("gaussian", 0.15, TARGET_COLOR)):
            d = T["simplex"].filter((pl.col("label") == lab) & (pl.col("source") == src))
            v = d["volume_cv"].drop_nulls().to_numpy()
            if v.size:
                lo, hi = np.percentile(v, [2.5, 97.5])
                ax.errorbar(k + dx, v.mean(), yerr=[[v.mean() - lo], [hi - v.mean()]], fmt="o", ms=3, color=color,
                            label="token embeddings" if src == "embedding" else "matched Gaussian")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=6)
    ax.set(ylabel="CV of 4-simplex volume", title=f"{model}: Cayley-Menger volume spread (95% over seeds)")
    dedupe_legend(ax)
    return fig


def digits(T: dict[str, pl.DataFrame], model: str):
    """Mean cosine of digit tokens i, j against |i - j|."""
    if T["digits"].height:
        fig, ax = plt.subplots(figsize=(5.0, 3.0))
        for lab, d in per_label(T["digits"]):
            ax.plot(d["distance"], d["cos_mean"], marker="o", ms=2, **style(lab))
        ax.set(xlabel="|i - j| between digits i, j", ylabel="mean cosine", title=f"{model}: digit-token manifold")
        dedupe_legend(ax)
    else:
        fig = empty_figure("the tokenizer holds no single-token digits 0-9")
    return fig


def layers(T: dict[str, pl.DataFrame], model: str):
    """Hidden-state norm and within-sentence cosine, layer by layer."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.0))
    for lab, d in per_label(T["layers"]):
        a.plot(d["layer"], d["norm_mean"], marker="o", ms=2, **style(lab))
        b.plot(d["layer"], d["cos_mean"], marker="o", ms=2, **style(lab))
    a.set(xlabel="layer (0 = embeddings)", ylabel="mean token norm", title="residual norm")
    b.set(xlabel="layer (0 = embeddings)", ylabel="mean pairwise cosine", title="within-sentence cosine")
    dedupe_legend(a)
    fig.suptitle(f"{model}: hidden states layer by layer")
    return fig


def wordnet(T: dict[str, pl.DataFrame], model: str):
    """WordNet alignment: Spearman rho of path similarity vs cosine by layer (with the shuffled null),
    cosine by distance band, and hypernym-chain decay, 95% intervals over seeds."""
    S = T["wordnet_summary"]
    if S.height == 0:
        fig = empty_figure("fewer than 3 WordNet nouns are single tokens of this tokenizer: no alignment")
    else:
        fig, axes = panel_grid(3, ncols=3, panel_size=(3.6, 3.0))
        ax = axes[0]
        for lab, d in per_label(S):
            for stat, ls in (("spearman", "-"), ("null_spearman", ":")):
                e = d.filter(pl.col("statistic") == stat).sort("layer")
                st = style(lab)
                if stat == "null_spearman":  # one legend entry for every dotted line
                    st["label"] = "shuffled null" if lab == "base" else "_nolegend_"
                ax.plot(e["layer"], e["mean"], ls=ls, **st)
                if lab == "base" or lab.startswith("null"):
                    ax.fill_between(e["layer"], e["ci_lo"], e["ci_hi"], color=st["color"], alpha=0.15, lw=0)
        ax.axhline(0, color=NEUTRAL_COLOR, lw=0.5)
        ax.set(xlabel="layer (0 = embeddings)", ylabel="Spearman ρ",
               title=f"path similarity vs cosine, {S['words'][0]} words")
        dedupe_legend(ax)
        bands = T["wordnet_bands"].filter(pl.col("label") == "base")
        for layer, d in per_label(bands.with_columns(pl.col("layer").cast(pl.String).alias("label"))):
            axes[1].errorbar(d["band_hi"], d["cos_mean"], yerr=err(d),
                             marker="o", ms=2, lw=1, capsize=2, label=f"layer {layer}")
        axes[1].set(xscale="log", xlabel="path-similarity band (upper edge)", ylabel="mean cosine",
                    title="cosine by WordNet distance (base)")
        legend(axes[1], fontsize=6)
        hyp = T["wordnet_hypernym"].filter(pl.col("label") == "base")
        if hyp.height:
            for layer, d in per_label(hyp.with_columns(pl.col("layer").cast(pl.String).alias("label"))):
                axes[2].errorbar(d["depth"], d["cos_mean"], yerr=err(d),
                                 marker="o", ms=2, lw=1, capsize=2, label=f"layer {layer}")
            legend(axes[2], fontsize=6)
        else:
            axes[2].set_xticks([])
            axes[2].set_yticks([])
            panel_note(axes[2], "no hypernym pairs among the sampled words")
        axes[2].set(xlabel="is-a steps to the ancestor word", ylabel="mean cosine", title="hypernym decay (base)")
        fig.suptitle(f"{model}: WordNet relational alignment (95% intervals over seeds)")
    return fig
