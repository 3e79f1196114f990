"""How fast the rpy2 bridge hands rasters to R and back, against a GeoTIFF file, in one run.

A (4, 1024, 1536) raster of each dtype (10 % nodata). Timed, best of ``repeats``:

* to R, bridge: ``raster_to_r`` (values copied into an in-memory SpatRaster), then
  ``terra::global(x, "sum")`` so terra touches every cell;
* to R, file: ``rsunet.io.write_raster`` (deflate) + ``terra::rast(path)`` + the same sum;
* back, bridge: ``raster_from_r`` of that SpatRaster;
* back, file: ``terra::writeRaster`` + ``rsunet.io.read_raster``.

It prints Mpixel/s and the ratios bridge / file (goal: >= 1, the bridge should never be
slower than going through a file). Public API only (``rsunet.r.r_call`` runs the R side).

    python bench/bench_r.py [repeats]   # best of 3
    python bench/bench_r.py --quick     # a (4, 256, 384) raster, once: checks it runs
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from affine import Affine

from rsunet import io, r

SHAPE = (4, 1024, 1536)
QUICK_SHAPE = (4, 256, 384)
TOUCH = 'function(x) terra::global(x, "sum", na.rm = TRUE)'
TOUCH_FILE = 'function(f) terra::global(terra::rast(f), "sum", na.rm = TRUE)'
WRITE = "function(x, f) { terra::writeRaster(x, f, overwrite = TRUE); NULL }"


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def raster(dtype, shape):
    rng = np.random.default_rng(1)
    data = (rng.random(shape) * 200).astype(dtype)
    valid = rng.random(shape[1:]) > 0.1
    nodata = float("nan") if np.dtype(dtype).kind == "f" else 255
    data[:, ~valid] = nodata
    return io.Raster(data, valid, Affine(30, 0, 500000, 0, -30, 9000000), io.CRS.from_epsg(32622), nodata)


def main(argv):
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    repeats = int(argv[0]) if argv else 1 if quick else 3
    shape = QUICK_SHAPE if quick else SHAPE
    r.start_r()
    mpix = shape[0] * shape[1] * shape[2] / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tif, back_tif = Path(tmp) / "a.tif", Path(tmp) / "b.tif"
        for dtype in ["uint8", "int16", "uint16", "float32"]:
            src = raster(dtype, shape)
            x = r.raster_to_r(src)
            to_bridge = best(lambda: r.r_call(TOUCH, r.raster_to_r(src)), repeats)
            to_file = best(lambda: r.r_call(TOUCH_FILE, str(io.write_raster(
                tif, src.data, src.transform, src.crs, nodata=src.nodata, overwrite=True))), repeats)
            back_bridge = best(lambda: r.raster_from_r(x), repeats)
            back_file = best(lambda: (r.r_call(WRITE, x, str(back_tif)), io.read_raster(back_tif)),
                             repeats)
            rows.append((dtype, mpix / to_bridge, mpix / to_file, to_file / to_bridge,
                         mpix / back_bridge, mpix / back_file, back_file / back_bridge))
    print(f"raster {shape} (bands, rows, cols), best of {repeats}; Mpixel/s (band-pixels)")
    print(f"{'dtype':8} {'to R bridge':>12} {'to R file':>10} {'ratio':>6} "
          f"{'back bridge':>12} {'back file':>10} {'ratio':>6}")
    for row in rows:
        print(f"{row[0]:8} {row[1]:12.1f} {row[2]:10.1f} {row[3]:6.2f} {row[4]:12.1f} {row[5]:10.1f} {row[6]:6.2f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
