"""Figures: every plotting function returns a matplotlib Figure made without pyplot,
leaves the user's matplotlib backend as it was, and writes a file only when asked."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from rsunet.assessment import _assessment, plot_confusion
from rsunet.augmentation import preview_augmentation
from rsunet.errors import OutputExistsError
from rsunet.example import example_data
from rsunet.patches import make_patches, plot_patches, split_patches
from rsunet.samples import make_mask
from rsunet.training import plot_history

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    """A split patch set from two of the bundled chips."""
    folder = tmp_path_factory.mktemp("plotting")
    data = example_data()["train"]
    masks = [make_mask(image, png, folder / f"{image.stem}.tif",
                       classes={1: "forest", 2: "background"})["path"]
             for image, png in zip(data["images"][:2], data["masks"][:2])]
    make_patches(data["images"][:2], masks, folder / "patches", size=128, stride=128, progress=False)
    split_patches(folder / "patches", fractions=(0.5, 0.5), method="random", seed=0)
    return folder / "patches"


def _history():
    return pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.7, 0.65],
                         "accuracy": [0.6, 0.8, 0.85], "val_accuracy": [0.55, 0.75, 0.8]})


def _confusion():
    counts = np.zeros((256, 256), np.int64)
    counts[:2, :2] = [[50, 5], [10, 35]]
    return _assessment(counts, {0: "background", 1: "forest"}, None)


FIGURES = {
    "plot_patches": lambda p, out: plot_patches(p, out, n=2, split="train"),
    "preview_augmentation": lambda p, out: preview_augmentation(p, out, n=2, versions=1),
    "plot_history": lambda p, out: plot_history(_history(), out),
    "plot_confusion": lambda p, out: plot_confusion(_confusion(), out),
}


@pytest.fixture
def svg_backend():
    """A backend that is not Agg, as a Jupyter or desktop user has; restored afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(before)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figures_leave_the_backend_alone_and_write_only_when_asked(name, patches, tmp_path, svg_backend):
    fig = FIGURES[name](patches, None)
    assert isinstance(fig, Figure) and fig.axes
    assert matplotlib.get_backend() == svg_backend
    assert list(tmp_path.iterdir()) == []  # nothing written without out
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # nothing left open in pyplot either

    out = tmp_path / "figure.png"
    again = FIGURES[name](patches, out)
    assert isinstance(again, Figure) and out.read_bytes()[:8] == PNG
    assert matplotlib.get_backend() == svg_backend
    with pytest.raises(OutputExistsError):
        FIGURES[name](patches, out)


def test_plotting_modules_do_not_call_matplotlib_use():
    """The source itself: no module of the package switches the backend."""
    from pathlib import Path

    import rsunet

    offenders = [p.name for p in Path(rsunet.__file__).parent.glob("*.py")
                 if "matplotlib.use(" in p.read_text() or "import matplotlib.pyplot" in p.read_text()]
    assert offenders == []
