"""Regenerate the shared test vectors in inst/extdata/testvectors/.

Both suites read them: pytest from the repo, testthat from the installed R package
(system.file), so R CMD check sees them too. Expected values are computed here from
the arrays that were written (or, for real files, with plain rasterio), never from
rsunet's own readers, and stored at full precision.

Each stage may add its own vectors: write a function ``vectors_<stage>(out)`` that
returns a dict of cases, and list it in STAGES; the cases land in ``<stage>.json``.

    python tools/make_test_vectors.py            # all stages
    python tools/make_test_vectors.py io         # one stage
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "inst" / "extdata" / "testvectors"
SHARED = Path(os.environ.get("RSUNET_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _write(path, data, transform, crs, nodata):
    profile = dict(driver="GTiff", count=data.shape[0], height=data.shape[1],
                   width=data.shape[2], dtype=data.dtype.name, transform=transform,
                   crs=crs, nodata=nodata, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _window_case(name, data, nodata, transform, window):
    col, row, w, h = window
    sub = data[:, row:row + h, col:col + w]
    valid = np.ones(sub.shape[1:], bool)
    if nodata is not None:
        is_nd = np.isnan(sub) if np.isnan(nodata) else sub == nodata
        valid = ~np.any(is_nd, axis=0)
    t = transform * Affine.translation(col, row)
    return dict(
        file=name, window=list(window),
        shape=list(sub.shape), dtype=data.dtype.name,
        valid_count=int(valid.sum()),
        band_sums=[float(b[valid].astype(np.float64).sum()) for b in sub],
        first_valid=[float(v) for v in sub[:, valid][:, 0]] if valid.any() else None,
        bounds=[t.c, t.f + t.e * h, t.c + t.a * w, t.f],
    )


def vectors_io(out: Path) -> dict:
    """Small non-square rasters of every dtype rsunet writes, with nodata holes."""
    rng = np.random.default_rng(20261124)
    specs = [
        ("io_uint8_3b.tif", np.uint8, 3, 0, "EPSG:32622", (30.0, 500000.0, 9000000.0)),
        ("io_int16_4b.tif", np.int16, 4, -9999, "EPSG:3857", (4.77, -5000000.0, 2000000.0)),
        ("io_uint16_2b.tif", np.uint16, 2, 65535, "EPSG:2953", (0.5, 2600000.0, 7500000.0)),
        ("io_float32_1b.tif", np.float32, 1, float("nan"), "EPSG:4326", (9e-5, -55.0, -3.0)),
    ]
    cases = []
    for name, dtype, bands, nodata, crs, (res, x0, y0) in specs:
        rows, cols = 37, 53
        info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
        lo, hi = (info.min + 1, info.max - 1) if info else (-1e6, 1e6)
        data = rng.uniform(lo, hi, size=(bands, rows, cols)).astype(dtype)
        if not np.isnan(nodata):  # nodata only where the holes are: one rule for every band
            data[data == nodata] = nodata - 1 if nodata > 0 else nodata + 1
        holes = rng.random((rows, cols)) < 0.1
        data[:, holes] = nodata
        transform = Affine(res, 0, x0, 0, -res, y0)
        _write(out / name, data, transform, crs, nodata)
        for window in [(0, 0, cols, rows), (5, 3, 17, 9), (40, 30, 13, 7)]:
            cases.append(_window_case(name, data, nodata, transform, window))
    real = SHARED / "nrcan" / "sn7_planet_rgba_int16.tif"
    if real.exists():
        with rasterio.open(real) as src:
            # A non-square window touching the right and bottom edges.
            window = (src.width - 45, src.height - 20, 45, 20)
            data = src.read(window=Window(*window))
            c = _window_case("sn7_planet_rgba_int16.tif", data, src.nodata,
                             src.window_transform(Window(*window)), (0, 0, 45, 20))
            c.update(window=list(window), shared="nrcan/sn7_planet_rgba_int16.tif",
                     crs_epsg=src.crs.to_epsg(), full_shape=[src.count, src.height, src.width])
            cases.append(c)
    return {"cases": cases}


def vectors_prediction(out: Path) -> dict:
    """A per-pixel model (a 1x1 convolution + softmax) and a small scene with nodata holes.

    With such a model every window agrees on every pixel, so any windowing, blending or
    test-time augmentation must give what the model gives on the whole array at once;
    the expected values are computed here with numpy from the kernel, not with Keras.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    rng = np.random.default_rng(20260505)
    bands, k, rows, cols = 3, 3, 37, 53
    data = rng.integers(1, 256, size=(bands, rows, cols)).astype(np.uint8)
    holes = rng.random((rows, cols)) < 0.08
    holes[30:, :6] = True  # a block of nodata touching the bottom-left corner
    data[:, holes] = 0
    transform = Affine(30.0, 0, 500000.0, 0, -30.0, 9000000.0)
    _write(out / "prediction_image.tif", data, transform, "EPSG:32622", 0)
    kernel = (rng.normal(size=(bands, k)) * 0.03).astype(np.float32)
    # centred on mid-grey, so every class wins somewhere
    bias = (-128.0 * kernel.sum(axis=0) + rng.normal(size=k) * 0.1).astype(np.float32)
    inp = keras.Input((None, None, bands))
    model = keras.Model(inp, keras.layers.Conv2D(k, 1, activation="softmax")(inp))
    model.set_weights([kernel[None, None], bias])
    model.save(out / "prediction_model.keras")
    logits = np.einsum("bhw,bk->hwk", data.astype(np.float64), kernel.astype(np.float64)) + bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    valid = ~holes
    classes = probs.argmax(-1)
    cases = [
        dict(window=16, overlap=0, blend="centre", tta=False),
        dict(window=16, overlap=5, blend="hann", tta=True),
        dict(window=24, overlap=23, blend="centre", tta=True),
        dict(window=32, overlap=8, blend="average", tta=False),
        dict(window=64, overlap=0, blend="hann", tta=False),  # one padded window
        dict(window=8, overlap=3, blend="average", tta=True),
    ]
    return dict(
        image="prediction_image.tif", model="prediction_model.keras", nodata=0,
        kernel=kernel.astype(float).tolist(), bias=bias.astype(float).tolist(),
        shape=[bands, rows, cols], valid_count=int(valid.sum()),
        class_counts=[int((classes[valid] == c).sum()) for c in range(k)],
        prob_sums=[float(probs[..., c][valid].sum()) for c in range(k)],
        cases=cases,
    )


STAGES = {"io": vectors_io, "prediction": vectors_prediction}


def main(argv):
    OUT.mkdir(parents=True, exist_ok=True)
    for stage in argv or list(STAGES):
        cases = STAGES[stage](OUT)
        (OUT / f"{stage}.json").write_text(json.dumps(cases, indent=1) + "\n")
        print(f"wrote {OUT / (stage + '.json')}")


if __name__ == "__main__":
    main(sys.argv[1:])
