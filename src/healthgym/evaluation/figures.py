"""Figure helpers of the metric modules: Agg figures (no pyplot state), pages, heatmaps."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Panels per figure page; variables beyond `MAX_PAGES` pages are left out (and noted).
PANELS_PER_PAGE = 16
MAX_PAGES = 3


def new_figure(n_panels: int, ncols: int = 4, size: tuple[float, float] = (3.4, 2.5)) -> Any:
    """An Agg figure with a grid of `n_panels` axes (extra cells hidden); no pyplot state."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def paginate(items: list[Any], per: int = PANELS_PER_PAGE) -> list[list[Any]]:
    """At most `MAX_PAGES` pages of `per` items (callers note what is left out)."""
    return [items[i : i + per] for i in range(0, min(len(items), per * MAX_PAGES), per)]


def page_name(base: str, i: int) -> str:
    """The name of page ``i`` (from 0) of a figure: ``base``, then ``base_2``, ``base_3`` ..."""
    return base if i == 0 else f"{base}_{i + 1}"


def heatmap(ax: Axes, matrix: pd.DataFrame, title: str, vmin: float, cmap: str) -> Any:
    """One labelled correlation-style heatmap (NaN cells blank)."""
    image = ax.imshow(matrix.to_numpy(float), vmin=vmin, vmax=1, cmap=cmap)
    n = len(matrix)
    size = max(4, min(8, 160 / max(n, 1)))
    ax.set_xticks(range(n), matrix.columns, rotation=90, fontsize=size)
    ax.set_yticks(range(n), matrix.index, fontsize=size)
    ax.set_title(title)
    return image
