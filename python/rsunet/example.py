"""The bundled example: Amazon forest / non-forest chips (Bragagnolo et al. 2019).

Shipped with the R package in ``inst/extdata/amazon`` (R: ``system.file("extdata",
"amazon", package = "rsunet")``) and found here from the Python package.
"""

from __future__ import annotations

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
    candidates = [
        Path(str(resources.files("rsunet"))) / "data" / "amazon",  # an installed wheel
        Path(__file__).resolve().parents[2] / "inst" / "extdata" / "amazon",  # a checkout
    ]
    for candidate in candidates:
        if (candidate / "train" / "images").is_dir():
            return candidate
    raise InputError("the bundled example data is missing from this installation")
