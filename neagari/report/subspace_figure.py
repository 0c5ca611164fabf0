"""The subspace sweep's joint scatter: R_act against R_w per patch (neagari.analysis.subspace.sweep)."""

from __future__ import annotations

import polars as pl

from neagari.report.plotting import empty_figure, legend, panel_grid

KIND_COLORS = {"write": "#D55E00", "read": "#0072B2", "mixed": "#009E73", "ceiling": "#000000", "random": "#7f7f7f"}


def plot_joint_scatter(summary: pl.DataFrame, k: int, title: str = "", annotate: int = 3):
    """Figure: one panel per patch, R_act (x) against R_w on the candidate's matched target (y),
    log-log, one colour per axis kind; the dashed lines are the random-subspace null R = 1 and the
    best candidate of each kind is named. Returns the matplotlib figure (save with plotting.save)."""
    df = summary.filter((pl.col("k") == k) & pl.col("R_act").is_not_null() & pl.col("R_w").is_not_null())
    patches = sorted(df["patch"].unique().to_list(), key=lambda p: (p.startswith("randomflip"), p))
    if not patches:
        return empty_figure(f"no patch has both activation and weight scores at rank {k}")
    fig, axes = panel_grid(len(patches), ncols=4, panel_size=(3.3, 3.0))
    lo = max(1e-3, float(df.select(pl.min_horizontal(pl.col("R_act").min(), pl.col("R_w").min())).item()) / 1.5)
    hi = float(df.select(pl.max_horizontal(pl.col("R_act").max(), pl.col("R_w").max())).item()) * 1.5
    for ax, patch in zip(axes, patches):
        sub = df.filter(pl.col("patch") == patch)
        for kind, color in KIND_COLORS.items():
            pts = sub.filter(pl.col("kind") == kind)
            if pts.height:
                ax.scatter(pts["R_act"], pts["R_w"], s=18, color=color, alpha=0.85, label=kind,
                           marker="*" if kind == "ceiling" else "o")
            if kind in ("write", "read", "mixed") and pts.height and annotate:
                top = pts.sort("z_w", descending=True, nulls_last=True).head(1)
                for name, x, y in top.select("candidate", "R_act", "R_w").iter_rows():
                    ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axvline(1.0, color="black", ls="--", lw=0.7)
        ax.axhline(1.0, color="black", ls="--", lw=0.7)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=patch)
        ax.set_xlabel("R_act", fontsize=8)
        ax.set_ylabel("R_w (matched side)", fontsize=8)
    legend(axes[0], fontsize=6)
    fig.suptitle(title or f"concentration over the random-subspace null, rank {k}")
    return fig
