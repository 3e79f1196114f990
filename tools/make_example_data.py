"""Build the bundled example scene set (inst/extdata/amazon) from ../shared/data/amazon.

A subset of the Amazon forest / non-forest chips of Bragagnolo et al. (2019), Zenodo
record 3233081: images re-encoded as tiled DEFLATE GeoTIFFs (pixels unchanged), masks
copied as published (palette PNGs on the image grid, 1 = forest, 2 = non-forest,
without georeferencing: rsunet.make_mask georeferences them).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import rasterio
from rasterio.shutil import copy as gdal_copy

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(os.environ.get("RSUNET_SHARED_DATA", ROOT.parent / "shared" / "data")) / "amazon" / "train"
OUT = ROOT / "inst" / "extdata" / "amazon"

# Chosen for a spread of forest fractions (0.26-0.91) and of scenes (fields, pasture,
# rivers); "test" chips are held aside
# from training and used only to assess the maps.
CHIPS = {
    "train": ["Amazon_122.tiff_33", "Amazon_1377.tiff_12", "Amazon_170.tiff_38",
              "Amazon_1712.tiff_26", "Amazon_425.tiff_44", "Amazon_5.tiff_50",
              "Amazon_639.tiff_49", "Amazon_954.tiff_36", "Amazon_832.tiff_43",
              "Amazon_1110.tiff_25"],
    "test": ["Amazon_720.tiff_40", "Amazon_511.tiff_35", "Amazon_822.tiff_20"],
}


def main() -> int:
    if not SRC.exists():
        print(f"source data not found: {SRC}", file=sys.stderr)
        return 1
    for part, chips in CHIPS.items():
        (OUT / part / "images").mkdir(parents=True, exist_ok=True)
        (OUT / part / "masks").mkdir(parents=True, exist_ok=True)
        for chip in chips:
            name = chip.replace(".tiff_", "_")
            gdal_copy(SRC / "images" / f"{chip}.tiff", OUT / part / "images" / f"{name}.tif",
                      driver="GTiff", tiled=True, blockxsize=256, blockysize=256,
                      compress="deflate", predictor=2, zlevel=9)
            shutil.copyfile(SRC / "masks" / f"{chip}.png", OUT / part / "masks" / f"{name}.png")
    with rasterio.open(next((OUT / "train" / "images").glob("*.tif"))) as src:
        print(f"wrote {OUT}: {sum(len(c) for c in CHIPS.values())} chips, {src.count} bands, {src.crs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
