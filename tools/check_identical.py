"""Hashes of what rsunet makes from the bundled example chips: a restructuring leaves them all alike.

Run it on a checkout before a change and after it, and compare the two lists of hashes::

    PYTHONPATH=python python tools/check_identical.py > before.txt
    ... change the code ...
    PYTHONPATH=python python tools/check_identical.py > after.txt
    diff before.txt after.txt

It makes, in ``--work`` (emptied first), from a copy of the chips (so that the paths
recorded in ``patches.json`` are the same whichever checkout runs it): the masks, a
split patch set, its class balance, a freshly trained small U-Net's metadata (the
figures of the epoch left out: CPU training is not bit-reproducible), a Random Forest
baseline, maps of the three test chips from a FIXED U-Net file (``--model``, trained
once on the first run and then reused, for the same reason) and from the forest, and
the assessment and object-count tables of those maps. About a minute on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

MASK_CLASSES = {1: "forest", 2: "background"}
TINY_UNET = dict(depth=2, filters=4, epochs=1, batch_size=8, normalize="scene", augmentation=False,
                 progress=False, seed=1)
VOLATILE_METADATA = ("best",)  # the best epoch's loss and scores: not bit-reproducible on a CPU


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/rsunet-identical/work")
    parser.add_argument("--model", default="/tmp/rsunet-identical/fixed-unet.keras",
                        help="the fixed U-Net the maps come from; trained here if missing")
    args = parser.parse_args()
    import rsunet

    work, model = Path(args.work), Path(args.model)
    shutil.rmtree(work, ignore_errors=True)
    inputs = _copy_chips(rsunet.example_data(), work / "inputs")
    masks = _make_masks(rsunet, inputs, work / "masks")
    patches = work / "patches"
    train = [i for i in inputs if i.parent.parent.name == "train"]
    rsunet.make_patches(train, [masks[i] for i in train], patches, size=128, stride=96,
                        progress=False)
    rsunet.split_patches(patches, fractions=(0.7, 0.2, 0.1), block=2, seed=3)
    rsunet.class_balance(patches).to_csv(work / "class_balance.csv", index=False)
    fresh = work / "unet.keras"
    rsunet.train_unet(patches, fresh, **TINY_UNET)
    (work / "unet-metadata.json").write_text(_stable_metadata(fresh))
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fresh, model)
    forest = rsunet.train_baseline(patches, work / "forest.joblib", n_per_class=300, n_trees=8,
                                   normalize="scene", seed=2)
    test = [i for i in inputs if i.parent.parent.name == "test"]
    _predict_and_assess(rsunet, model, forest, test, [masks[i] for i in test], work / "maps")
    for path, digest in _hashes(work):
        print(f"{digest}  {path}")


def _copy_chips(example, to):
    copied = []
    for part in ("train", "test"):
        for kind in ("images", "masks"):
            for path in example[part][kind]:
                target = to / part / kind / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
                if kind == "images":
                    copied.append(target)
    return copied


def _make_masks(rsunet, images, out):
    masks = {}
    for image in images:
        labels = image.parent.parent / "masks" / f"{image.stem}.png"
        masks[image] = out / f"{image.stem}.tif"
        rsunet.make_mask(image, labels, masks[image], classes=MASK_CLASSES, background="non-forest")
    return masks


def _stable_metadata(model):
    with zipfile.ZipFile(model) as z:
        meta = json.loads(z.read("rsunet.json"))
    return json.dumps({k: v for k, v in meta.items() if k not in VOLATILE_METADATA}, indent=1,
                      sort_keys=True)


def _predict_and_assess(rsunet, model, forest, images, references, out):
    maps = {
        "unet": rsunet.predict_raster(model, images, out / "unet", window=128, overlap=32,
                                      output="both", prob_dtype="uint8", progress=False),
        "unet-tta-centre": rsunet.predict_raster(model, images[:1], out / "unet-tta", window=128,
                                                 overlap=48, blend="centre", tta=True,
                                                 output="probabilities", progress=False),
        "forest": rsunet.predict_raster(forest, images, out / "forest", window=256, overlap=0,
                                        blend="average", progress=False),
    }
    for name in ("unet", "forest"):
        classes = [m["classes"] if isinstance(m, dict) else m for m in maps[name]]
        result = rsunet.assess_map(classes, references, csv=out / f"{name}-confusion.csv")
        result.table().to_csv(out / f"{name}-assessment.csv", index=False)
        result.per_scene.to_csv(out / f"{name}-per-scene.csv", index=False)
        sampled = rsunet.assess_map(classes[0], references[0], sample=500, seed=4)
        sampled.table().to_csv(out / f"{name}-sampled.csv", index=False)
        objects = rsunet.count_objects(classes[0], 1, min_pixels=4)
        objects.objects.to_csv(out / f"{name}-objects.csv", index=False)
        polygons = rsunet.polygonize(classes[0], out / f"{name}-polygons.gpkg")
        polygons.to_wkt().to_csv(out / f"{name}-polygons.csv", index=False)


def _hashes(work):
    for path in sorted(p for p in work.rglob("*") if p.is_file() and not _skipped(p.relative_to(work))):
        yield path.relative_to(work), hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _skipped(path):
    """The copied chips; the fresh models and their training history (not bit-reproducible on a
    CPU); GeoPackages (they hold a timestamp: their features are hashed as CSV)."""
    return path.parts[0] == "inputs" or path.suffix in (".keras", ".joblib", ".gpkg") \
        or path.stem.endswith("_history")


if __name__ == "__main__":
    main()
