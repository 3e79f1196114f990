"""The rpy2 bridge: exact conversions both ways, and our outputs seen from R.

Mirrored by tests/testthat/test-r.R, which reads the same bridge vectors (bridge.json,
bridge_*.tif, bridge_polygons.gpkg, and the .rds files Python saved) with terra and sf.
Expected values come from NumPy, shapely, pyogrio/GDAL or the JSON vectors, never from
the bridge itself. R runs embedded in this process: nothing here may start Python from
R (reticulate), which the bridge guards against and one test checks in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from conftest import ROOT, VECTORS, need_module, shared_path, skip_or_fail, vectors
from rsunet import io
from rsunet.errors import DependencyError, InputError, OutputExistsError, RCodeError

BRIDGE = vectors("bridge")
DTYPES = ["uint8", "int16", "uint16", "float32"]


@pytest.fixture(scope="module")
def r():
    """The bridge with R started, or skip (fail in CI) saying why it cannot start."""
    need_module("rpy2.robjects")
    from rsunet import r as bridge

    try:
        bridge.start_r()
    except DependencyError as exc:
        skip_or_fail(f"embedded R is not usable: {exc}")
    return bridge


def _raster(dtype, shape=(3, 7, 11), seed=0, nodata="default"):
    """A non-square multi-band Raster with extreme values and holes, band order visible."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    bands, rows, cols = shape
    if dtype.kind == "f":
        data = rng.normal(0, 1e4, shape).astype(dtype)
        nodata = float("nan") if nodata == "default" else nodata
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
        nodata = (info.max if dtype.kind == "u" else info.min) if nodata == "default" else nodata
        data[0, 0, 1], data[0, 0, 2] = info.min, info.max - (nodata == info.max)
        if nodata is not None:
            data[data == nodata] = nodata - 1 if nodata == info.max else nodata + 1
    data += np.arange(bands, dtype=dtype).reshape(-1, 1, 1) if dtype.kind == "f" else 0
    valid = rng.random((rows, cols)) > 0.15
    valid[0, :3] = True
    if nodata is not None:
        data[:, ~valid] = nodata
    transform = Affine(9e-5, 0, -55.123456789, 0, -7e-5, -3.987654321)
    return io.Raster(data, valid, transform, CRS.from_epsg(4326), nodata)


def _assert_same_raster(got, want):
    assert got.data.dtype == want.data.dtype
    assert got.data.shape == want.data.shape
    np.testing.assert_array_equal(got.valid, want.valid)
    np.testing.assert_array_equal(got.data, want.data)  # NaN == NaN here
    assert got.transform == want.transform
    assert got.crs == want.crs
    if want.nodata is None or not np.isnan(want.nodata):
        assert got.nodata == want.nodata
    else:
        assert np.isnan(got.nodata)


# ---- rasters: exact round trips --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES + ["int32", "uint32", "float64"])
def test_raster_round_trip_is_exact(r, dtype):
    want = _raster(dtype)
    _assert_same_raster(r.raster_from_r(r.raster_to_r(want)), want)


def test_raster_without_nodata_round_trips(r):
    want = _raster("int16", nodata=None)
    want.valid[:] = True
    got = r.raster_from_r(r.raster_to_r(want))
    _assert_same_raster(got, want)
    assert got.nodata is None


def test_r_sees_the_raster_as_an_r_user_would(r):
    want = _raster("uint16", shape=(3, 5, 8))
    seen = r.run_r(
        "a <- terra::as.array(x)\n"
        "list(dim = dim(a), v = a[4, 7, 2], na = sum(is.na(a)), ext = unname(as.vector(terra::ext(x))),"
        " epsg = terra::crs(x, describe = TRUE)$code, names = names(x))",
        x=want)
    assert list(seen["dim"]) == [5, 8, 3]  # terra's (rows, cols, layers)
    assert seen["v"] == float(want.data[1, 3, 6])  # R's [4, 7, 2] is NumPy's [1, 3, 6]
    assert seen["na"] == 3 * int((~want.valid).sum())
    left, bottom, right, top = want.bounds
    np.testing.assert_allclose(seen["ext"], [left, right, bottom, top], rtol=1e-15)
    assert seen["epsg"] == "4326"
    assert seen["names"] == ["lyr.1", "lyr.2", "lyr.3"]


