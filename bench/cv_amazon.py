"""Scene-wise cross-validation of the U-Net and the Random Forest on the Amazon chips.

The measure behind the README's figures: every usable labelled chip of
``../shared/data/amazon/train`` (29 of 30: one published mask is not on its image's
grid and is reported, not used), 5 folds of whole chips, both models trained by a
configuration's settings on four folds and assessed on the maps of the fifth.

    python bench/cv_amazon.py                       # the demo configuration (example.yaml)
    python bench/cv_amazon.py --config full         # the full configuration
    python bench/cv_amazon.py --config my.yaml --set train_unet.epochs=10 --out cv-test

Prints the summary (mean +/- sd over folds, pooled) and writes everything under --out.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import yaml  # noqa: E402


def shared_chips(root):
    """(images, masks) of the labelled chips whose mask lies on the image's grid."""
    import rasterio

    images, masks = [], []
    for image in sorted((root / "images").glob("*.tif*")):
        mask = root / "masks" / f"{image.stem}.png"
        with rasterio.open(image) as a, rasterio.open(mask) as b:
            if (a.height, a.width) != (b.height, b.width):
                print(f"left out {image.name}: mask {b.height}x{b.width}, image {a.height}x{a.width}")
                continue
        images.append(str(image))
        masks.append(str(mask))
    return images, masks


def configuration(name, settings):
    import rsunet

    path = {"demo": rsunet.example_config(), "full": rsunet.example_config(full=True)}.get(name, name)
    cfg = yaml.safe_load(Path(path).read_text())
    for item in settings:
        key, value = item.split("=", 1)
        section, arg = key.split(".", 1)
        cfg.setdefault(section, {})[arg] = yaml.safe_load(value)
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo", help="demo, full or a configuration file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.ARG=VALUE",
                        help="override one setting (repeatable), e.g. train_unet.epochs=10")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--models", default="unet,random_forest")
    parser.add_argument("--out", default="cv-amazon")
    parser.add_argument("--data", default=os.environ.get("RSUNET_SHARED_DATA", "../shared/data"))
    args = parser.parse_args()

    from rsunet.validation import cross_validate

    images, masks = shared_chips(Path(args.data) / "amazon" / "train")
    cfg = configuration(args.config, args.set)
    cfg["scenes"] = {"example": False, "train": {"images": images, "labels": masks}}
    t0 = time.perf_counter()
    cv = cross_validate(cfg, args.out, folds=args.folds, seed=args.seed,
                        models=args.models.split(","), progress=False)
    print(f"\n{len(images)} chips, {args.folds} folds, {time.perf_counter() - t0:.0f} s")
    print(cv.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
