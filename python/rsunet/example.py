"""The bundled example: Amazon forest / non-forest chips (Bragagnolo et al. 2019).

One copy, in the R package's ``inst/extdata/amazon`` (R: ``system.file("extdata",
"amazon", package = "rsunet")``). A wheel or sdist carries it as ``rsunet/data/amazon``
(pyproject.toml maps it); the Python package that the R package installs does not, and
the R package tells it where its own copy is (``RSUNET_EXAMPLE_DATA``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from rsunet.errors import InputError


def example_data() -> dict:
    """Paths of the bundled example scenes.

    Returns:
        ``{"root": Path, "train": {"images": [...], "masks": [...]},
        "test": {"images": [...], "masks": [...]}, "source": Path}``: images are
        GeoTIFFs, masks palette PNGs on the same grids (1 = forest, 2 = non-forest).
    """
    root = _example_root()
    out = {"root": root, "source": root / "SOURCE.md"}
    for part in ("train", "test"):
        images = sorted((root / part / "images").glob("*.tif"))
        masks = [root / part / "masks" / f"{p.stem}.png" for p in images]
        out[part] = {"images": images, "masks": masks}
    return out


def _example_root() -> Path:
    from_r = os.environ.get("RSUNET_EXAMPLE_DATA")  # set by the R package: its own copy
    candidates = [Path(from_r)] if from_r else []
    candidates += [
        Path(str(resources.files("rsunet"))) / "data" / "amazon",  # an installed wheel
        Path(__file__).resolve().parents[2] / "inst" / "extdata" / "amazon",  # a checkout
    ]
    for candidate in candidates:
        if (candidate / "train" / "images").is_dir():
            return candidate
    raise InputError("the bundled example data is missing from this installation")
