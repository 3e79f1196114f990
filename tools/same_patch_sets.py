"""Make the same patch sets with two versions of rsunet and compare them byte for byte.

    PYTHONPATH=<old>/python python tools/same_patch_sets.py INPUTS OUT_OLD
    PYTHONPATH=<new>/python python tools/same_patch_sets.py INPUTS OUT_NEW
    diff -r OUT_OLD OUT_NEW && echo identical

Scenes: 10 Amazon chips (uint8, no nodata), the int16 test-vector scene with a nodata
corner under every test-vector case (shift, pad, drop; overlapping strides) and
RStoolbox's float32 Landsat stack (7 bands): every way make_patches gathers a scene's
band percentiles (patches.json) besides cutting it. Masks are made once per run with
make_mask into INPUTS by the first run and reused by the second (patches.json records
their paths): the comparison is of make_patches' output only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSUNET_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _amazon(work):
    from rsunet.samples import make_mask

    root = SHARED / "amazon" / "train"
    images = sorted((root / "images").glob("*.tiff"))[:11]
    pairs = []
    for image in images:
        png = root / "masks" / f"{image.stem}.png"
        with rasterio.open(png) as m, rasterio.open(image) as i:
            if (m.width, m.height) != (i.width, i.height):
                continue
        mask = work / f"{image.stem}.mask.tif"
        if not mask.exists():
            make_mask(image, png, mask, classes={1: "forest", 2: "background"})
        pairs.append((image, mask))
    return pairs[:10]


def _float_scene(work):
    lsat = SHARED / "rstoolbox" / "lsat.tif"
    mask = work / "lsat.mask.tif"
    with rasterio.open(lsat) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=None)
        labels = (np.arange(src.height * src.width).reshape(src.height, src.width) // 997 % 3)
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(labels.astype(np.uint8), 1)
    return lsat, mask


def make(work, out):
    from rsunet.patches import make_patches

    work, out = Path(work), Path(out)
    work.mkdir(parents=True, exist_ok=True)
    pairs = _amazon(work)
    make_patches([p[0] for p in pairs], [p[1] for p in pairs], out / "amazon", size=128,
                 stride=64, min_valid=0, progress=False)
    vectors = ROOT / "inst" / "extdata" / "testvectors"
    spec = json.loads((vectors / "patches.json").read_text())
    for i, case in enumerate(spec["cases"]):
        make_patches(vectors / spec["image"], vectors / spec["mask"], out / f"vectors_{i}",
                     size=case["size"], stride=case["stride"], edge=case["edge"], keep=case["keep"],
                     min_valid=case["min_valid"], min_labelled=case["min_labelled"], progress=False)
    lsat, mask = _float_scene(work)
    make_patches(lsat, mask, out / "lsat", size=64, stride=48, edge="drop", progress=False)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    make(*sys.argv[1:])
