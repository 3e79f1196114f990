"""make_mask: polygons and label rasters to a uint8 mask on the image grid.

Expected masks come from GDAL (ogr2ogr + gdal_rasterize, run here or by
tools/make_test_vectors.py) or from the label PNGs by numpy. Mirrored by
tests/testthat/test-samples.R on the same vectors (samples.json).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio

from conftest import VECTORS, shared_path, skip_or_fail, vectors
from rsunet.errors import (ClassFieldError, GridMismatchError, InputError, NoOverlapError,
                           OutputExistsError)
from rsunet.samples import make_mask

CASES = vectors("samples")["cases"]
REAL = [c for c in CASES if "shared_image" in c]


def _gdal_rasterize(image, labels, out_dir, field, init):
    if not shutil.which("gdal_rasterize") or not shutil.which("ogr2ogr"):
        skip_or_fail("GDAL command-line tools (gdal_rasterize, ogr2ogr) are not installed")
    with rasterio.open(image) as src:
        crs, b, w, h = src.crs.to_wkt(), src.bounds, src.width, src.height
    reprojected, ref = out_dir / "labels_ref.gpkg", out_dir / "ref.tif"
    subprocess.run(["ogr2ogr", "-f", "GPKG", "-t_srs", crs, reprojected, labels], check=True)
    burn = ["-a", field] if field else ["-burn", "1"]
    subprocess.run(["gdal_rasterize", "-q", "-init", str(init), "-ot", "Byte", "-te",
                    *map(repr, [b.left, b.bottom, b.right, b.top]), "-ts", str(w), str(h),
                    *burn, reprojected, ref], check=True)
    with rasterio.open(ref) as src:
        return src.read(1)


def _counts(a):
    values, counts = np.unique(a, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src.tags()


def test_synthetic_polygons_match_gdal_and_keep_the_image_grid(tmp_path):
    case = CASES[0]
    image = VECTORS / case["image"]
    res = make_mask(image, VECTORS / case["labels"], tmp_path / "m.tif", field=case["field"],
                    unlabelled=case["unlabelled"])
    mask, profile, tags = _read(res["path"])
    with rasterio.open(VECTORS / case["expected"]) as src:
        expected = src.read(1)
    np.testing.assert_array_equal(mask, expected)
    assert res["counts"] == case["counts"] == _counts(mask)
    with rasterio.open(image) as src:
        assert (profile["transform"], profile["crs"], profile["width"], profile["height"]) == \
            (src.transform, src.crs, src.width, src.height)
    assert profile["dtype"] == "uint8" and profile["count"] == 1
    assert json.loads(tags["RSUNET_CLASSES"]) == case["classes_table"] == res["classes"]
    assert tags["RSUNET_IGNORE"] == "255"
    assert res["value_map"] == {"forest": 1, "water": 2}


@pytest.mark.parametrize("case", [c for c in REAL if "field" in c], ids=lambda c: c["name"])
def test_real_polygons_agree_with_gdal_rasterize_pixel_for_pixel(case, tmp_path):
    image = shared_path(*case["shared_image"].split("/"))
    labels = shared_path(*case["shared_labels"].split("/"))
    res = make_mask(image, labels, tmp_path / "m.tif", field=case["field"],
                    unlabelled=case["unlabelled"], name_field=case["name_field"])
    mask, _, tags = _read(res["path"])
    init = 0 if case["unlabelled"] == "background" else 255
    ref = _gdal_rasterize(image, labels, tmp_path, case["field"], init)
    np.testing.assert_array_equal(mask, ref)
    assert _counts(mask) == case["counts"] == res["counts"]


def test_sparse_polygons_leave_unknown_not_background(tmp_path):
    case = next(c for c in REAL if c["name"] == "lsat")
    image = shared_path(*case["shared_image"].split("/"))
    labels = shared_path(*case["shared_labels"].split("/"))
    res = make_mask(image, labels, tmp_path / "m.tif", field="class_id", unlabelled="ignore",
                    name_field="class")
    mask = _read(res["path"])[0]
    assert "0" not in res["counts"] and res["counts"]["255"] > 0.9 * mask.size
    assert res["classes"] == {"0": "background", "1": "cleared", "2": "fallen_dry",
                              "3": "forest", "4": "water"}
    # the same polygons with background fill: only the 255s become 0
    res2 = make_mask(image, labels, tmp_path / "m2.tif", field="class_id")
    mask2 = _read(res2["path"])[0]
    np.testing.assert_array_equal(np.where(mask == 255, 0, mask), mask2)


@pytest.mark.parametrize("case", [c for c in REAL if "classes" in c], ids=lambda c: c["name"])
def test_amazon_png_masks_become_georeferenced_with_a_remap(case, tmp_path):
    image = shared_path(*case["shared_image"].split("/"))
    png = shared_path(*case["shared_labels"].split("/"))
    res = make_mask(image, png, tmp_path / "m.tif", classes=case["classes"])
    mask, profile, tags = _read(res["path"])
    with rasterio.open(image) as src:
        assert profile["transform"] == src.transform and profile["crs"] == src.crs
    with rasterio.open(png) as src:
        raw = src.read(1)
    np.testing.assert_array_equal(mask, np.where(raw == 1, 1, 0))  # forest 1, non-forest 0
    assert _counts(mask) == case["counts"]
    assert res["classes"] == {"0": "background", "1": "forest"}
    assert json.loads(tags["RSUNET_VALUE_MAP"]) == {"1": 1, "2": 0}
    named = make_mask(image, png, tmp_path / "n.tif", classes=case["classes"], background="non-forest")
    assert named["classes"] == {"0": "non-forest", "1": "forest"}
    assert json.loads(_read(named["path"])[2]["RSUNET_CLASSES"]) == named["classes"]
    np.testing.assert_array_equal(_read(named["path"])[0], mask)  # the name only
    with pytest.raises(InputError, match="background"):
        make_mask(image, png, tmp_path / "e.tif", classes=case["classes"], background="")


def test_a_png_of_another_size_is_a_grid_mismatch(tmp_path):
    image = shared_path("amazon", "train", "images", "Amazon_181.tiff_34.tiff")
    png = shared_path("amazon", "train", "masks", "Amazon_181.tiff_34.png")
    with pytest.raises(GridMismatchError, match="515x512.*512x512"):
        make_mask(image, png, tmp_path / "m.tif")
    assert list(tmp_path.iterdir()) == []


def test_georeferenced_label_raster_on_another_grid_is_resampled_by_nearest(tmp_path):
    image = VECTORS / CASES[0]["image"]
    expected = VECTORS / CASES[0]["expected"]
    with rasterio.open(expected) as src:
        fine = src.read(1).repeat(2, 0).repeat(2, 1)  # the same labels on a 15 m grid
        t = src.transform * rasterio.Affine.scale(0.5)
        profile = dict(src.profile, width=fine.shape[1], height=fine.shape[0], transform=t)
    with rasterio.open(tmp_path / "fine.tif", "w", **profile) as dst:
        dst.write(fine[np.newaxis])
    res = make_mask(image, tmp_path / "fine.tif", tmp_path / "m.tif", unlabelled="ignore")
    with rasterio.open(expected) as src:
        np.testing.assert_array_equal(_read(res["path"])[0], src.read(1))


def test_errors_name_the_problem(tmp_path):
    case = CASES[0]
    image, labels = VECTORS / case["image"], VECTORS / case["labels"]
    with pytest.raises(ClassFieldError, match="no field 'nope'.*cls"):
        make_mask(image, labels, tmp_path / "a.tif", field="nope")
    with pytest.raises(ClassFieldError, match="water"):
        make_mask(image, labels, tmp_path / "a.tif", field="cls", classes={"forest": 1})
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"cls": "x"},
        "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [10, 11], [11, 11], [10, 10]]]}}],
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}}))
    with pytest.raises(NoOverlapError, match="overlaps"):
        make_mask(image, far, tmp_path / "a.tif", field="cls")
    make_mask(image, labels, tmp_path / "a.tif", field="cls")
    with pytest.raises(OutputExistsError):
        make_mask(image, labels, tmp_path / "a.tif", field="cls")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "far.geojson"]
