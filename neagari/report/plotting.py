"""What every figure script shares: the style file, a seed, panel grids, one colour per domain,
and saving PNG + PDF byte for byte the same on every run (no dates, fixed SVG hash salt).

Figure scripts call :func:`use_style` before importing ``matplotlib.pyplot`` so the ``agg``
backend of ``resources/matplotlibrc`` is in force from the start.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np

# Colour-blind safe (Okabe-Ito), in domain order; cycles past eight domains.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
TARGET_COLOR, CONTROL_COLOR, NEUTRAL_COLOR = "#D55E00", "#0072B2", "#7f7f7f"


def use_style(style_path: str, seed: int = 0) -> None:
    """Load the workflow's matplotlibrc and seed numpy and ``random`` (any jitter is reproducible)."""
    import matplotlib

    matplotlib.rc_file(style_path)
    matplotlib.use("agg")
    matplotlib.rcParams["svg.hashsalt"] = "neagari"
    random.seed(seed)
    np.random.seed(seed)


def save(fig, png: str, pdf: str) -> None:
    """Write ``fig`` as PNG and PDF without timestamps, then close it."""
    import matplotlib.pyplot as plt

    fig.savefig(png, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None})
    plt.close(fig)


def domain_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per name, in the given order (the pipeline's domain order)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def panel_grid(n: int, ncols: int = 3, panel_size: tuple[float, float] = (3.4, 2.6), sharex=False, sharey=False):
    """(fig, axes): ``n`` panels in rows of ``ncols``; panels past ``n`` are hidden. axes is 1-D."""
    import matplotlib.pyplot as plt

    n = max(n, 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             sharex=sharex, sharey=sharey, squeeze=False)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def empty_figure(message: str, size: tuple[float, float] = (6.4, 2.0)):
    """A figure that says why there is nothing to plot (the rule's outputs must still exist)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, color=NEUTRAL_COLOR)
    return fig


def legend(ax, **kw):
    """A legend that does not hide what it labels: where it covers least, on a mostly opaque frame
    (the style turns frames off, which lets curves show through the labels)."""
    return ax.legend(**{"loc": "best", "frameon": True, "framealpha": 0.85, "edgecolor": "none", "fontsize": 8,
                        **kw})


def figure_legend(fig, **kw):
    """One legend for the whole figure, outside the axes (right of them unless ``loc`` says else)."""
    return fig.legend(**{"loc": "outside right upper", "frameon": False, "fontsize": 8, **kw})


def panel_note(ax, text: str) -> None:
    """A short note in the middle of a panel that has nothing (or little) to show."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=NEUTRAL_COLOR, fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})


def trajectory_panel(ax, base: np.ndarray, probe_names: Sequence[str], kept_iterations: np.ndarray,
                     kept_gaps: np.ndarray, iterations_run: int, n_nearest: int) -> int:
    """Gaps of the ``n_nearest`` wrong targets nearest the boundary after each accepted move, as
    steps over the whole run (iteration 0 .. ``iterations_run``). ``base``: the targets' base gaps,
    shape (T,); ``kept_iterations``: iteration of each accepted move, shape (K,); ``kept_gaps``:
    every probe's gap after it, shape (K, P >= T). A run that kept no move keeps its targets at
    their base gaps, drawn flat with a note; a run with no wrong target says so. Returns how many
    targets it drew."""
    from matplotlib.ticker import MaxNLocator

    wrong = np.flatnonzero(base <= 0)
    nearest = wrong[np.argsort(-base[wrong])][:n_nearest]  # closest to zero from below first
    end = max(int(iterations_run), int(kept_iterations.max()) + 1 if kept_iterations.size else 0, 1)
    x = np.concatenate([[0], kept_iterations + 1, [end]])
    for color, j in zip(PALETTE, nearest):
        y = np.concatenate([[base[j]], kept_gaps[:, j], [kept_gaps[-1, j] if len(kept_gaps) else base[j]]])
        ax.step(x, y, where="post", color=color, label=probe_names[j])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlim(0, end)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    if not len(nearest):
        ax.set_ylim(-1, 1)
        panel_note(ax, "no wrong target")
    elif not len(kept_iterations):
        panel_note(ax, "no accepted move")
    if len(nearest):  # below the panel: flat lines leave no free corner inside it
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=7, frameon=False, ncols=1)
    return len(nearest)


def read_summary(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def heatmap(ax, values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], *, cmap: str,
            center_zero: bool = False, fmt: str = "{:.3g}", colorbar_label: str = "",
            vmin: float | None = None) -> None:
    """Annotated heatmap of ``values`` (rows, cols); NaN cells stay blank. A diverging map is
    centred on zero when ``center_zero`` so the sign of each cell reads from its colour; counts
    pass ``vmin=0`` so that an empty cell is always the lightest."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    finite = values[np.isfinite(values)]
    norm = None
    if center_zero and finite.size:
        bound = float(np.max(np.abs(finite))) or 1.0
        norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto",
                   vmin=None if norm else vmin)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.grid(False)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            r, g, b, _ = im.cmap(im.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived luminance of the cell
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="white" if dark else "black")
    plt.colorbar(im, ax=ax, label=colorbar_label, shrink=0.8)
