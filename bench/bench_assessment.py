"""Benchmark assess_map: memory stays flat as the map grows; time against scikit-learn.

Two synthetic 4-class map pairs (uint8, tiled, DEFLATE) of N and 4N pixels. For each:
  - peak Python-heap memory (tracemalloc: numpy buffers are traced) of assess_map
    streaming row blocks, and of the whole-map route (read both maps with rasterio,
    sklearn.metrics.confusion_matrix on the valid pixels);
  - best-of-3 time of both routes, interleaved (the machine is shared and noisy).
Reports ratios measured in this one run. Exit status 0.

    .venv/bin/python bench/bench_assessment.py [edge_pixels]   # 1500, best of 3
    .venv/bin/python bench/bench_assessment.py --quick         # 400, once: checks it runs
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from rsunet.assessment import assess_map


def _write_pair(folder: Path, edge: int, seed: int):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.repeat(rng.integers(0, 4, size=(edge // 50, edge // 50)), 50, 0), 50, 1)
    truth = truth.astype(np.uint8)
    guess = truth.copy()
    noise = rng.random(truth.shape) < 0.15
    guess[noise] = rng.integers(0, 4, size=int(noise.sum()))
    guess[rng.random(truth.shape) < 0.01] = 255
    profile = dict(driver="GTiff", width=edge, height=edge, count=1, dtype="uint8", nodata=255,
                   crs="EPSG:32622", transform=Affine(1, 0, 500000, 0, -1, 9000000),
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    paths = []
    for name, a in (("ref", truth), ("pred", guess)):
        path = folder / f"{name}_{edge}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(a, 1)
        paths.append(path)
    return paths


def _whole_map(ref, pred):
    from sklearn.metrics import confusion_matrix

    with rasterio.open(ref) as a, rasterio.open(pred) as b:
        r, p = a.read(1), b.read(1)
    ok = (r != 255) & (p != 255)
    return confusion_matrix(r[ok], p[ok], labels=[0, 1, 2, 3])


def _streamed(ref, pred):
    return assess_map(pred, ref).matrix


def _peak(fn, *args):
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _best_time(fns, args, repeats=3):
    best = {f.__name__: float("inf") for f in fns}
    for _ in range(repeats):
        for f in fns:  # interleaved: both routes see the same machine load
            t0 = time.perf_counter()
            f(*args)
            best[f.__name__] = min(best[f.__name__], time.perf_counter() - t0)
    return best


def main(argv):
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    edge = int(argv[0]) if argv else 400 if quick else 1500
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for e in (edge, 2 * edge):
            ref, pred = _write_pair(Path(tmp), e, seed=e)
            assert np.array_equal(_streamed(ref, pred), _whole_map(ref, pred))
            mem = {f.__name__: _peak(f, ref, pred) for f in (_streamed, _whole_map)}
            t = _best_time((_streamed, _whole_map), (ref, pred), repeats)
            rows.append((e, mem, t))
    print(f"{'map':>12} {'pixels':>10} {'peak MB stream':>15} {'peak MB whole':>14} "
          f"{'s stream':>9} {'s whole':>8} {'time stream/whole':>18}")
    for e, mem, t in rows:
        print(f"{e:>5}x{e:<6} {e * e:>10,} {mem['_streamed'] / 1e6:>15.1f} {mem['_whole_map'] / 1e6:>14.1f} "
              f"{t['_streamed']:>9.3f} {t['_whole_map']:>8.3f} {t['_streamed'] / t['_whole_map']:>18.2f}")
    (e1, m1, _), (e2, m2, _) = rows
    print(f"\nmap area x{(e2 / e1) ** 2:.0f}: streaming peak x{m2['_streamed'] / m1['_streamed']:.2f}, "
          f"whole-map peak x{m2['_whole_map'] / m1['_whole_map']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
