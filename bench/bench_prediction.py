"""Benchmarks of predict_raster (stage 5). Ratios measured in one run; prints a table.

P1  predict_raster wall time (batch and precision "auto", as a user calls it) / Keras
    model.predict on the same windows, 4 a call (goal <= 0.8: faster than the model's own
    predict). P1c: the same against Keras predict at the batch "auto" chose; P1b: against
    a loop of the model's public predict_probabilities at that batch. Interleaved, best
    of 5 each.
P2  peak memory (RSS of a fresh process) for a 16384^2 scene / a 2048^2 scene
    (goal <= 1.25), with a cheap per-pixel model on synthetic uint8 GeoTIFFs in /tmp.
    P2b: the same for the numpy buffers alone (tracemalloc's peak; goal <= 1.25).
U1  predict_raster with uncertainty="entropy" / without (goal <= 1.05); U2 the same for
    tta=True with uncertainty="tta" / tta=True alone (goal <= 1.05). Interleaved, best of N.
P6  the course's way (crop tile files with a margin, predict each, write per-tile
    GeoTIFFs, gdalbuildvrt + gdal_translate) / predict_raster, same model and windows
    (goal >= 3x faster).

Public API only (rsunet.predict_raster, rsunet.unet, RsunetModel, window_offsets), so a
refactor cannot break it silently; tests/test_bench.py runs the quick mode in CI.

    python bench/bench_prediction.py          # about 3-5 minutes on 2 cores
    python bench/bench_prediction.py --quick  # small scenes, one repeat: checks it runs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from report import print_ratios  # noqa: E402
from rasterio.windows import Window  # noqa: E402

TMP = Path(tempfile.gettempdir()) / "rsunet-bench-prediction"
TRANSFORM = Affine(10.0, 0, 500000.0, 0, -10.0, 9000000.0)


def synthetic_scene(path, size, bands=3, height=None):
    """A smooth uint8 scene ``size`` wide and ``height`` (``size``) high (compresses well,
    so a 16384^2 one is quick to make)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    height = height or size
    profile = dict(driver="GTiff", count=bands, height=height, width=size, dtype="uint8",
                   transform=TRANSFORM, crs="EPSG:32622", tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate")
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        step = 1024
        for r in range(0, height, step):
            h = min(step, height - r)
            yy, xx = np.mgrid[r:r + h, 0:size]
            base = (np.sin(xx / 97.0) + np.cos(yy / 61.0)) * 60 + 128
            block = np.stack([base + 20 * b for b in range(bands)])
            block += rng.integers(0, 4, size=block.shape)
            dst.write(np.clip(block, 0, 255).astype(np.uint8), window=Window(0, r, size, h))
    return path


def per_pixel_model(bands=3, k=2):
    import keras

    from rsunet.training import RsunetModel

    inp = keras.Input((None, None, bands))
    m = keras.Model(inp, keras.layers.Conv2D(k, 1, activation="softmax")(inp))
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1, 1, bands, k)).astype(np.float32) * 0.02
    m.set_weights([kernel, -128 * kernel[0, 0].sum(0)])
    return RsunetModel(keras_model=m, bands=bands, classes={i: str(i) for i in range(k)})


def small_unet(bands=3, k=2, depth=3, base=16):
    """rsunet's U-Net (batch norm, as train_unet builds it), untrained, seeded."""
    import keras

    from rsunet import unet
    from rsunet.training import RsunetModel

    keras.utils.set_random_seed(0)
    net = unet(bands, classes=k, depth=depth, filters=base)
    return RsunetModel(keras_model=net, bands=bands, classes={i: str(i) for i in range(k)},
                       depth=depth)


def windows_of(path, window, overlap):
    """The windows predict_raster slides over the scene (edges shifted inwards)."""
    from rsunet.patches import window_offsets

    with rasterio.open(path) as src:
        data = np.moveaxis(src.read(), 0, -1)
    rows = window_offsets(data.shape[0], window, window - overlap, "shift")
    cols = window_offsets(data.shape[1], window, window - overlap, "shift")
    return np.stack([data[r:r + window, c:c + window] for r in rows for c in cols])


def timed(fn, repeat=2):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ---- P1 -------------------------------------------------------------------------------

