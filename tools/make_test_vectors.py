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


def _gdal_rasterize(image, labels, out, field=None, init=0):
    """The independent reference: ogr2ogr to the image's CRS, then gdal_rasterize."""
    import subprocess
    import tempfile

    with rasterio.open(image) as src:
        crs, b, w, h = src.crs.to_wkt(), src.bounds, src.width, src.height
    with tempfile.TemporaryDirectory() as tmp:
        reprojected = os.path.join(tmp, "labels.gpkg")
        subprocess.run(["ogr2ogr", "-f", "GPKG", "-t_srs", crs, reprojected, str(labels)], check=True)
        burn = ["-a", field] if field else ["-burn", "1"]
        subprocess.run(["gdal_rasterize", "-q", "-init", str(init), "-ot", "Byte", "-te",
                        *map(repr, [b.left, b.bottom, b.right, b.top]), "-ts", str(w), str(h),
                        "-co", "COMPRESS=DEFLATE", *burn, reprojected, str(out)], check=True)
    with rasterio.open(out) as src:
        return src.read(1)


def _counts(a):
    values, counts = np.unique(a, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def vectors_samples(out: Path) -> dict:
    """Masks from polygons and label rasters, the expected ones made by GDAL or numpy.

    A tiny synthetic scene ships with the package (labels in EPSG:4326, image in UTM,
    one polygon half outside, one wholly outside, overlapping polygons, string classes);
    the real cases name files in ../shared/data and store GDAL's class counts.
    """
    import geopandas as gpd
    from shapely.geometry import box

    rng = np.random.default_rng(20260301)
    t = Affine(30.0, 0, 619395.0, 0, -30.0, -410205.0)
    data = rng.integers(0, 256, size=(3, 41, 57)).astype(np.uint8)
    _write(out / "samples_image.tif", data, t, "EPSG:32622", None)
    polys = gpd.GeoDataFrame(
        {"cls": ["forest", "water", "forest", "water"]},
        geometry=[box(619395 + 100, -410205 - 800, 619395 + 700, -410205 - 300),
                  box(619395 + 500, -410205 - 1000, 619395 + 1300, -410205 - 600),  # overlaps the first
                  box(619395 + 1500, -410205 - 1100, 619395 + 2500, -410205 - 900),  # half outside
                  box(619395 + 9000, -410205 - 300, 619395 + 9500, -410205 - 100)],  # outside
        crs="EPSG:32622").to_crs("EPSG:4326")
    labels = out / "samples_labels.geojson"
    if labels.exists():
        labels.unlink()
    polys.to_file(labels, driver="GeoJSON")
    # GDAL burns the field's numbers: give it the ids rsunet assigns names (sorted: forest 1, water 2)
    numbered = polys.assign(cid=polys["cls"].map({"forest": 1, "water": 2}))
    tmp_labels = out / "_samples_numbered.geojson"
    numbered.to_file(tmp_labels, driver="GeoJSON")
    expected = _gdal_rasterize(out / "samples_image.tif", tmp_labels, out / "samples_expected.tif",
                               field="cid", init=255)
    tmp_labels.unlink()
    cases = [dict(name="synthetic", image="samples_image.tif", labels="samples_labels.geojson",
                  field="cls", unlabelled="ignore", expected="samples_expected.tif",
                  classes_table={"0": "background", "1": "forest", "2": "water"},
                  counts=_counts(expected))]
    real = [
        ("sn7", "nrcan/sn7_planet_rgba_int16.tif", "nrcan/sn7_buildings_epsg4326.geojson", None, "background", None),
        ("nb", "nrcan/nb_23322E759967N_1of2_rgb.tif", "nrcan/nb_BakerLake_2017_landcover.gpkg",
         "Quatreclasses", "background", None),
        ("lsat", "rstoolbox/lsat.tif", "rstoolbox/trainingPolygons_lsat.gpkg", "class_id", "ignore", "class"),
    ]
    import tempfile

    for name, image, vec, field, unlabelled, name_field in real:
        if not (SHARED / image).exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            ref = _gdal_rasterize(SHARED / image, SHARED / vec, Path(tmp) / "ref.tif", field=field,
                                  init=0 if unlabelled == "background" else 255)
        cases.append(dict(name=name, shared_image=image, shared_labels=vec, field=field,
                          unlabelled=unlabelled, name_field=name_field, counts=_counts(ref)))
    amazon = SHARED / "amazon" / "train"
    for stem in ["Amazon_122.tiff_33", "Amazon_954.tiff_36"]:
        if (amazon / "masks" / f"{stem}.png").exists():
            with rasterio.open(amazon / "masks" / f"{stem}.png") as src:
                raw = src.read(1)
            mapped = np.where(raw == 1, 1, np.where(raw == 2, 0, 255))
            cases.append(dict(name=stem, shared_image=f"amazon/train/images/{stem}.tiff",
                              shared_labels=f"amazon/train/masks/{stem}.png",
                              classes={"1": "forest", "2": "background"}, unlabelled="background",
                              counts=_counts(mapped)))
    return {"cases": cases}


def vectors_patches(out: Path) -> dict:
    """A non-square int16 scene with nodata holes and its mask; expected windows by numpy.

    For each case the generator lists, with plain slicing of the arrays written here,
    the windows a patch set must hold and the class pixel counts over them; and the
    scene's 2 and 98 % band percentiles over its valid pixels (numpy's linear rule).
    """
    rng = np.random.default_rng(20260302)
    rows, cols, nodata = 150, 100, -9999
    # a gradient plus a little noise: distinct values in every band, yet it compresses to KBs
    ramp = np.arange(rows)[:, None] * 7 - np.arange(cols)[None, :] * 3
    data = (ramp[None] + np.arange(4)[:, None, None] * 1000
            + rng.integers(0, 4, size=(4, rows, cols))).astype(np.int16)
    data[:, 120:, :40] = nodata  # a nodata corner: patches there are mostly invalid
    data[:, 10, 10] = nodata
    mask = rng.choice([0, 1, 2, 255], size=(rows, cols), p=[0.6, 0.25, 0.05, 0.1]).astype(np.uint8)
    mask[:64, 64:] = 0  # a block with background only
    t = Affine(4.77, 0, -13543538.5, 0, -4.77, 4577435.7)
    with rasterio.open(out / "patches_image.tif", "w", driver="GTiff", count=4, height=rows,
                       width=cols, dtype="int16", transform=t, crs="EPSG:3857", nodata=nodata,
                       compress="deflate", predictor=2) as dst:
        dst.write(data)
    with rasterio.open(out / "patches_mask.tif", "w", driver="GTiff", count=1, height=rows,
                       width=cols, dtype="uint8", transform=t, crs="EPSG:3857", nodata=255,
                       compress="deflate") as dst:
        dst.write(mask[np.newaxis])
        dst.update_tags(RSUNET_CLASSES='{"0": "background", "1": "forest", "2": "water"}',
                        RSUNET_IGNORE="255")

    def starts(length, size, stride, edge):
        if edge == "pad" or length < size:
            return list(range(0, max(length - size, 0) + stride, stride)) if length > size else [0]
        s = list(range(0, length - size + 1, stride))
        if edge == "shift" and s[-1] + size < length:
            s.append(length - size)
        return s

    cases = []
    specs = [dict(size=64, stride=64, edge="shift", keep="all", min_valid=0.5, min_labelled=0.0),
             dict(size=32, stride=24, edge="pad", keep="all", min_valid=0.0, min_labelled=0.0),
             dict(size=64, stride=32, edge="drop", keep="positive", min_valid=0.5, min_labelled=0.0),
             dict(size=32, stride=32, edge="shift", keep=["water"], min_valid=0.5, min_labelled=0.85)]
    for spec in specs:
        size, stride, edge = spec["size"], spec["stride"], spec["edge"]
        rs, cs = starts(rows, size, stride, edge), starts(cols, size, stride, edge)
        pad = size * 2
        big = np.full((4, rows + pad, cols + pad), nodata, np.int16)
        big[:, :rows, :cols] = data
        m = np.full((rows + pad, cols + pad), 255, np.uint8)
        m[:rows, :cols] = mask
        kept, totals = [], np.zeros(3, np.int64)
        for r in rs:
            for c in cs:
                img = big[:, r:r + size, c:c + size]
                valid = (img != nodata).all(axis=0)
                lab = np.where(valid, m[r:r + size, c:c + size], 255)
                n = np.array([(lab == k).sum() for k in range(3)])
                if valid.mean() < spec["min_valid"] or (lab != 255).mean() < spec["min_labelled"]:
                    continue
                if spec["keep"] == "positive" and n[1:].sum() == 0:
                    continue
                if spec["keep"] == ["water"] and n[2] == 0:
                    continue
                kept.append([c, r])
                totals += n
        cases.append(dict(spec, offsets=kept, n_patches=len(kept),
                          class_totals={str(k): int(v) for k, v in enumerate(totals)}))
    valid = (data != nodata).all(axis=0)
    percentiles = np.percentile(data[:, valid].astype(np.float64), [2, 98], axis=1).T
    return dict(image="patches_image.tif", mask="patches_mask.tif", nodata=nodata,
                shape=[4, rows, cols], transform=list(t)[:6], cases=cases,
                percentiles=percentiles.tolist(),
                # another sensor, haze or light on a 3-band scene: a model trained with
                # normalize="scene" must map the rescaled scene as it maps the original
                scene_rescale=dict(gain=[1.7, 0.8, 2.5], offset=[12.5, -3.0, 40.0]))


def vectors_bridge(out: Path) -> dict:
    """Files rsunet writes and R reads (rpy2 bridge, tests/test_r.py and test-r.R).

    Rasters of every dtype rsunet writes, written with rsunet.io.write_raster (the writer
    under test: R must read what it writes), polygons written with geopandas, and .rds
    files saved from Python through the bridge (R reads them with readRDS). Expected
    values come from the arrays and geometries made here.
    """
    import geopandas as gpd
    import shapely

    from rsunet.io import write_raster

    rng = np.random.default_rng(7)
    holes = [(0, 0), (2, 3), (4, 6), (3, 1)]  # (row, col): nodata in every band
    specs = [("uint8", 255, "EPSG:32622", (30.0, 500010.0, 9000020.0)),
             ("int16", -9999, "EPSG:3857", (4.77, -5000000.0, 2000000.0)),
             ("uint16", 0, "EPSG:2953", (0.5, 2600000.0, 7500000.0)),
             ("float32", float("nan"), "EPSG:4326", (9e-5, -55.0, -3.0))]
    rasters = []
    for dtype, nodata, crs, (res, x0, y0) in specs:
        bands, rows, cols = 3, 5, 7
        if dtype == "float32":
            data = rng.normal(0, 1000, (bands, rows, cols)).astype(np.float32)
        else:
            info = np.iinfo(dtype)
            data = rng.integers(info.min, info.max, (bands, rows, cols), endpoint=True).astype(dtype)
            data[data == nodata] = nodata + 1 if nodata < info.max else nodata - 1
            extremes = [v for v in (info.min, info.max) if v != nodata]
            data[0, 1, 1:1 + len(extremes)] = extremes  # the type's limits, as valid values
        valid = np.ones((rows, cols), bool)
        for r_, c_ in holes:
            valid[r_, c_] = False
            data[:, r_, c_] = nodata
        name = f"bridge_{dtype}.tif"
        t = Affine(res, 0, x0, 0, -res, y0)
        (out / name).unlink(missing_ok=True)
        write_raster(out / name, data, t, crs, nodata=nodata)
        values = [[None if not valid.flat[i] else float(b.flat[i]) for i in range(rows * cols)]
                  for b in data]
        rasters.append(dict(
            file=name, dtype=dtype, nodata=None if np.isnan(nodata) else nodata,
            nodata_is_nan=bool(np.isnan(nodata)), epsg=int(crs.split(":")[1]),
            shape=[bands, rows, cols], transform=list(t)[:6],
            extent=[t.c, t.c + res * cols, t.f - res * rows, t.f],  # xmin, xmax, ymin, ymax
            valid_count=int(valid.sum()),
            band_sums=[float(b[valid].astype(np.float64).sum()) for b in data],
            values_row_major=values))
    polygons = gpd.GeoDataFrame(
        {"class": ["forest", "water", None, "cleared"], "class_id": [1, 4, 3, 2],
         "area": [0.1, 2.5, float("nan"), 1 / 3], "checked": [True, False, True, True]},
        # all MultiPolygons: a GeoPackage layer has one type (GDAL would promote Polygons)
        geometry=[shapely.MultiPolygon([shapely.Polygon([
                      (500000.25, 9000000.5), (500100.125, 9000000.5),
                      (500100.125, 8999900.75), (500000.25, 9000000.5)])]),
                  shapely.MultiPolygon([shapely.Polygon(
                      [(500010, 8999990), (500090, 8999990), (500090, 8999910), (500010, 8999910)],
                      [[(500030, 8999970), (500050, 8999970), (500050, 8999950)]])]),
                  shapely.MultiPolygon([shapely.box(500200, 8999800, 500210, 8999810),
                                        shapely.box(500300.1, 8999700.2, 500300.7, 8999700.9)]),
                  shapely.MultiPolygon([shapely.Polygon([
                      (500001 / 3, 9000000 - 2 / 3), (500100, 9000000), (500100, 8999999)])])],
        crs="EPSG:32622")
    (out / "bridge_polygons.gpkg").unlink(missing_ok=True)
    # GeoPackage 1.2: older GDALs (Debian 12's 3.6, which R's sf uses) warn on 1.4
    polygons.to_file(out / "bridge_polygons.gpkg", layer="polygons", driver="GPKG",
                     VERSION="1.2")
    rds = {}
    try:
        from rsunet import io, r
    except ImportError:  # pragma: no cover
        r = None
    if r is not None:
        uint8 = io.read_raster(out / "bridge_uint8.tif")
        table = pd_table()
        for name, obj in [("bridge_raster.rds", uint8), ("bridge_polygons.rds", polygons),
                          ("bridge_table.rds", table)]:
            r.save_rds(obj, out / name, overwrite=True)
        rds = {"raster": "bridge_raster.rds", "raster_source": "bridge_uint8.tif",
               "polygons": "bridge_polygons.rds", "table": "bridge_table.rds",
               "table_columns": {c: [None if v is None or v != v else v for v in table[c].tolist()]
                                 for c in table.columns}}
    return dict(rasters=rasters, polygons=dict(
        file="bridge_polygons.gpkg", layer="polygons", epsg=32622,
        wkt=[shapely.to_wkt(g, rounding_precision=-1) for g in polygons.geometry],
        wkb_hex=[shapely.to_wkb(g, hex=True) for g in polygons.geometry],
        attributes={c: [None if v is None or v != v else v for v in polygons[c].tolist()]
                    for c in ["class", "class_id", "area", "checked"]}), rds=rds)


def pd_table():
    """The small table the bridge vectors save as .rds: one column per kind R knows."""
    import pandas as pd

    return pd.DataFrame({"patch_id": ["a1", "b2", "c3"], "n": np.array([3, 0, 70000], np.int32),
                         "share": [0.25, float("nan"), 1 / 7], "kept": [True, False, True],
                         "split": pd.Categorical(["train", "test", "train"],
                                                 categories=["train", "validation", "test"])})


def vectors_assessment(out: Path) -> dict:
    """A hand-checkable worked example, a 4-class map pair, and a map of known objects.

    Every expected value here comes from the formulas written out by hand (Cohen 1960;
    Pontius & Millones 2011) on small integer counts, or from numpy slicing, never from
    rsunet.assessment.
    """
    import json as _json
    from fractions import Fraction as F

    t = Affine(2.0, 0, 500000.0, 0, -2.0, 7000000.0)
    tags = {"RSUNET_CLASSES": _json.dumps({"0": "forest", "1": "water", "2": "urban"})}

    # 1. worked example: rows reference, columns predicted, n = 100
    cm = [[35, 5, 0],
          [10, 15, 5],
          [5, 0, 25]]
    ref_px, pred_px = [], []
    for i, row in enumerate(cm):
        for j, c in enumerate(row):
            ref_px += [i] * c
            pred_px += [j] * c
    # 10 more pixels that are unknown (255) in one map or the other: never counted
    ref_px += [255, 255, 255, 255, 255, 0, 1, 2, 1, 255]
    pred_px += [0, 1, 2, 255, 2, 255, 255, 255, 255, 255]
    order = np.random.default_rng(7).permutation(len(ref_px))
    ref = np.array(ref_px, np.uint8)[order].reshape(10, 11)
    pred = np.array(pred_px, np.uint8)[order].reshape(10, 11)
    for name, a in (("assessment_worked_ref.tif", ref), ("assessment_worked_pred.tif", pred)):
        _write(out / name, a[None], t, "EPSG:32622", 255)
        with rasterio.open(out / name, "r+") as dst:
            dst.update_tags(**tags)
    n = F(100)
    p = [[F(c) / n for c in row] for row in cm]
    rows = [sum(r) for r in p]                      # p_g+ (reference)
    cols = [sum(p[i][j] for i in range(3)) for j in range(3)]   # p_+g (predicted)
    diag = [p[g][g] for g in range(3)]
    oa = sum(diag)                                   # 3/4
    pe = sum(rows[g] * cols[g] for g in range(3))   # 0.4*0.5 + 0.3*0.2 + 0.3*0.3 = 0.35
    kappa = (oa - pe) / (1 - pe)                     # 0.4 / 0.65 = 8/13
    quantity = sum(abs(rows[g] - cols[g]) for g in range(3)) / 2          # 1/10
    allocation = sum(2 * min(rows[g] - diag[g], cols[g] - diag[g]) for g in range(3)) / 2  # 3/20
    assert quantity + allocation == 1 - oa
    worked = dict(
        reference="assessment_worked_ref.tif", prediction="assessment_worked_pred.tif",
        classes=["forest", "water", "urban"], confusion=cm, n=100,
        overall_accuracy=float(oa), kappa=float(kappa), quantity_disagreement=float(quantity),
        allocation_disagreement=float(allocation),
        precision=[float(diag[g] / cols[g]) for g in range(3)],
        recall=[float(diag[g] / rows[g]) for g in range(3)],
        f1=[float(2 * diag[g] / (rows[g] + cols[g])) for g in range(3)],
        iou=[float(diag[g] / (rows[g] + cols[g] - diag[g])) for g in range(3)],
    )

    # 2. a 4-class map pair (60 x 80), 255 holes in both; expected counts by numpy,
    #    and the counts inside two pixel-aligned boxes by slicing
    rng = np.random.default_rng(20261124)
    truth = np.repeat(np.repeat(rng.integers(0, 4, size=(6, 8)), 10, axis=0), 10, axis=1).astype(np.uint8)
    guess = truth.copy()
    noise = rng.random(truth.shape) < 0.2
    guess[noise] = rng.integers(0, 4, size=int(noise.sum()))
    truth[rng.random(truth.shape) < 0.03] = 255
    guess[rng.random(truth.shape) < 0.03] = 255
    _write(out / "assessment_multi_ref.tif", truth[None], t, "EPSG:32622", 255)
    _write(out / "assessment_multi_pred.tif", guess[None], t, "EPSG:32622", 255)

    def counts_of(r, g):
        ok = (r != 255) & (g != 255)
        m = np.zeros((4, 4), np.int64)
        np.add.at(m, (r[ok].astype(int), g[ok].astype(int)), 1)
        return m.tolist()

    boxes_px = [(5, 7, 20, 13), (50, 30, 24, 25)]   # col_off, row_off, width, height
    inside = np.zeros(truth.shape, bool)
    boxes = []
    for c, r, w, h in boxes_px:
        inside[r:r + h, c:c + w] = True
        left, top = t * (c, r)
        right, bottom = t * (c + w, r + h)
        boxes.append(dict(left=left, bottom=bottom, right=right, top=top))
    multi = dict(reference="assessment_multi_ref.tif", prediction="assessment_multi_pred.tif",
                 confusion=counts_of(truth, guess), boxes=boxes,
                 confusion_in_boxes=counts_of(np.where(inside, truth, 255), guess))

    # 3. objects of class 1 on a 20 x 30 map, 2 m pixels (4 m2), drawn by hand
    obj = np.zeros((20, 30), np.uint8)
    obj[1:4, 1:4] = 1           # A: 3x3 square, 9 px
    obj[6:11, 2] = 1            # B: an L, 5 + 3 = 8 px
    obj[10, 3:6] = 1
    obj[2, 10] = 1              # C and D touch only at a corner: 1 object with 8-, 2 with 4-connectivity
    obj[3, 11] = 1
    obj[15, 20] = 1             # E: a single pixel
    obj[5:9, 15:25] = 1         # F: 4 x 10 = 40 px, with a 2 x 2 hole of class 2
    obj[6:8, 18:20] = 2
    obj[0:20, 28:30] = 255      # unknown strip: not valid area
    obj[18, 0:5] = 1            # G: 5 px on the bottom row
    _write(out / "assessment_objects.tif", obj[None], t, "EPSG:32622", 255)
    valid_px = 20 * 30 - 40
    objects = dict(
        map="assessment_objects.tif", pixel_area_m2=4.0, valid_area_ha=valid_px * 4.0 / 1e4,
        cases=[
            dict(cls=1, connectivity=8, min_pixels=1, pixels=sorted([9, 8, 2, 1, 36, 5])),
            dict(cls=1, connectivity=4, min_pixels=1, pixels=sorted([9, 8, 1, 1, 1, 36, 5])),
            dict(cls=1, connectivity=4, min_pixels=2, pixels=sorted([9, 8, 36, 5])),
            dict(cls=2, connectivity=8, min_pixels=1, pixels=[4]),
        ],
        # the 3x3 square's centroid, in map coordinates: pixel centre (row 2, col 2)
        square_centroid=list(t * (2.5, 2.5)),
    )
    return {"worked": worked, "multi": multi, "objects": objects}


def vectors_augmentation(out: Path) -> dict:
    """Geometric cases whose result numpy gives exactly (flips, quarter turns), and the
    fill share of a 45-degree rotation from geometry: a square and its 45-degree turn
    overlap on 2(sqrt 2 - 1) of the area, so 3 - 2 sqrt 2 of the output is fill."""
    rng = np.random.default_rng(20260506)
    image = rng.integers(0, 200, size=(3, 6, 6)).astype(np.uint8)
    mask = rng.integers(0, 3, size=(6, 6)).astype(np.uint8)
    off = dict(p_rotation=0, p_hflip=0, p_vflip=0, p_zoom=0, p_brightness=0, p_saturation=0)
    cases = [
        dict(name="hflip", settings=dict(off, p_hflip=1), image=image[:, :, ::-1], mask=mask[:, ::-1]),
        dict(name="vflip", settings=dict(off, p_vflip=1), image=image[:, ::-1], mask=mask[::-1]),
        dict(name="rot90", settings=dict(off, p_rotation=1, rotation=[90, 90]),
             image=np.rot90(image, 1, axes=(1, 2)), mask=np.rot90(mask, 1)),
        dict(name="rot180", settings=dict(off, p_rotation=1, rotation=[180, 180]),
             image=np.rot90(image, 2, axes=(1, 2)), mask=np.rot90(mask, 2)),
        # rotation first, then the flip
        dict(name="rot270_hflip", settings=dict(off, p_rotation=1, rotation=[270, 270], p_hflip=1),
             image=np.rot90(image, 3, axes=(1, 2))[:, :, ::-1], mask=np.rot90(mask, 3)[:, ::-1]),
    ]
    for c in cases:
        c["image"] = c["image"].astype(int).tolist()
        c["mask"] = c["mask"].astype(int).tolist()
    return dict(image=image.astype(int).tolist(), mask=mask.astype(int).tolist(), cases=cases,
                fill_45=dict(size=128, settings=dict(off, p_rotation=1, rotation=[45, 45]),
                             fraction=3 - 2 * np.sqrt(2), tolerance=0.005))


def vectors_model(out: Path) -> dict:
    """Losses and metrics on a tiny batch, by hand with numpy; pixels with 255 left out."""
    y = np.array([[0, 1, 1, 255], [1, 0, 255, 0]], np.uint8)
    p = np.array([[0.2, 0.9, 0.4, 0.7], [0.6, 0.3, 0.1, 0.8]])
    keep = y != 255
    t, q = y[keep].astype(float), p[keep]
    bce = float(np.mean(-(t * np.log(q) + (1 - t) * np.log(1 - q))))
    probs = np.stack([1 - q, q], 1)
    onehot = np.stack([1 - t, t], 1)
    dice = float(1 - np.mean((2 * (onehot * probs).sum(0) + 1) / ((onehot + probs).sum(0) + 1)))
    w = np.array([1.0, 3.0])
    wce = float(np.mean(-(onehot * np.log(probs) * w).sum(1)))
    pt = (onehot * probs).sum(1)
    focal = float(np.mean(-(1 - pt) ** 2 * np.log(pt)))
    pred = (q > 0.5).astype(int)
    cm = np.zeros((2, 2))
    for a, b in zip(t.astype(int), pred):
        cm[a, b] += 1
    tp = np.diag(cm)
    f1 = 2 * tp / (cm.sum(0) + cm.sum(1))
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    return dict(y_true=y.tolist(), y_pred=p.tolist(), class_weights=w.tolist(),
                bce_dice=bce + dice, dice=dice, weighted_ce=wce, focal=focal,
                accuracy=float(tp.sum() / cm.sum()), f1=float(f1.mean()), iou=float(iou.mean()))


def vectors_workflow(out: Path) -> dict:
    """A tiny configuration of the whole workflow on the bundled chips (both suites run it)."""
    return {"tiny_config": {
        "seed": 1,
        "scenes": {"example": True},
        "make_mask": {"classes": {"1": "forest", "2": "background"}},
        "make_patches": {"size": 128, "stride": 128},
        "split_patches": {"fractions": [0.75, 0.25], "block": 2},
        "unet": {"depth": 2, "filters": 4, "batch_norm": False},
        "train_unet": {"epochs": 1, "batch_size": 8, "progress": False},
        "train_baseline": {"n_per_class": 300, "n_trees": 5},
        "predict_raster": {"window": 256, "overlap": 32, "uncertainty": "margin", "progress": False},
        "assess_map": {},
        "cross_validate": {"folds": 2, "models": ["random_forest"]},
        "compare_maps": {"block": 64, "n_boot": 200},
    }}


def vectors_validation(out: Path) -> dict:
    """Cross-validation of four bundled chips with tiny models (both suites run it)."""
    config = vectors_workflow(out)["tiny_config"]
    # the steps a fold runs, as they were when these cases were made: the workflow's
    # later additions (U-Net vs Random Forest, uncertainty maps) are no part of a fold
    config = {k: v for k, v in config.items()
              if k not in ("scenes", "cross_validate", "compare_maps")}
    config["predict_raster"] = {k: v for k, v in config["predict_raster"].items()
                                if k != "uncertainty"}
    tiny = {"depth": 3, "filters": 8, "epochs": 4, "batch_size": 8, "learning_rate": 0.01, "seed": 0}
    return {"chips": ["Amazon_1110_25", "Amazon_122_33", "Amazon_1377_12", "Amazon_170_38"],
            "folds": 2, "block": 2, "config": config,
            # a window of a real chip that is forest only (its mask is 1 throughout)
            "single_cover": {"chip": "Amazon_390.tiff_12", "window": [0, 0, 256, 256],
                             "class": 1, "min_fraction": 0.95, "n_images": 3, "train": tiny},
            # the same U-Net scaled per scene, all bands together: that forest window, and
            # a whole chip that is pasture only (970; non-forest is class 0), each stay one
            # class (with normalize = "scene" the window reads 2 % forest, the chip 23 %)
            "single_cover_joint": {"n_images": 3, "train": dict(tiny, normalize="scene_joint"),
                                   "scenes": [
                                       {"chip": "Amazon_390.tiff_12", "window": [0, 0, 256, 256],
                                        "class": 1, "min_fraction": 0.95},
                                       {"chip": "Amazon_970.tiff_1", "window": [0, 0, 512, 512],
                                        "class": 0, "min_fraction": 0.85}]}}


def vectors_precision(out: Path) -> dict:
    """A small U-Net trained on three bundled chips, to map the three bundled test chips
    in float32 and in bfloat16: the labels must stay 99.9 % identical (issue 13)."""
    import tempfile

    from rsunet.example import example_data
    from rsunet.patches import make_patches, split_patches
    from rsunet.samples import make_mask
    import keras

    from rsunet.training import load_model, save_model, train_unet

    data = example_data()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = data["train"]["images"][:3]
        masks = [make_mask(i, m, tmp / f"{i.stem}.tif", classes={1: "forest", 2: "background"})["path"]
                 for i, m in zip(images, data["train"]["masks"])]
        make_patches(images, masks, tmp / "patches", size=64, stride=64, progress=False)
        split_patches(tmp / "patches", fractions=(0.8, 0.2), method="random", seed=0)
        train_unet(tmp / "patches", tmp / "unet.keras", depth=3, filters=8, epochs=8,
                   batch_size=8, learning_rate=0.01, seed=0, progress=False)
        trained = load_model(tmp / "unet.keras")
        net = keras.models.clone_model(trained.keras_model)  # uncompiled: no optimizer state
        net.set_weights(trained.keras_model.get_weights())
        save_model(net, out / "precision_unet.keras", trained.meta, overwrite=True)
    chips = [f"test/images/{p.name}" for p in data["test"]["images"]]
    return {"bfloat16": {"model": "precision_unet.keras", "chips": chips, "window": 256,
                         "overlap": 32, "min_agreement": 0.999}}


def vectors_estimation(out: Path) -> dict:
    """Stratified estimation and map comparison (issue 18).

    1. The worked example of Olofsson et al. (2014, section 5) at 1/100 of its pixel
       count with 100x the pixel area (300 m pixels, 9 ha), so every published figure
       is reproduced: the published values as printed (/work/shared/notes/accuracy.md),
       and the eqs. of the paper written out here on the published table.
    2. A map with unknown pixels and a rare class for stratified sampling.
    3. Two maps whose thinned sample (every 4th pixel) is McNemar's table 88/10/2/0.
    4. A small map in EPSG:4326 whose class areas come from an equal-area projection.
    """
    import geopandas as gpd
    from shapely.geometry import box

    t = Affine(300.0, 0, 500000.0, 0, -300.0, 7000000.0)
    names = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
    tags = {"RSUNET_CLASSES": json.dumps({str(i): n for i, n in enumerate(names)})}
    # published sample counts, rows map class (stratum), columns reference class
    table = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
    mapped = np.array([200000, 150000, 3200000, 6450000]) // 100
    rng = np.random.default_rng(2014)
    cls = rng.permutation(np.repeat(np.arange(4), mapped)).astype(np.uint8).reshape(250, 400)
    _write(out / "estimation_olofsson_map.tif", cls[None], t, "EPSG:32622", 255)
    with rasterio.open(out / "estimation_olofsson_map.tif", "r+") as dst:
        dst.update_tags(**tags)
    xs, ys, ref, mapc = [], [], [], []
    for i in range(4):
        rr, cc = np.nonzero(cls == i)
        pick = rng.choice(rr.size, table[i].sum(), replace=False)
        xs += list(t.c + (cc[pick] + 0.5) * t.a)
        ys += list(t.f + (rr[pick] + 0.5) * t.e)
        ref += [j for j in range(4) for _ in range(table[i, j])]
        mapc += [i] * table[i].sum()
    pts = gpd.GeoDataFrame({"map_class": mapc, "reference": ref,
                            "reference_name": [names[j] for j in ref]},
                           geometry=gpd.points_from_xy(xs, ys), crs="EPSG:32622")
    (out / "estimation_olofsson_points.gpkg").unlink(missing_ok=True)
    pts.to_file(out / "estimation_olofsson_points.gpkg", driver="GPKG", VERSION="1.2")
    # the paper's equations, term by term (i: map class, j: reference class)
    N = mapped.astype(float) * 100            # pixels of the published map
    A = N.sum() * 0.09                        # ha
    Wt = N / N.sum()
    ni = table.sum(axis=1).astype(float)
    P = Wt[:, None] * table / ni[:, None]     # eq. 4
    U = np.diag(table) / ni                   # eq. 2
    PA = np.diag(P) / P.sum(axis=0)           # eq. 3
    v_u = U * (1 - U) / (ni - 1)              # eq. 6
    v_o = np.sum(Wt ** 2 * U * (1 - U) / (ni - 1))      # eq. 5
    Nj = np.array([sum(N[i] / ni[i] * table[i, j] for i in range(4)) for j in range(4)])
    v_p = [(N[j] ** 2 * (1 - PA[j]) ** 2 * U[j] * (1 - U[j]) / (ni[j] - 1)
            + PA[j] ** 2 * sum(N[i] ** 2 * table[i, j] / ni[i] * (1 - table[i, j] / ni[i]) / (ni[i] - 1)
                               for i in range(4) if i != j)) / Nj[j] ** 2 for j in range(4)]  # eq. 7
    s_p = [np.sqrt(sum((Wt[i] * P[i, k] - P[i, k] ** 2) / (ni[i] - 1) for i in range(4)))
           for k in range(4)]                 # eq. 10
    olofsson = dict(
        map="estimation_olofsson_map.tif", points="estimation_olofsson_points.gpkg",
        classes=names, field="reference", table_map_rows=table.tolist(), mapped_pixels=mapped.tolist(),
        pixel_ha=9.0, total_ha=float(A),
        published=dict(area_ha=[21158, 11686, 285770, 581386], area_ci_ha=[6158, 3756, 15510, 16282],
                       users_accuracy=[0.88, 0.73, 0.93, 0.96], users_ci=[0.07, 0.10, 0.04, 0.02],
                       producers_accuracy=[0.75, 0.85, 0.93, 0.96], overall_accuracy=0.95,
                       overall_accuracy_ci=0.02),
        equations=dict(error_matrix=P.T.tolist(), users_accuracy=U.tolist(), users_se=np.sqrt(v_u).tolist(),
                       producers_accuracy=PA.tolist(), producers_se=np.sqrt(v_p).tolist(),
                       overall_accuracy=float(np.trace(P)), overall_accuracy_se=float(np.sqrt(v_o)),
                       area_ha=(P.sum(axis=0) * A).tolist(), area_se_ha=(np.array(s_p) * A).tolist()))

    # 2. strata with unknown pixels (255) and a rare class of 10 pixels
    st = np.repeat(np.repeat(rng.integers(0, 3, size=(6, 9)), 10, axis=0), 10, axis=1).astype(np.uint8)
    st[rng.random(st.shape) < 0.05] = 255
    st[:, 0] = 255
    free = np.flatnonzero(st.ravel() != 255)
    st.ravel()[rng.choice(free, 10, replace=False)] = 3
    t2 = Affine(10.0, 0, 600000.0, 0, -10.0, 8000000.0)
    _write(out / "estimation_strata.tif", st[None], t2, "EPSG:32633", 255)
    pixels = [int((st == c).sum()) for c in range(4)]
    strata = dict(map="estimation_strata.tif", pixels=pixels,
                  proportional=dict(n=200, counts=_largest_remainder_counts(pixels, 200)),
                  equal=dict(n=40, counts=[10, 10, 10, 10]),
                  given=dict(allocation={"0": 5, "2": 7, "3": 10}, counts=[5, 0, 7, 10]))

    # 3. McNemar: on the thinned grid (rows and columns 2, 6, ..., 38) 88 pixels both
    #    maps right, 10 only a right, 2 only b right; noise elsewhere
    truth = rng.integers(0, 3, size=(40, 40)).astype(np.uint8)
    a, b = truth.copy(), truth.copy()
    off = ~np.isin(np.arange(40), np.arange(2, 40, 4))
    elsewhere = off[:, None] | off[None, :]
    a[elsewhere & (rng.random(a.shape) < 0.1)] = 0
    b[elsewhere & (rng.random(b.shape) < 0.3)] = 1
    grid = [(r, c) for r in range(2, 40, 4) for c in range(2, 40, 4)]
    for k, (r, c) in enumerate(grid[:12]):
        wrong = (truth[r, c] + 1) % 3
        if k < 10:
            b[r, c] = wrong   # only a right
        else:
            a[r, c] = wrong   # only b right
    t3 = Affine(5.0, 0, 300000.0, 0, -5.0, 9000000.0)
    for name, arr in (("estimation_pair_ref.tif", truth), ("estimation_pair_a.tif", a),
                      ("estimation_pair_b.tif", b)):
        _write(out / name, arr[None], t3, "EPSG:32722", 255)
    mcnemar = dict(reference="estimation_pair_ref.tif", a="estimation_pair_a.tif",
                   b="estimation_pair_b.tif", thin=4, both_right=88, a_only=10, b_only=2,
                   both_wrong=0, statistic=49 / 12, p_value=158 / 4096,
                   overall_accuracy_a=float((a == truth).mean()),
                   overall_accuracy_b=float((b == truth).mean()))

    # 4. geographic CRS: 0.01 degree pixels near 60 S; areas by an equal-area projection
    geo = np.array([[0, 0, 1, 1, 2], [0, 1, 1, 2, 2], [255, 1, 2, 2, 2], [0, 0, 0, 1, 255]], np.uint8)
    t4 = Affine(0.01, 0, -60.0, 0, -0.01, -59.5)
    _write(out / "estimation_geographic.tif", geo[None], t4, "EPSG:4326", 255)
    cells = [(int(geo[r, c]), box(*(t4 * (c, r + 1)), *(t4 * (c + 1, r))))
             for r in range(geo.shape[0]) for c in range(geo.shape[1]) if geo[r, c] != 255]
    g = gpd.GeoDataFrame({"cls": [k for k, _ in cells]}, geometry=[b_ for _, b_ in cells],
                         crs="EPSG:4326").to_crs("EPSG:6933")  # WGS 84 / NSIDC EASE-Grid 2.0 (equal area)
    geographic = dict(map="estimation_geographic.tif",
                      area_ha=[float(g.area[g.cls == k].sum() / 1e4) for k in range(3)])
    return {"olofsson": olofsson, "strata": strata, "mcnemar": mcnemar, "geographic": geographic}


def _largest_remainder_counts(pixels, n) -> list:
    quota = [p * n / sum(pixels) for p in pixels]
    counts = [int(q) for q in quota]
    for k in sorted(range(len(quota)), key=lambda k: counts[k] - quota[k])[: n - sum(counts)]:
        counts[k] += 1
    return counts


def vectors_labelling(out: Path) -> dict:
    """A float32 uncertainty map (smooth bumps, NaN holes, a nodata band of -1) for
    suggest_labels; its most uncertain valid pixel found by numpy."""
    rng = np.random.default_rng(18)
    rows, cols = np.mgrid[0:60, 0:80]
    u = np.zeros((60, 80))
    for r, c in rng.uniform([0, 0], [60, 80], size=(6, 2)):
        u += np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / 60.0)
    u = (u / u.max() * 0.9 + rng.uniform(0, 0.05, u.shape)).astype(np.float32)
    u[rng.random(u.shape) < 0.02] = np.nan
    u[:, 75:] = -1.0  # nodata
    _write(out / "labelling_uncertainty.tif", u[None], Affine(20.0, 0, 400000.0, 0, -20.0, 6000000.0),
           "EPSG:32721", -1.0)
    valid = np.isfinite(u) & (u != -1.0)
    r, c = np.unravel_index(np.argmax(np.where(valid, u, -np.inf)), u.shape)
    return {"map": "labelling_uncertainty.tif", "valid": int(valid.sum()),
            "top": dict(row=int(r), col=int(c), value=float(u[r, c])),
            "cases": [dict(n=15, min_distance=8, shape="point"),
                      dict(n=6, min_distance=16, shape="box", size=16),
                      dict(n=500, min_distance=12, shape="point")]}


STAGES = {"io": vectors_io, "prediction": vectors_prediction, "samples": vectors_samples,
          "patches": vectors_patches, "bridge": vectors_bridge,
          "assessment": vectors_assessment, "augmentation": vectors_augmentation,
          "model": vectors_model, "workflow": vectors_workflow, "validation": vectors_validation,
          "precision": vectors_precision, "estimation": vectors_estimation,
          "labelling": vectors_labelling}


def main(argv):
    OUT.mkdir(parents=True, exist_ok=True)
    for stage in argv or list(STAGES):
        cases = STAGES[stage](OUT)
        (OUT / f"{stage}.json").write_text(json.dumps(cases, indent=1) + "\n")
        print(f"wrote {OUT / (stage + '.json')}")


if __name__ == "__main__":
    main(sys.argv[1:])
