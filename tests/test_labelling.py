"""Where to label next: suggest_labels on a float32 uncertainty map with NaN and nodata.

Expected values: the most uncertain valid pixel and the valid-pixel count by numpy
(labelling.json), distances between suggestions by numpy. Mirrored by
tests/testthat/test-labelling.R.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from conftest import VECTORS, vectors
from rsunet.errors import EmptyResultError, InputError, OutputExistsError
from rsunet.io import write_raster
from rsunet.labelling import suggest_labels

V = vectors("labelling")


def _map():
    with rasterio.open(VECTORS / V["map"]) as src:
        u = src.read(1)
        return u, np.isfinite(u) & (u != src.nodata), src.transform, src.bounds


@pytest.mark.parametrize("case", range(len(V["cases"])))
def test_suggestions_are_valid_spaced_ranked_and_inside(tmp_path, case):
    c = V["cases"][case]
    u, valid, transform, bounds = _map()
    gdf = suggest_labels(VECTORS / V["map"], tmp_path / "s.gpkg", c["n"], c["min_distance"],
                         shape=c["shape"], size=c.get("size"), block_rows=9)
    rows, cols = gdf["row"].to_numpy(), gdf["col"].to_numpy()
    assert 1 <= len(gdf) <= c["n"]
    assert valid[rows, cols].all()                                          # never nodata / NaN
    np.testing.assert_array_equal(gdf["uncertainty"], u[rows, cols].astype(float))
    assert list(gdf["rank"]) == list(range(1, len(gdf) + 1))
    assert (np.diff(gdf["uncertainty"]) <= 0).all()                         # ranked
    assert (rows[0], cols[0]) == (V["top"]["row"], V["top"]["col"])          # the most uncertain first
    d = np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    assert d[np.triu_indices(len(gdf), 1)].min() >= c["min_distance"]       # spread apart
    minx, miny, maxx, maxy = gdf.total_bounds
    assert minx >= bounds.left and maxx <= bounds.right and miny >= bounds.bottom and maxy <= bounds.top
    if c["shape"] == "box":
        side = c["size"] * transform.a
        np.testing.assert_allclose(gdf.geometry.area, side * side)
        assert gdf.geometry.contains(gdf.geometry.centroid).all()
    else:
        np.testing.assert_allclose(gdf.geometry.x, transform.c + (cols + 0.5) * transform.a)
    if c["n"] > 200:  # more than fit: the scene is covered (a pixel of a candidate cell whose best
        # pixel was too near lies within min_distance * (1 + 1/sqrt(2)) of a suggestion)
        rr, cc = np.nonzero(valid)
        near = np.hypot(rr[:, None] - rows[None, :], cc[:, None] - cols[None, :]).min(axis=1)
        assert len(gdf) < c["n"] and (near < c["min_distance"] * (1 + 0.5 ** 0.5)).all()
    import geopandas as gpd

    back = gpd.read_file(tmp_path / "s.gpkg")
    assert list(back["rank"]) == list(gdf["rank"]) and back.crs == gdf.crs


def test_suggest_labels_refusals(tmp_path):
    m = VECTORS / V["map"]
    for kwargs, match in ((dict(n=0, min_distance=3), "positive"), (dict(n=3, min_distance=-1), ">= 0"),
                          (dict(n=3, min_distance=3, shape="circle"), "shape"),
                          (dict(n=3, min_distance=3, shape="box"), "size"),
                          (dict(n=3, min_distance=3, band=2), "band 2")):
        with pytest.raises(InputError, match=match):
            suggest_labels(m, tmp_path / "x.gpkg", **kwargs)
    assert not (tmp_path / "x.gpkg").exists()
    suggest_labels(m, tmp_path / "s.gpkg", 2, 3)
    with pytest.raises(OutputExistsError):
        suggest_labels(m, tmp_path / "s.gpkg", 2, 3)
    write_raster(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32), (1, 0, 0, 0, -1, 8), "EPSG:32633")
    with pytest.raises(EmptyResultError):
        suggest_labels(tmp_path / "nan.tif", tmp_path / "y.gpkg", 2, 3)