def test_values_r_integers_cannot_hold(r):
    big = _raster("uint32")
    big.data[:, big.valid] = 4_000_000_000  # > 2**31 - 1: a double in terra, still exact
    assert r.run_r("max(terra::values(x), na.rm = TRUE)", x=big) == 4e9
    _assert_same_raster(r.raster_from_r(r.raster_to_r(big)), big)
    ok = _raster("int16")
    everywhere = np.ones_like(ok.valid)
    wide = io.Raster(ok.data.astype(np.int64) + 2 ** 40, everywhere, ok.transform, ok.crs, None)
    x = r.raster_to_r(wide)  # int64 within 2**53: doubles in R (documented), exact
    assert r.run_r("typeof(terra::values(x))", x=x) == "double"
    assert r.run_r("max(terra::values(x), na.rm = TRUE)", x=x) == float(wide.data[:, wide.valid].max())
    _assert_same_raster(r.raster_from_r(x), wide)
    wide.data[0, 0, 0] = 2 ** 53 + 1
    with pytest.raises(InputError, match="2\\*\\*53"):
        r.raster_to_r(wide)


def test_array_with_transform_and_rotated_grid(r):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    x = r.raster_to_r(data, transform=Affine(10, 0, 100, 0, -10, 50), crs="EPSG:32622", nodata=5)
    got = r.raster_from_r(x)
    assert not got.valid[1, 1] and got.valid.sum() == 11  # 5 in band 1: the pixel is nodata
    np.testing.assert_array_equal(got.data[:, got.valid], data[:, got.valid])
    assert (got.data[:, 1, 1] == 5).all() and got.nodata == 5
    with pytest.raises(InputError, match="north-up"):
        r.raster_to_r(data, transform=Affine(10, 1, 100, 0, -10, 50))


def test_r_made_raster_gets_an_inferred_dtype_and_free_nodata(r):
    labels = r.run_r("x <- terra::rast(nrows = 3, ncols = 4, vals = c(0:10, NA),"
                     " crs = 'EPSG:32622', xmin = 0, xmax = 40, ymin = 0, ymax = 30); x")
    assert labels.data.dtype == np.uint8 and labels.nodata == 255
    np.testing.assert_array_equal(labels.data.ravel(), list(range(11)) + [255])
    assert labels.transform == Affine(10, 0, 0, 0, -10, 30)
    full = r.run_r("terra::rast(nrows = 1, ncols = 3, vals = c(0, 255, NA))")
    assert full.data.dtype == np.int16 and full.nodata == -32768  # 255 is a valid value
    smooth = r.r_call("function(x) terra::focal(x, 3, mean, na.rm = TRUE)", _raster("uint8"))
    assert smooth.data.dtype == np.float64


