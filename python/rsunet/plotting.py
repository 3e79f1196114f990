"""What every rsunet figure shares: how figures are made, images stretched, classes coloured.

Figures are for people who would rather look than read; they all use the same class
colours (tab10, class id = colour index) so a class looks the same in every PNG.
Every figure is a :class:`matplotlib.figure.Figure` drawn by the Agg canvas, made
without pyplot: a plotting call never switches the user's backend (a Jupyter user keeps
theirs, and the returned figure shows there), and nothing is left open in pyplot.
"""

from __future__ import annotations

import numpy as np

from rsunet.io import atomic_path, is_nodata
from rsunet.normalization import SCENE_PERCENTILES, scene_scaling


def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` (``Figure(**kwargs)``) with an Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out=None, overwrite=False, dpi=100):
    """Write ``fig`` as a PNG to ``out`` (atomically) when ``out`` is given; return ``fig``."""
    if out is not None:
        with atomic_path(out, overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    return fig


def stretch(img, nodata=None) -> np.ndarray:
    """``(bands, rows, cols)`` -> ``(rows, cols, bands)`` in 0..1, each band at its 2-98 % range.

    Nodata pixels (in any band's value) are shown black.
    """
    x = img.astype(np.float64)
    bad = is_nodata(x, nodata)
    out = np.zeros(x.shape)
    for b in range(x.shape[0]):
        v = x[b][~bad[b]]
        if v.size:  # the same 2-98 % scaling as normalize="scene", clipped for display
            scale, offset = scene_scaling([np.percentile(v, SCENE_PERCENTILES)])
            out[b] = np.clip(x[b] * scale[0] + offset[0], 0, 1)
    return np.moveaxis(np.where(bad, 0, out), 0, -1)


def class_colormap(n_classes: int):
    """A matplotlib colormap with one colour per class id ``0..n_classes-1``."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    return ListedColormap(matplotlib.colormaps["tab10"](np.arange(max(n_classes, 1)) % 10))
