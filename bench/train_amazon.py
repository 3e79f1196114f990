"""Train a CPU-sized U-Net on the 30 Amazon training chips (forest vs non-forest).

    python bench/train_amazon.py [out_dir] [epochs]

Masks from the PNGs (1 = forest, 2 = non-forest -> background 0), 128-px patches,
a spatial-block split (80/20), U-Net depth 4 / 16 filters, BCE + Dice, augmentation on.
Prints the best epoch's validation scores; about 5-10 minutes on 2 cores.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rsunet.patches import make_patches, split_patches  # noqa: E402
from rsunet.samples import make_mask  # noqa: E402
from rsunet.training import train_unet  # noqa: E402

SHARED = Path(os.environ.get("RSUNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main(out="/tmp/rsunet-amazon", epochs=15):
    out = Path(out)
    root = SHARED / "amazon" / "train"
    images, masks = [], []
    for image in sorted((root / "images").glob("*.tiff")):
        png = root / "masks" / f"{image.stem}.png"
        try:
            made = make_mask(image, png, out / "masks" / f"{image.stem}.tif",
                             classes={1: "forest", 2: "background"}, overwrite=True)
        except Exception as exc:  # the one 512x515 PNG of the published set
            print(f"skipped {image.name}: {type(exc).__name__}: {exc}")
            continue
        images.append(image)
        masks.append(made["path"])
    make_patches(images, masks, out / "patches", size=128, stride=128, overwrite=True, progress=False)
    index = split_patches(out / "patches", fractions=(0.8, 0.2), method="blocks", block=2, seed=42)
    print(f"{len(images)} chips, patches: {index['split'].value_counts().to_dict()}")
    t0 = time.perf_counter()
    history = train_unet(out / "patches", out / "unet.keras", depth=4, filters=16, batch_size=16,
                         epochs=int(epochs), learning_rate=0.002, patience=5, seed=42,
                         dropout=0.1, overwrite=True)
    minutes = (time.perf_counter() - t0) / 60
    best = history.loc[history["val_loss"].idxmin()]
    print(history.round(4).to_string(index=False))
    print(f"\nbest epoch {int(best['epoch'])}: validation F1 {best['val_f1']:.4f}, "
          f"IoU {best['val_iou']:.4f}, accuracy {best['val_accuracy']:.4f}; "
          f"{len(history)} epochs in {minutes:.1f} min")
    return history


if __name__ == "__main__":
    main(*sys.argv[1:])
