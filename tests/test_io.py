"""Raster I/O: windows in native dtype with nodata as a mask, atomic GeoTIFF writes.

Mirrored by tests/testthat/test-io.R on the same vectors (io.json).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from conftest import VECTORS, shared_path, vectors
from rsunet import io, normalization
from rsunet.errors import InputError, OutputExistsError, RasterReadError

CASES = vectors("io")["cases"]


def _path_of(case):
    if "shared" in case:
        return shared_path(*case["shared"].split("/"))
    return VECTORS / case["file"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['file']}-{c['window']}")
def test_read_window_matches_vector(case):
    r = io.read_raster(_path_of(case), window=case["window"])
    assert list(r.data.shape) == case["shape"]
    assert r.data.dtype.name == case["dtype"]
    assert int(r.valid.sum()) == case["valid_count"]
    sums = [float(b[r.valid].astype(np.float64).sum()) for b in r.data]
    np.testing.assert_allclose(sums, case["band_sums"], rtol=1e-12)
    if case["first_valid"] is not None:
        np.testing.assert_array_equal(r.data[:, r.valid][:, 0], case["first_valid"])
    np.testing.assert_allclose(r.bounds, case["bounds"], rtol=0, atol=1e-6)


def test_real_int16_edge_window_keeps_crs_and_georeferencing():
    case = next(c for c in CASES if "shared" in c)
    path = _path_of(case)
    r = io.read_raster(path, window=case["window"])
    assert r.crs.to_epsg() == case["crs_epsg"] == 3857
    with rasterio.open(path) as src:
        assert r.transform == src.window_transform(rasterio.windows.Window(*case["window"]))
        # the window touches the bottom-right corner of the scene
        assert case["window"][0] + case["window"][2] == src.width
        assert case["window"][1] + case["window"][3] == src.height


def test_window_leaving_raster_is_an_error_unless_boundless():
    path = VECTORS / "io_int16_4b.tif"
    with pytest.raises(RasterReadError, match="leaves"):
        io.read_raster(path, window=(50, 30, 10, 10))
    r = io.read_raster(path, window=(50, 30, 10, 10), boundless=True)
    assert r.data.shape == (4, 10, 10)
    assert not r.valid[:, 3:].any() and not r.valid[7:, :].any()
    assert (r.data[:, :, 3:] == -9999).all()
    inside = io.read_raster(path, window=(50, 30, 3, 7))
    np.testing.assert_array_equal(r.data[:, :7, :3], inside.data)


def test_band_selection_and_bad_band():
    path = VECTORS / "io_int16_4b.tif"
    whole = io.read_raster(path)
    two = io.read_raster(path, bands=[4, 2])
    np.testing.assert_array_equal(two.data, whole.data[[3, 1]])
    with pytest.raises(InputError, match="4 bands"):
        io.read_raster(path, bands=[5])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RasterReadError, match="not found"):
        io.read_raster(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(RasterReadError, match="cannot read"):
        io.read_raster(bad)


@pytest.mark.parametrize("dtype,nodata", [("uint8", 0), ("int16", -9999), ("uint16", 65535),
                                          ("float32", -9999.0)])
def test_write_roundtrip_every_dtype(tmp_path, dtype, nodata):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 120, size=(3, 41, 67)).astype(dtype)
    data[:, 5, 7] = nodata
    t = Affine(0.5, 0, 300000, 0, -0.5, 5000000)
    out = io.write_raster(tmp_path / "x.tif", data, t, crs="EPSG:32622", nodata=nodata)
    with rasterio.open(out) as src:
        assert src.dtypes == (dtype,) * 3
        assert src.crs.to_epsg() == 32622 and src.transform == t and src.nodata == nodata
        assert src.profile["compress"] == "deflate" and src.profile["tiled"]
        np.testing.assert_array_equal(src.read(), data)
    back = io.read_raster(out)
    assert not back.valid[5, 7] and back.valid.sum() == 41 * 67 - 1


def test_write_refuses_to_overwrite_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.tif"
    t = Affine(10, 0, 500000, 0, -10, 100000)
    io.write_raster(path, np.ones((5, 5), np.uint8), t)
    with pytest.raises(OutputExistsError):
        io.write_raster(path, np.zeros((5, 5), np.uint8), t)
    assert io.read_raster(path).data.sum() == 25
    io.write_raster(path, np.zeros((5, 5), np.uint8), t, overwrite=True)
    assert io.read_raster(path).data.sum() == 0


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "x.tif"

    def broken_write(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        io.write_raster(path, np.ones((3, 40, 40), np.uint8), Affine(10, 0, 500000, 0, -10, 100000))
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_bad_shapes():
    with pytest.raises(InputError, match="bands, rows, cols"):
        io.write_raster("never.tif", np.ones((2, 2, 2, 2)), Affine.identity())


def test_band_percentiles_use_valid_pixels_and_sample_large_scenes(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 1000, (2, 600, 500)).astype(np.int16)
    data[:, :100] = -1  # nodata rows must not pull the low end down
    data[:, 300:340] += 5000  # bright rows between the sampled windows
    path = tmp_path / "s.tif"
    io.write_raster(path, data, Affine(1, 0, 0, 0, -1, 600), "EPSG:32622", nodata=-1)
    whole = normalization.band_percentiles(path)
    expected = np.percentile(data[:, 100:].reshape(2, -1).astype(float), [2, 98], axis=1).T
    np.testing.assert_allclose(whole, expected)
    # a bounded read: a 2 x 2 grid of 256 x 256 windows (the corners) instead of 300,000 pixels
    sampled = normalization.band_percentiles(path, max_pixels=4 * 256 ** 2)
    corners = [data[:, r:r + 256, c:c + 256] for r in (0, 344) for c in (0, 244)]
    values = np.concatenate([w.reshape(2, -1) for w in corners], axis=1)
    values = values[:, (values != -1).all(axis=0)].astype(float)
    np.testing.assert_allclose(sampled, np.percentile(values, [2, 98], axis=1).T)
    assert (whole[:, 1] > 5000).all() and (sampled[:, 1] < 1000).all()
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(normalization.band_percentiles(src, q=(0, 100)),
                                      [[0, data[0].max()], [0, data[1].max()]])  # nodata -1 excluded
    scale, offset = normalization.scene_scaling([[10, 30], [5, 5]])
    np.testing.assert_allclose(scale, [0.05, 1.0]) and np.testing.assert_allclose(offset, [-0.5, -5.0])


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "float32"])
def test_band_values_percentiles_are_numpys_bit_for_bit(dtype):
    # make_patches takes a scene's percentiles from counts gathered strip by strip: they must
    # be exactly np.percentile of the same pixels (patch sets stay byte-identical)
    rng = np.random.default_rng(sum(map(ord, dtype)))
    qs = [(2.0, 98.0), (0, 100), (50,), (0.1, 33.3, 97.1, 99.99)]
    for trial in range(150):
        n = int(rng.integers(1, 3000)) if trial % 3 else int(rng.integers(1, 12))
        if np.dtype(dtype).kind == "f":
            data = rng.normal(size=(2, 3, n)).astype(dtype)
        else:
            info = np.iinfo(dtype)
            low = int(rng.integers(info.min, info.max))
            high = info.max if trial % 2 else min(info.max, low + int(rng.integers(0, 40)))
            data = rng.integers(low, high, (2, 3, n), endpoint=True).astype(dtype)
        valid = rng.random((3, n)) > 0.3
        valid[0, 0] = True
        all_valid = trial % 4 == 0  # a strip without nodata comes with valid=None
        valid[1:] |= all_valid
        values = normalization.BandValues(2, dtype)
        values.add(data[:, :1], valid[:1])  # in pieces, as strips arrive
        values.add(data[:, 1:], None if all_valid else valid[1:])
        for q in qs:
            expected = np.stack([np.percentile(b[valid].astype(np.float64), q) for b in data])
            np.testing.assert_array_equal(values.percentiles(q), expected)
    with pytest.raises(InputError, match="no valid pixel"):
        normalization.BandValues(1, dtype).percentiles((2, 98), "empty.tif")