def bench_p1(size, window=256, overlap=32, batch=4, repeat=5):
    """predict_raster, as a user calls it (batch and precision "auto"), against the model
    alone on the same windows.

    Three model-only routes: Keras ``model.predict`` with ``batch`` windows a call (the
    goal's reference: predict_raster's batch before "auto"), Keras ``model.predict`` with
    as many windows a call as predict_raster's "auto" takes (so that ratio leaves out the
    choice of batch), and a bare loop of the model's ``predict_probabilities`` at that
    batch (unfolded, float32). All are interleaved and each keeps its best of ``repeat``:
    the machine is shared and noisy, and a slow spell then hits all of them.
    """
    from rsunet import predict_raster
    from rsunet.prediction import PIXELS_PER_CALL

    model = small_unet()
    scene = synthetic_scene(TMP / f"scene_{size}.tif", size)
    x = windows_of(scene, window, overlap).astype(np.float32)
    out = TMP / "p1.tif"
    auto = max(1, PIXELS_PER_CALL["cpu"] // window ** 2)
    sides = {
        "keras": lambda: model.keras_model.predict(x, batch_size=batch, verbose=0),
        "keras_auto": lambda: model.keras_model.predict(x, batch_size=auto, verbose=0),
        "bare": lambda: [model.predict_probabilities(x[i:i + auto])
                         for i in range(0, len(x), auto)],
        "ours": lambda: predict_raster(model, scene, out, window=window, overlap=overlap,
                                       overwrite=True, progress=False),
    }
    for fn in sides.values():  # warm up: graph tracing, GDAL caches
        fn()
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, fn in sides.items():
            best[name] = min(best[name], timed(fn, repeat=1))
    return dict(windows=len(x), batch=batch, auto=auto, repeat=repeat, model_s=best["keras"],
                model_auto_s=best["keras_auto"], bare_s=best["bare"], ours_s=best["ours"],
                ratio=best["ours"] / best["keras"], auto_ratio=best["ours"] / best["keras_auto"],
                bare_ratio=best["ours"] / best["bare"])


# ---- U1, U2 ----------------------------------------------------------------------------

def bench_uncertainty(size, window=256, overlap=32, repeat=3):
    """What an uncertainty layer adds to a run: entropy on a plain one, "tta" on a TTA one."""
    from rsunet import predict_raster

    model = small_unet()
    scene = synthetic_scene(TMP / f"scene_{size}.tif", size)

    def run(name, **kw):
        return lambda: predict_raster(model, scene, TMP / f"u_{name}.tif", window=window,
                                      overlap=overlap, overwrite=True, progress=False, **kw)

    sides = {"plain": run("plain"), "entropy": run("entropy", uncertainty="entropy"),
             "tta": run("tta", tta=True), "tta_u": run("tta_u", tta=True, uncertainty="tta")}
    for fn in sides.values():
        fn()
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, fn in sides.items():
            best[name] = min(best[name], timed(fn, repeat=1))
    return dict(best, u1=best["entropy"] / best["plain"], u2=best["tta_u"] / best["tta"], repeat=repeat)


# ---- P2 -------------------------------------------------------------------------------

CHILD = r"""
import json, sys, time, tracemalloc
sys.path.insert(0, {bench!r})
import bench_prediction as b
from report import rss_kb
from rsunet import predict_raster

model = b.per_pixel_model()
model.predict_probabilities(b.np.zeros((1, 8, 8, 3), b.np.uint8))
before = rss_kb("VmRSS:", reset=True)  # the peak starts from here
tracemalloc.start()
t = time.perf_counter()
predict_raster(model, {scene!r}, {out!r}, window=512, overlap=64, batch_size=4,
               overwrite=True, progress=False)
seconds = time.perf_counter() - t
print(json.dumps(dict(before_kb=before, peak_kb=rss_kb(), seconds=seconds,
                      traced_mb=tracemalloc.get_traced_memory()[1] / 2**20)))
"""


def run_child(scene):
    code = CHILD.format(bench=str(Path(__file__).parent), scene=str(scene),
                        out=str(TMP / f"p2_{Path(scene).stem}.tif"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_p2(small, large, height=None):
    """Peak memory predicting a ``large`` scene against a ``small`` one (square, or strips
    ``height`` high: memory must stay flat in width as well as in height)."""
    def scene(size):
        name = f"scene_{size}" + (f"x{height}" if height else "")
        return synthetic_scene(TMP / f"{name}.tif", size, height=height)

    a, b = run_child(scene(small)), run_child(scene(large))
    return dict(small=a, large=b, ratio=b["peak_kb"] / a["peak_kb"],
                traced_ratio=b["traced_mb"] / a["traced_mb"],
                growth_mb=((b["peak_kb"] - b["before_kb"]) / 1024,
                           (a["peak_kb"] - a["before_kb"]) / 1024))


# ---- P6 -------------------------------------------------------------------------------

def course_way(model, scene, work, window, overlap):
    """Crop tiles with a margin to files, predict each, crop the margin, write, mosaic."""
    from rsunet.patches import window_offsets

    def offsets(length, size, stride):
        return window_offsets(length, size, stride, "shift")

    margin = overlap // 2
    tiles, preds = work / "tiles", work / "preds"
    tiles.mkdir(parents=True)
    preds.mkdir()
    with rasterio.open(scene) as src:
        rows = offsets(src.height, window, window - overlap)
        cols = offsets(src.width, window, window - overlap)
        for r in rows:
            for c in cols:
                w = Window(c, r, window, window)
                with rasterio.open(tiles / f"t_{r}_{c}.tif", "w", driver="GTiff", count=src.count,
                                   height=window, width=window, dtype=src.dtypes[0],
                                   crs=src.crs, transform=src.window_transform(w)) as dst:
                    dst.write(src.read(window=w))
        height, width = src.height, src.width
    for tile in sorted(tiles.iterdir()):
        with rasterio.open(tile) as t:
            x = np.moveaxis(t.read(), 0, -1)[None].astype(np.float32)
            transform = t.transform
            _, r, c = tile.stem.split("_")
            r, c = int(r), int(c)
        p = model.keras_model.predict(x, verbose=0)[0]
        # a sigmoid output (one channel) is class 1 above 0.5, as predict_raster's [1 - p, p]
        y = (p[..., 0] > 0.5 if p.shape[-1] == 1 else p.argmax(-1)).astype(np.uint8)
        top = 0 if r == 0 else margin
        left = 0 if c == 0 else margin
        bottom = window if r + window >= height else window - margin
        right = window if c + window >= width else window - margin
        keep = y[top:bottom, left:right]
        with rasterio.open(preds / f"{tile.stem}.tif", "w", driver="GTiff", count=1,
                           height=keep.shape[0], width=keep.shape[1], dtype="uint8",
                           crs="EPSG:32622", nodata=255,
                           transform=transform * Affine.translation(left, top)) as dst:
            dst.write(keep[None])
    vrt = work / "mosaic.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt)] + sorted(str(p) for p in preds.iterdir()),
                   check=True)
    subprocess.run(["gdal_translate", "-q", "-a_nodata", "255", "-co", "COMPRESS=DEFLATE",
                    "-co", "TILED=YES", str(vrt), str(work / "mosaic.tif")], check=True)
    return work / "mosaic.tif"


def bench_p6(model, name, size, window=256, overlap=32, repeat=2):
    import shutil

    from rsunet import predict_raster

    scene = synthetic_scene(TMP / f"scene_{size}.tif", size)
    out = TMP / "p6_ours.tif"
    model.keras_model.predict(np.zeros((1, window, window, 3), np.float32), verbose=0)

    def course():
        work = TMP / "p6_course"
        shutil.rmtree(work, ignore_errors=True)
        return course_way(model, scene, work, window, overlap)

    def ours():
        predict_raster(model, scene, out, window=window, overlap=overlap, blend="centre",
                       overwrite=True, progress=False)

    ours()  # warm up as the course's predict was: tracing for this batch shape
    t_course = t_ours = float("inf")
    for _ in range(repeat):  # interleaved: a slow spell of the shared machine hits both
        t_course = min(t_course, timed(course, repeat=1))
        t_ours = min(t_ours, timed(ours, repeat=1))
    with rasterio.open(out) as a, rasterio.open(TMP / "p6_course" / "mosaic.tif") as b:
        same = float((a.read(1) == b.read(1)).mean())
    return dict(model=name, course_s=t_course, ours_s=t_ours, speedup=t_course / t_ours,
                same_pixels=same)


FULL = dict(p1=2048, repeat=5, p2=(2048, 16384), p2c=(4096, 100_000, 512), p6=2048, u=1024)
QUICK = dict(p1=512, repeat=1, p2=(512, 1024), p2c=(1024, 4096, 512), p6=512, u=256)  # checks that it runs, not the goals


def main(argv):
    sizes = QUICK if "--quick" in argv else FULL
    TMP.mkdir(parents=True, exist_ok=True)
    rows = []
    p1 = bench_p1(sizes["p1"], repeat=sizes["repeat"])
    what = (f"U-Net 16f depth 3, {p1['windows']} windows 256^2, Keras batch {p1['batch']}, "
            f"best of {p1['repeat']} interleaved")
    rows.append(("P1", f"predict_raster / Keras model.predict, {what}",
                 f"{p1['ours_s']:.2f} s / {p1['model_s']:.2f} s", f"{p1['ratio']:.3f}", "<= 0.8"))
    rows.append(("P1c", f"predict_raster / Keras model.predict, batch {p1['auto']} (what 'auto' "
                 "takes)", f"{p1['ours_s']:.2f} s / {p1['model_auto_s']:.2f} s",
                 f"{p1['auto_ratio']:.3f}", "-"))
    rows.append(("P1b", f"predict_raster / a loop of the model's predict_probabilities, batch "
                 f"{p1['auto']}", f"{p1['ours_s']:.2f} s / {p1['bare_s']:.2f} s",
                 f"{p1['bare_ratio']:.3f}", "-"))
    u = bench_uncertainty(sizes["u"], repeat=sizes["repeat"])
    rows.append(("U1", f"predict_raster uncertainty='entropy' / plain, U-Net, {sizes['u']}^2",
                 f"{u['entropy']:.2f} s / {u['plain']:.2f} s", f"{u['u1']:.3f}", "<= 1.05"))
    rows.append(("U2", f"tta=True, uncertainty='tta' / tta=True alone, U-Net, {sizes['u']}^2",
                 f"{u['tta_u']:.2f} s / {u['tta']:.2f} s", f"{u['u2']:.3f}", "<= 1.05"))
    small, big = sizes["p2"]
    p2 = bench_p2(small, big)
    rows.append(("P2", f"peak RSS {big}^2 / {small}^2 (1x1 model, window 512, overlap 64)",
                 f"{p2['large']['peak_kb'] / 1024:.0f} MB / {p2['small']['peak_kb'] / 1024:.0f} MB"
                 f" (+{p2['growth_mb'][0]:.0f} / +{p2['growth_mb'][1]:.0f} MB during the call;"
                 f" {p2['large']['seconds']:.0f} s / {p2['small']['seconds']:.1f} s)",
                 f"{p2['ratio']:.3f}", "<= 1.25"))
    rows.append(("P2b", f"peak traced (tracemalloc: numpy buffers) {big}^2 / {small}^2",
                 f"{p2['large']['traced_mb']:.0f} MB / {p2['small']['traced_mb']:.0f} MB"
                 f" (area x{(big / small) ** 2:.0f})", f"{p2['traced_ratio']:.3f}", "<= 1.25"))
    narrow, wide, high = sizes["p2c"]
    p2c = bench_p2(narrow, wide, height=high)
    rows.append(("P2c", f"peak traced (numpy buffers) {wide} x {high} / {narrow} x {high} (wide strips)",
                 f"{p2c['large']['traced_mb']:.0f} MB / {p2c['small']['traced_mb']:.0f} MB; peak RSS "
                 f"{p2c['large']['peak_kb'] / 1024:.0f} / {p2c['small']['peak_kb'] / 1024:.0f} MB",
                 f"{p2c['traced_ratio']:.3f}", "<= 1.25"))
    size6 = sizes["p6"]
    for model, name in ((per_pixel_model(), "1x1 conv"), (small_unet(), "U-Net 16f d3")):
        p6 = bench_p6(model, name, size6, repeat=min(2, sizes["repeat"]))
        rows.append(("P6", f"course's tile files + VRT / predict_raster, {name}, {size6}^2",
                     f"{p6['course_s']:.2f} s / {p6['ours_s']:.2f} s "
                     f"(same class {p6['same_pixels']:.4f})", f"{p6['speedup']:.2f}x", ">= 3x"))
    print_ratios([(r[0], r[1], r[3], r[4], r[2]) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
