"""How fast make_patches writes patch pairs, against two baselines, in one run.

Scenes: 10 Amazon chips (512x512, 3-band uint8) and their masks (made once with
make_mask, not timed). For the same windows (128x128, stride 128) it times:

* make_patches (per-scene .npy stacks written strip by strip, index, atomic folder);
* a bare loop of windowed rasterio reads of image and mask (no writing): the floor;
* the course's way: crop each patch and write it and its mask as PNG files with PIL.

It prints patch pairs/s and the ratios (goals: make_patches / bare reads >= 0.5,
make_patches / PNG >= 20; P3 and P4 in docs/performance.md). Ratios, measured in one
run, are what the shared, noisy machine can compare. Usage:

    python bench/bench_patches.py [n_scenes] [repeats]   # 10 scenes, best of 5
    python bench/bench_patches.py --quick                # 3 scenes, once: checks it runs
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import Window

from rsunet.patches import make_patches, window_offsets
from rsunet.samples import make_mask

SHARED = Path(os.environ.get("RSUNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SIZE = 128


def scenes(n, work):
    root = SHARED / "amazon" / "train"
    images = sorted((root / "images").glob("*.tiff"))
    pairs = []
    for image in images:
        png = root / "masks" / (image.stem + ".png")
        with rasterio.open(png) as src, rasterio.open(image) as img:
            if (src.width, src.height) != (img.width, img.height):
                continue  # Amazon_181's mask is 515 wide: not a usable pair
        mask = work / f"{image.stem}.mask.tif"
        make_mask(image, png, mask, classes={1: "forest", 2: "background"})
        pairs.append((image, mask))
        if len(pairs) == n:
            break
    return pairs


def windows(path):
    with rasterio.open(path) as src:
        return [Window(c, r, SIZE, SIZE) for r in window_offsets(src.height, SIZE, SIZE)
                for c in window_offsets(src.width, SIZE, SIZE)]


def bare_reads(pairs, _):
    n = 0
    for image, mask in pairs:
        with rasterio.open(image) as src, rasterio.open(mask) as msrc:
            for w in windows(image):
                src.read(window=w)
                msrc.read(1, window=w)
                n += 1
    return n


def course_png(pairs, out):
    out.mkdir()
    n = 0
    for image, mask in pairs:
        with rasterio.open(image) as src, rasterio.open(mask) as msrc:
            for w in windows(image):
                img = np.moveaxis(src.read(window=w), 0, -1)
                Image.fromarray(img).save(out / f"img_{n:05d}.png")
                Image.fromarray(msrc.read(1, window=w)).save(out / f"cla_{n:05d}.png")
                n += 1
    return n


def rsunet_patches(pairs, out):
    index = make_patches([p[0] for p in pairs], [p[1] for p in pairs], out, size=SIZE,
                         min_valid=0, progress=False)
    return len(index)


def timed(fn, pairs, work, repeats):
    best, n = float("inf"), 0
    for i in range(repeats):
        out = work / f"{fn.__name__}_{i}"
        t0 = time.perf_counter()
        n = fn(pairs, out)
        best = min(best, time.perf_counter() - t0)
        shutil.rmtree(out, ignore_errors=True)
    return n, best


def main(argv):
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    n_scenes = int(argv[0]) if argv else 3 if quick else 10
    repeats = int(argv[1]) if len(argv) > 1 else 1 if quick else 5
    if not (SHARED / "amazon" / "train").exists():
        print(f"no Amazon data under {SHARED} (set RSUNET_SHARED_DATA); nothing measured")
        return 1
    # the masks are PNGs without georeferencing (make_mask puts them on the image's grid)
    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = scenes(n_scenes, work)
        for fn in (bare_reads, course_png, rsunet_patches):  # warm the file cache
            timed(fn, pairs, work, 1)
        # interleave the repeats so that machine noise hits every method alike
        results = {fn.__name__: (0, float("inf")) for fn in (bare_reads, course_png, rsunet_patches)}
        for _ in range(repeats):
            for fn in (bare_reads, course_png, rsunet_patches):
                n, t = timed(fn, pairs, work, 1)
                results[fn.__name__] = (n, min(t, results[fn.__name__][1]))
    rate = {k: n / t for k, (n, t) in results.items()}
    print(f"{len(pairs)} Amazon scenes, {results['rsunet_patches'][0]} patch pairs of {SIZE}x{SIZE}, "
          f"best of {repeats}")
    print(f"{'method':<34}{'pairs/s':>10}")
    print(f"{'bare windowed rasterio reads':<34}{rate['bare_reads']:>10.0f}")
    print(f"{'course: crop + PIL PNG files':<34}{rate['course_png']:>10.0f}")
    print(f"{'rsunet make_patches (.npy stacks)':<34}{rate['rsunet_patches']:>10.0f}")
    print(f"P3 make_patches / bare reads = {rate['rsunet_patches'] / rate['bare_reads']:.2f}  (goal >= 0.5)")
    print(f"P4 make_patches / course PNG = {rate['rsunet_patches'] / rate['course_png']:.1f}  (goal >= 20)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
