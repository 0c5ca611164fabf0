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