def test_r_call_focal_mean_matches_numpy(r):
    src = _raster("float32", shape=(2, 6, 9))
    src.valid[:] = True
    src.data[:] = np.arange(2 * 6 * 9, dtype=np.float32).reshape(2, 6, 9) ** 1.5
    got = r.r_call("function(x) terra::focal(x, 3, mean)", src)
    want = np.full(src.data.shape, np.nan)
    d = src.data.astype(np.float64)
    for i in range(1, 5):
        for j in range(1, 8):
            want[:, i, j] = d[:, i - 1:i + 2, j - 1:j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(got.data, want, rtol=1e-12)  # NaN where the window leaves
    assert got.transform == src.transform


# ---- GeoTIFFs rsunet writes, read by terra ---------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_terra_reads_every_geotiff_rsunet_writes(r, tmp_path, dtype):
    src = _raster(dtype, shape=(3, 6, 10), seed=3)
    path = io.write_raster(tmp_path / "out.tif", src.data, src.transform, src.crs, nodata=src.nodata)
    seen = r.run_r(
        "x <- terra::rast(path)\n"
        "list(values = terra::values(x), datatype = terra::datatype(x)[1],"
        " ext = unname(as.vector(terra::ext(x))), epsg = terra::crs(x, describe = TRUE)$code)",
        path=str(path))
    want = src.data.reshape(3, -1).T.astype(np.float64)
    want[~np.repeat(src.valid.ravel()[:, None], 3, axis=1)] = np.nan
    np.testing.assert_array_equal(seen["values"], want)  # cells row by row; nodata -> NA
    terra_type = {"uint8": "INT1U", "int16": "INT2S", "uint16": "INT2U", "float32": "FLT4S"}
    assert seen["datatype"] == terra_type[dtype]
    left, bottom, right, top = src.bounds
    np.testing.assert_allclose(seen["ext"], [left, right, bottom, top], rtol=1e-15)
    assert seen["epsg"] == "4326"
    back = r.raster_from_r(r.raster_to_r(path))  # a file-backed SpatRaster: terra's dtype
    assert back.data.dtype == src.data.dtype
    np.testing.assert_array_equal(back.valid, src.valid)
    np.testing.assert_array_equal(back.data[:, src.valid], src.data[:, src.valid])


@pytest.mark.parametrize("case", BRIDGE["rasters"], ids=lambda c: c["file"])
def test_bridge_vectors_through_terra(r, case):
    seen = r.run_r("x <- terra::rast(path)\n"
                   "list(values = terra::values(x), ext = unname(as.vector(terra::ext(x))),"
                   " epsg = terra::crs(x, describe = TRUE)$code, nodata_cells = sum(is.na(terra::values(x)[, 1])))",
                   path=str(VECTORS / case["file"]))
    want = np.array([[np.nan if v is None else v for v in band] for band in case["values_row_major"]]).T
    np.testing.assert_array_equal(seen["values"], want)
    np.testing.assert_allclose(seen["ext"], case["extent"], rtol=1e-15)
    assert seen["epsg"] == str(case["epsg"])
    assert seen["nodata_cells"] == case["shape"][1] * case["shape"][2] - case["valid_count"]


def test_io_vectors_counts_and_sums_in_terra_equal_io_json(r):
    """terra's own reading of io*.tif gives io.json's valid counts and band sums."""
    cases = [c for c in vectors("io")["cases"] if "shared" not in c]
    assert len(cases) >= 10
    for case in cases:
        got = r.run_r(
            "a <- terra::as.array(terra::rast(path))\n"
            "a <- a[w[2] + seq_len(w[4]), w[1] + seq_len(w[3]), , drop = FALSE]\n"
            "ok <- apply(!is.na(a), c(1, 2), all)\n"
            "list(valid = sum(ok), sums = apply(a, 3, function(b) sum(b[ok])))",
            path=str(VECTORS / case["file"]), w=np.array(case["window"]))
        assert got["valid"] == case["valid_count"], case
        np.testing.assert_allclose(np.atleast_1d(got["sums"]), case["band_sums"], rtol=1e-12)


R_CONFUSION = """
g <- terra::values(terra::rast(ref))[, 1]; m <- terra::values(terra::rast(pred))[, 1]
ok <- !is.na(g) & !is.na(m) & g != 255 & m != 255
ids <- sort(unique(c(g[ok], m[ok])))
tab <- table(factor(g[ok], ids), factor(m[ok], ids))   # reference in rows
po <- sum(diag(tab)) / sum(tab); pe <- sum(rowSums(tab) * colSums(tab)) / sum(tab)^2
list(matrix = unclass(tab), ids = ids, oa = po, kappa = (po - pe) / (1 - pe))
"""


@pytest.mark.parametrize("name", ["worked", "multi"])
def test_assessment_vectors_confusion_is_r_table(r, name):
    """R's table() of map vs reference (terra reading the files) is assessment.json's
    matrix and rsunet.assessment's; OA and kappa by their formulas in R agree too."""
    case = vectors("assessment")[name]
    got = r.run_r(R_CONFUSION, ref=str(VECTORS / case["reference"]),
                  pred=str(VECTORS / case["prediction"]))
    np.testing.assert_array_equal(got["matrix"], case["confusion"])
    if "overall_accuracy" in case:
        assert got["oa"] == pytest.approx(case["overall_accuracy"], rel=1e-12)
        assert got["kappa"] == pytest.approx(case["kappa"], rel=1e-12)
    from rsunet.assessment import assess_map

    ours = assess_map(VECTORS / case["prediction"], VECTORS / case["reference"])
    assert [int(i) for i in ours.class_ids] == [int(i) for i in np.atleast_1d(got["ids"])]
    np.testing.assert_array_equal(ours.matrix, got["matrix"])
    assert ours.overall["kappa"] == pytest.approx(got["kappa"], rel=1e-12)


# ---- tables and polygons ---------------------------------------------------------------------

def _table():
    import pandas as pd

    return pd.DataFrame({
        "i64": np.array([1, -2, 3, 2 ** 31 - 1], np.int64),
        "i16": np.array([-32768, 0, 5, 32767], np.int16),
        "u8": np.array([0, 1, 254, 255], np.uint8),
        "u32": np.array([0, 2 ** 31, 4_294_967_295, 7], np.uint32),
        "f64": [0.1, float("nan"), -1e300, 1 / 3],
        "f32": np.array([1.5, -0.1, 3e38, 0], np.float32),
        "text": ["a", None, "é ü", ""],
        "flag": [True, False, True, False],
        "cat": pd.Categorical(["forest", "water", None, "forest"], categories=["water", "forest"]),
        "ordered": pd.Categorical(["lo", "hi", "lo", "hi"], categories=["lo", "hi"], ordered=True),
        "nullable": pd.array([1, None, 3, 4], dtype="Int64"),
        "maybe": pd.array([True, None, False, True], dtype="boolean"),
    })


def test_dataframe_round_trip_and_r_types(r):
    import pandas as pd

    df = _table()
    x = r.to_r(df)
    types = r.run_r("vapply(d, function(v) class(v)[1], '')", d=x)
    assert types == {"i64": "integer", "i16": "integer", "u8": "integer", "u32": "numeric",
                     "f64": "numeric", "f32": "numeric", "text": "character", "flag": "logical",
                     "cat": "factor", "ordered": "ordered", "nullable": "integer", "maybe": "logical"}
    na = r.run_r("vapply(d, function(v) sum(is.na(v)), 0L)", d=x)
    assert na == {c: int(df[c].isna().sum()) for c in df.columns}
    assert r.run_r("d$u32[3] == 4294967295 && d$text[3] == '\u00e9 \u00fc'", d=x) is True
    assert r.run_r("as.character(d$cat)", d=x) == ["forest", "water", None, "forest"]  # a real factor
    assert r.run_r("as.integer(d$ordered[1] < d$ordered[2])", d=x) == 1
    pd.testing.assert_frame_equal(r.from_r(x), df, check_exact=True)


def test_table_values_beyond_doubles_are_an_error(r):
    import pandas as pd

    with pytest.raises(InputError, match="2\\*\\*53"):
        r.to_r(pd.DataFrame({"id": np.array([2 ** 60], np.int64)}))
    with pytest.raises(InputError, match="astype\\(str\\)"):
        r.to_r(pd.DataFrame({"mixed": ["a", 3]}))


def test_r_made_data_frame_converts_by_r_types(r):
    import pandas as pd

    df = r.run_r("data.frame(n = c(1L, NA), x = c(0.5, NA), s = c('a', NA), b = c(TRUE, NA),"
                 " f = factor(c('u', 'v')), d = as.Date(c('2020-02-29', NA)),"
                 " stringsAsFactors = FALSE)")
    assert str(df["n"].dtype) == "Int32" and df["n"].isna().tolist() == [False, True]
    assert df["x"].dtype == np.float64 and np.isnan(df["x"][1])
    assert df["s"].tolist() == ["a", None]
    assert str(df["b"].dtype) == "boolean"
    assert list(df["f"].cat.categories) == ["u", "v"]
    assert df["d"][0] == pd.Timestamp("2020-02-29") and pd.isna(df["d"][1])


def _polygons():
    gpd = need_module("geopandas")
    import shapely

    return gpd.GeoDataFrame(
        {"name": ["hole", "multi", None], "class_id": np.array([1, 2, 3], np.int64),
         "share": [0.5, float("nan"), 1 / 3]},
        geometry=[shapely.Polygon([(0, 0), (10.1, 0), (10, 7.3), (0, 0)],
                                  [[(2, 1), (5, 1), (4, 2.5), (2, 1)]]),
                  shapely.MultiPolygon([shapely.box(20, 20, 21, 21.5), shapely.box(30.2, 30, 31, 31)]),
                  shapely.Point(1 / 3, 2 / 3)],
        crs="EPSG:2953")


def test_geodataframe_round_trip_is_exact(r):
    import shapely

    gdf = _polygons()
    got = r.from_r(r.to_r(gdf))
    assert list(got.columns) == list(gdf.columns) and got.geometry.name == "geometry"
    assert shapely.to_wkb(got.geometry.values).tolist() == shapely.to_wkb(gdf.geometry.values).tolist()
    assert got.crs == gdf.crs
    import pandas as pd

    pd.testing.assert_frame_equal(pd.DataFrame(got.drop(columns="geometry")),
                                  pd.DataFrame(gdf.drop(columns="geometry")), check_exact=True)


def test_sf_sees_the_polygons_as_an_r_user_would(r):
    gdf = _polygons()
    seen = r.run_r("list(types = as.character(sf::st_geometry_type(s)), epsg = sf::st_crs(s)$epsg,"
                   " area = as.numeric(sf::st_area(s)), name = s$name, sf_column = attr(s, 'sf_column'))",
                   s=gdf)
    assert seen["types"] == ["POLYGON", "MULTIPOLYGON", "POINT"]
    assert seen["epsg"] == 2953
    np.testing.assert_allclose(seen["area"], gdf.geometry.area.to_numpy(), rtol=1e-14)
    assert seen["name"] == ["hole", "multi", None]
    assert seen["sf_column"] == "geometry"


def test_bridge_polygons_from_gpkg_equal_sf_reading(r):
    gpd = need_module("geopandas")
    import shapely

    case = BRIDGE["polygons"]
    via_bridge = r.run_r("sf::st_read(path, quiet = TRUE)", path=str(VECTORS / case["file"]))
    assert via_bridge.crs.to_epsg() == case["epsg"]
    assert shapely.to_wkb(via_bridge.geometry.values, hex=True).tolist() == case["wkb_hex"]
    for column, values in case["attributes"].items():
        got = [None if v is None or v != v else v for v in via_bridge[column].tolist()]
        assert got == values, column
    direct = gpd.read_file(VECTORS / case["file"])
    assert shapely.equals_exact(via_bridge.geometry.values, direct.geometry.values, tolerance=0).all()


def test_real_training_polygons_through_sf_and_rds(r, tmp_path):
    """RStoolbox's training polygons: sf -> .rds (made by R) -> GeoDataFrame, exact."""
    gpd = need_module("geopandas")
    import shapely

    gpkg = shared_path("rstoolbox", "trainingPolygons_lsat.gpkg")
    rds = tmp_path / "polygons.rds"
    r.run_r("saveRDS(sf::st_read(gpkg, quiet = TRUE), rds)", gpkg=str(gpkg), rds=str(rds))
    got = r.read_rds(rds)
    want = gpd.read_file(gpkg)
    assert len(got) == len(want) == 36
    assert got.crs.to_epsg() == want.crs.to_epsg() == 32622
    assert shapely.equals_exact(got.geometry.values, want.geometry.values, tolerance=0).all()
    assert got["class"].tolist() == want["class"].tolist()
    assert got["class_id"].tolist() == want["class_id"].tolist()  # strings, as stored


# ---- .rds both ways ---------------------------------------------------------------------------

def test_read_rds_of_python_saved_vectors(r):
    rds = BRIDGE["rds"]
    raster = r.read_rds(VECTORS / rds["raster"])
    source = io.read_raster(VECTORS / rds["raster_source"])
    np.testing.assert_array_equal(raster.valid, source.valid)
    np.testing.assert_array_equal(raster.data[:, source.valid], source.data[:, source.valid])
    assert raster.crs == source.crs
    table = r.read_rds(VECTORS / rds["table"])
    for column, values in rds["table_columns"].items():
        assert [None if v != v else v for v in table[column].tolist()] == values
    polygons = r.read_rds(VECTORS / rds["polygons"])
    import shapely

    assert shapely.to_wkb(polygons.geometry.values, hex=True).tolist() == BRIDGE["polygons"]["wkb_hex"]


def test_read_rds_of_r_saved_spatraster_and_errors(r, tmp_path):
    path = VECTORS / "bridge_int16.tif"
    r.run_r("x <- terra::rast(path); terra::saveRDS(x, a); base::saveRDS(x, b);"
            " saveRDS(data.frame(k = 1:2), c)",
            path=str(path), a=str(tmp_path / "wrapped.rds"), b=str(tmp_path / "dead.rds"),
            c=str(tmp_path / "df.rds"))
    got = r.read_rds(tmp_path / "wrapped.rds")
    want = io.read_raster(path)
    np.testing.assert_array_equal(got.valid, want.valid)
    np.testing.assert_array_equal(got.data[:, want.valid], want.data[:, want.valid])
    assert got.transform.almost_equals(want.transform, precision=1e-9) and got.crs == want.crs
    assert r.read_rds(tmp_path / "df.rds")["k"].tolist() == [1, 2]
    with pytest.raises(InputError, match="terra::wrap"):
        r.read_rds(tmp_path / "dead.rds")
    with pytest.raises(InputError, match="not found"):
        r.read_rds(tmp_path / "nope.rds")
    (tmp_path / "junk.rds").write_text("not R")
    with pytest.raises(RCodeError, match="cannot read"):
        r.read_rds(tmp_path / "junk.rds")


def test_save_rds_hands_a_spatraster_to_r(r, tmp_path):
    src = _raster("uint8", shape=(2, 4, 9))
    out = r.save_rds(src, tmp_path / "map.rds")
    seen = r.run_r("x <- terra::unwrap(readRDS(f)); list(cls = class(x)[1], v = terra::as.array(x)[3, 8, 2])",
                   f=str(out))
    assert seen["cls"] == "SpatRaster"
    assert seen["v"] == (float(src.data[1, 2, 7]) if src.valid[2, 7] else None)
    with pytest.raises(OutputExistsError):
        r.save_rds(src, out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial files


# ---- R code, values, errors ------------------------------------------------------------------

def test_run_r_values_and_errors(r):
    assert r.run_r("x + 1L", x=41) == 42
    assert r.run_r("c(a = 1, b = NA)") == {"a": 1.0, "b": None}
    assert r.run_r("letters[1:3]") == ["a", "b", "c"]
    m = np.arange(6).reshape(2, 3)
    assert r.run_r("m[2, 3]", m=m) == 5  # index meaning kept
    np.testing.assert_array_equal(r.run_r("m * 2L", m=m), m * 2)
    assert r.run_r("list(a = 1L, b = list('x', NULL))") == {"a": 1, "b": ["x", None]}
    assert r.r_call("paste", "a", "b", sep="-") == "a-b"
    with pytest.raises(RCodeError, match="boom"):
        r.run_r("stop('boom')")
    with pytest.raises(RCodeError, match="cannot evaluate"):
        r.r_call("function(x", 1)


def test_r_cannot_start_python_from_the_rpy2_session(r):
    guard = r.run_r('is.function(getOption("reticulate.python.beforeInitialized"))')
    if r.reticulate_allowed():  # reticulate >= 1.31 shares a process with rpy2: no guard
        assert guard is False
        return
    assert guard is True
    with pytest.raises(DependencyError, match="reticulate < 1.31"):
        r.run_r("reticulate::py_config()")
    assert r.run_r("reticulate:::is_python_initialized()") is False


def test_reticulate_guard_keeps_the_process_alive(r):
    """In a fresh process: R code that would start Python fails, and the process exits 0.

    Without the guard this aborts at exit with "PyThreadState_Get" (exit 134).
    """
    if r.reticulate_allowed():
        return  # reticulate >= 1.31: starting Python from R here is allowed, nothing to guard
    code = ("from rsunet import r\nfrom rsunet.errors import DependencyError\n"
            "try:\n    r.run_r('library(reticulate); reticulate::import(\"os\")')\n"
            "except DependencyError as e:\n    print('guarded', e)\n"
            "r.run_r('invisible(gc())')\nprint('alive')\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "guarded" in out.stdout and "alive" in out.stdout


def test_python_inside_reticulate_refuses_rpy2(r, tmp_path, monkeypatch):
    """R -> reticulate -> Python -> rpy2 is refused from reticulate's own DESCRIPTION."""
    import types

    helper = tmp_path / "reticulate" / "python" / "rpytools" / "__init__.py"
    helper.parent.mkdir(parents=True)
    helper.write_text("")
    fake = types.ModuleType("rpytools")
    fake.__file__ = str(helper)
    monkeypatch.setitem(sys.modules, "rpytools", fake)
    (tmp_path / "reticulate" / "DESCRIPTION").write_text("Package: reticulate\nVersion: 1.28\n")
    with pytest.raises(DependencyError, match="inside R through reticulate 1.28"):
        r.start_r()
    (tmp_path / "reticulate" / "DESCRIPTION").write_text("Package: reticulate\nVersion: 1.31.0\n")
    assert r.start_r() is not None


def test_version_rule_for_reticulate():
    from rsunet import r as bridge

    assert bridge._version_allows("1.28") is False
    assert bridge._version_allows("1.30.1") is False
    assert bridge._version_allows("1.31") is True
    assert bridge._version_allows("1.45.0") is True
    assert bridge._version_allows(None) is True


def test_import_failures_become_dependency_errors():
    from rsunet import r as bridge

    def missing(name):
        raise ModuleNotFoundError("No module named 'rpy2'")

    def too_new(name):
        raise OSError("cannot load library: undefined symbol 'R_getVar' not found")

    with pytest.raises(DependencyError, match=re.escape("pip install 'rsunet[r]'")):
        bridge._import_rpy2(importer=missing)
    with pytest.raises(DependencyError, match="R >= 4.5") as exc:
        bridge._import_rpy2(importer=too_new)
    assert bridge.WORKING_PINS in str(exc.value) and "RPY2_CFFI_MODE=ABI" in str(exc.value)


def test_missing_rpy2_in_a_fresh_process_is_a_dependency_error():
    out = _python("import sys\nsys.modules['rpy2'] = None\nimport rsunet\nfrom rsunet import r\n"
                  "from rsunet.errors import DependencyError\n"
                  "try:\n    r.run_r('1')\nexcept DependencyError as e:\n    print('DependencyError:', e)\n"
                  "print('rpy2' in sys.modules and sys.modules['rpy2'] is not None)\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DependencyError: rpy2 is not installed" in out.stdout
    assert out.stdout.strip().endswith("False")


def test_import_rsunet_does_not_start_r():
    out = _python("import sys, rsunet, rsunet.r\nprint(any(m.startswith('rpy2') for m in sys.modules))\n")
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


def _python(code):
    env = dict(os.environ, RPY2_CFFI_MODE="ABI", PYTHONPATH=str(ROOT / "python"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


# ---- the tutorial section ---------------------------------------------------------------------

def test_tutorial_bridge_section_runs(r, tmp_path, monkeypatch):
    shared_path("rstoolbox", "trainingPolygons_lsat.gpkg")
    text = (ROOT / "docs" / "python-tutorial-bridge.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "tutorial"}
    for block in blocks:
        exec(compile(block, "python-tutorial-bridge.md", "exec"), namespace)
    assert Path("map_for_r.rds").exists()
