"""Assessment: confusion matrix and figures, object counts, polygons.

Expected values come from elsewhere: the hand-computed worked example and numpy counts
in assessment.json (tools/make_test_vectors.py), scikit-learn on the same pixels read
with rasterio, gdal_rasterize for polygon references, GDAL's polygon tracing for object
counts, and an equal-area projection for geodesic areas.
Mirrored by tests/testthat/test-assessment.R.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from conftest import VECTORS, need_module, shared_path, vectors
from rsunet import assessment as A
from rsunet.errors import (ClassFieldError, GridMismatchError, InputError, NoOverlapError,
                           OutputExistsError)

V = vectors("assessment")


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile


def _sklearn_figures(y_true, y_pred, labels):
    metrics = need_module("sklearn.metrics")
    p, r, f, s = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                         zero_division=np.nan)
    return dict(
        confusion=metrics.confusion_matrix(y_true, y_pred, labels=labels),
        oa=metrics.accuracy_score(y_true, y_pred),
        kappa=metrics.cohen_kappa_score(y_true, y_pred, labels=labels),
        precision=p, recall=r, f1=f, support=s,
        # every listed class occurs in one map at least, so IoU is always defined
        iou=metrics.jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=0),
    )


def _check_against_sklearn(result, y_true, y_pred):
    labels = result.class_ids
    ex = _sklearn_figures(y_true, y_pred, labels)
    np.testing.assert_array_equal(result.matrix, ex["confusion"])
    o = result.overall
    assert o["n"] == y_true.size
    assert o["overall_accuracy"] == pytest.approx(ex["oa"], rel=1e-12)
    assert o["kappa"] == pytest.approx(ex["kappa"], rel=1e-10)
    pc = result.per_class
    for name in ("precision", "recall", "f1", "iou"):
        np.testing.assert_allclose(pc[name], ex[name], rtol=1e-12, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(pc["support"], ex["support"])
    # Pontius & Millones: total disagreement splits into quantity + allocation
    assert o["quantity_disagreement"] + o["allocation_disagreement"] == pytest.approx(
        1 - o["overall_accuracy"], abs=1e-12)


def _perturbed_copy(src_path, out, rng, flip=0.05, holes=0.01, classes=(0, 1)):
    truth, profile = _read(src_path)
    pred = truth.copy()
    change = rng.random(truth.shape) < flip
    pred[change] = rng.choice(np.array(classes, np.uint8), size=int(change.sum()))
    pred[rng.random(truth.shape) < holes] = 255
    profile.update(nodata=255, tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(pred, 1)
    return truth, pred


# ---- the worked example (hand-computed in the vectors) ------------------------------------

def test_worked_example_matches_hand_computed_formulas():
    w = V["worked"]
    r = A.assess_map(VECTORS / w["prediction"], VECTORS / w["reference"])
    assert list(r.confusion.index) == w["classes"] == list(r.confusion.columns)
    np.testing.assert_array_equal(r.matrix, w["confusion"])
    o = r.overall
    assert o["n"] == w["n"]
    for key in ("overall_accuracy", "kappa", "quantity_disagreement", "allocation_disagreement"):
        assert o[key] == pytest.approx(w[key], rel=1e-12, abs=1e-15), key
    for key in ("precision", "recall", "f1", "iou"):
        np.testing.assert_allclose(r.per_class[key], w[key], rtol=1e-12, err_msg=key)


def test_metrics_from_a_bare_matrix_and_its_limits():
    w = V["worked"]
    overall, per = A.metrics_from_confusion(w["confusion"])
    assert overall["kappa"] == pytest.approx(w["kappa"], rel=1e-12)
    assert overall["allocation_disagreement"] == pytest.approx(w["allocation_disagreement"], rel=1e-12)
    # a class never predicted has no precision; one never in the reference no recall
    overall, per = A.metrics_from_confusion([[5, 0], [3, 0]])
    assert np.isnan(per["precision"][1]) and per["recall"][1] == 0
    assert overall["quantity_disagreement"] == pytest.approx(3 / 8)
    with pytest.raises(InputError, match="square"):
        A.metrics_from_confusion([[1, 2, 3]])
    with pytest.raises(InputError, match="empty"):
        A.metrics_from_confusion([[0, 0], [0, 0]])


# ---- against scikit-learn ---------------------------------------------------------------

def test_four_class_pair_matches_numpy_counts_and_sklearn():
    m = V["multi"]
    ref, _ = _read(VECTORS / m["reference"])
    pred, _ = _read(VECTORS / m["prediction"])
    r = A.assess_map(VECTORS / m["prediction"], VECTORS / m["reference"])
    np.testing.assert_array_equal(r.matrix, m["confusion"])
    ok = (ref != 255) & (pred != 255)
    _check_against_sklearn(r, ref[ok], pred[ok])
    # block size changes nothing: the matrix is a sum over row blocks
    r1 = A.assess_map(VECTORS / m["prediction"], VECTORS / m["reference"], block_rows=7)
    np.testing.assert_array_equal(r1.matrix, r.matrix)


def test_several_scenes_pool_into_one_matrix():
    m, w = V["multi"], V["worked"]
    r = A.assess_map([VECTORS / m["prediction"], VECTORS / w["prediction"]],
                     [VECTORS / m["reference"], VECTORS / w["reference"]])
    expected = np.array(m["confusion"])
    expected[:3, :3] += np.array(w["confusion"])
    np.testing.assert_array_equal(r.matrix, expected)
    assert list(r.confusion.index) == w["classes"] + ["class_3"]
    # each scene's own figures, from its own matrix
    assert r.per_scene["scene"].tolist() == [Path(m["prediction"]).stem, Path(w["prediction"]).stem]
    for (_, row), cm in zip(r.per_scene.iterrows(), (m["confusion"], w["confusion"])):
        cm = np.array(cm)
        assert row["n"] == cm.sum() and row["overall_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    with pytest.raises(InputError, match="as many references"):
        A.assess_map([VECTORS / m["prediction"]] * 2, VECTORS / m["reference"])


def test_real_building_labels_against_a_perturbed_copy(tmp_path):
    label = shared_path("nrcan", "tiles_label_1.tif")
    truth, pred = _perturbed_copy(label, tmp_path / "pred.tif", np.random.default_rng(5))
    # the NRCan labels declare 0 (background) as nodata: use_nodata=False keeps it a class
    r = A.assess_map(tmp_path / "pred.tif", label, use_nodata=False, block_rows=100)
    ok = pred != 255
    _check_against_sklearn(r, truth[ok], pred[ok])
    assert r.class_ids == [0, 1]
    # with the file's nodata honoured, reference 0 pixels count nowhere
    r = A.assess_map(tmp_path / "pred.tif", label)
    ok = (pred != 255) & (truth != 0)
    _check_against_sklearn(r, truth[ok], pred[ok])


def test_reference_on_another_grid_is_resampled_by_nearest(tmp_path):
    label = shared_path("nrcan", "tiles_label_2.tif")
    fine, profile = _read(label)
    t = profile["transform"]
    # a reference on a grid twice as coarse, built by numpy from the label
    coarse = fine[::2, ::2].copy()
    coarse[coarse == 0] = 2  # recode so the file's nodata (0) plays no part
    cprof = dict(profile, width=256, height=256, nodata=None,
                 transform=Affine(t.a * 2, 0, t.c, 0, t.e * 2, t.f))
    with rasterio.open(tmp_path / "coarse.tif", "w", **cprof) as dst:
        dst.write(coarse, 1)
    _perturbed_copy(label, tmp_path / "pred.tif", np.random.default_rng(9), classes=(1, 2))
    pred, _ = _read(tmp_path / "pred.tif")
    r = A.assess_map(tmp_path / "pred.tif", tmp_path / "coarse.tif", use_nodata=False)
    rows, cols = np.indices(pred.shape)
    expected_ref = coarse[rows // 2, cols // 2]  # fine pixel centre falls in coarse pixel (r//2, c//2)
    ok = pred != 255
    _check_against_sklearn(r, expected_ref[ok], pred[ok])


def test_polygon_reference_matches_gdal_rasterize(tmp_path):
    """Multi-class NB land cover: polygons (northing/easting axis order) vs gdal_rasterize."""
    image = shared_path("nrcan", "nb_23322E759967N_2of2_rgb.tif")
    polys = shared_path("nrcan", "nb_BakerLake_2017_landcover.gpkg")
    gdal_ref = _gdal_rasterize(image, polys, tmp_path / "gdal.tif", "-a", "Quatreclasses")
    truth, _ = _perturbed_copy(gdal_ref, tmp_path / "pred.tif", np.random.default_rng(3),
                               flip=0.1, classes=(0, 1, 2, 3, 4))
    pred, _ = _read(tmp_path / "pred.tif")
    r = A.assess_map(tmp_path / "pred.tif", polys, field="Quatreclasses", use_nodata=False)
    ok = (pred != 255) & (truth != 255)
    assert len(np.unique(truth[ok])) >= 4
    _check_against_sklearn(r, truth[ok], pred[ok])
    with pytest.raises(ClassFieldError, match="no field"):
        A.assess_map(tmp_path / "pred.tif", polys, field="nope")


def test_polygon_names_map_through_the_class_table(tmp_path):
    gpd = need_module("geopandas")
    from shapely.geometry import box

    w = V["worked"]
    pred = VECTORS / w["prediction"]
    with rasterio.open(pred) as src:
        left, bottom, right, top = src.bounds
    # left half "water", rest unlabelled -> background = class 0 ("forest")
    polys = gpd.GeoDataFrame({"cover": ["Water"]}, geometry=[box(left, bottom, left + 10, top)],
                             crs="EPSG:32622").to_crs("EPSG:4326")
    r = A.assess_map(pred, polys, field="cover")
    p, _ = _read(pred)
    truth = np.zeros_like(p)
    truth[:, :5] = 1  # 10 m = 5 pixels of 2 m
    ok = p != 255
    _check_against_sklearn(r, truth[ok], p[ok])
    bad = polys.assign(cover=["lava"])
    with pytest.raises(ClassFieldError, match="lava"):
        A.assess_map(pred, bad, field="cover")


def test_grid_mismatch_is_a_clear_error(tmp_path):
    m = V["multi"]
    ref, profile = _read(VECTORS / m["reference"])
    far = dict(profile, transform=profile["transform"] * Affine.translation(1e6, 0))
    with rasterio.open(tmp_path / "far.tif", "w", **far) as dst:
        dst.write(ref, 1)
    with pytest.raises(GridMismatchError, match="does not overlap"):
        A.assess_map(VECTORS / m["prediction"], tmp_path / "far.tif")
    plain = dict(driver="GTiff", width=10, height=10, count=1, dtype="uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "plain.tif", "w", **plain) as dst:
            dst.write(np.zeros((1, 10, 10), np.uint8))
    with pytest.raises(GridMismatchError, match="georeferencing"):
        A.assess_map(VECTORS / m["prediction"], tmp_path / "plain.tif")


def test_values_that_are_not_class_ids_are_refused(tmp_path):
    m = V["multi"]
    ref, profile = _read(VECTORS / m["reference"])
    bad = ref.astype(np.int16)
    bad[0, 0] = 300
    with rasterio.open(tmp_path / "bad.tif", "w", **dict(profile, dtype="int16")) as dst:
        dst.write(bad, 1)
    with pytest.raises(InputError, match="0..254"):
        A.assess_map(tmp_path / "bad.tif", VECTORS / m["reference"])


# ---- where and sample ---------------------------------------------------------------------

def test_where_boxes_as_table_csv_and_polygons(tmp_path):
    gpd = need_module("geopandas")
    from shapely.geometry import box

    m = V["multi"]
    pred, ref = VECTORS / m["prediction"], VECTORS / m["reference"]
    boxes = pd.DataFrame(m["boxes"]).assign(split="validation")
    off_map = dict(left=0.0, bottom=0.0, right=10.0, top=10.0, split="validation")
    table = pd.concat([boxes, pd.DataFrame([off_map])], ignore_index=True)
    r = A.assess_map(pred, ref, where=table)
    np.testing.assert_array_equal(r.matrix, m["confusion_in_boxes"])
    table.to_csv(tmp_path / "index.csv", index=False)
    np.testing.assert_array_equal(A.assess_map(pred, ref, where=tmp_path / "index.csv").matrix,
                                  m["confusion_in_boxes"])
    polys = gpd.GeoDataFrame(geometry=[box(b["left"], b["bottom"], b["right"], b["top"]) for b in m["boxes"]],
                             crs="EPSG:32622")
    polys.to_file(tmp_path / "boxes.gpkg")
    np.testing.assert_array_equal(A.assess_map(pred, ref, where=tmp_path / "boxes.gpkg").matrix,
                                  m["confusion_in_boxes"])
    with pytest.raises(NoOverlapError):
        A.assess_map(pred, ref, where=pd.DataFrame([off_map]))


def test_sample_points_per_area_are_seeded_and_drawn_from_the_areas():
    m = V["multi"]
    pred, ref = VECTORS / m["prediction"], VECTORS / m["reference"]
    boxes = pd.DataFrame(m["boxes"])
    a = A.assess_map(pred, ref, where=boxes, sample=4, seed=1, block_rows=5)
    b = A.assess_map(pred, ref, where=boxes, sample=4, seed=1)
    inside = np.array(m["confusion_in_boxes"])
    ids = a.class_ids
    assert a.overall["n"] == 4 * len(boxes)
    assert np.all(a.matrix <= inside[np.ix_(ids, ids)])  # every point is a pixel of the areas
    big = A.assess_map(pred, ref, where=boxes, sample=10_000)  # more than there are: all of them
    np.testing.assert_array_equal(big.matrix, inside)
    np.testing.assert_array_equal(
        A.assess_map(pred, ref, sample=50, seed=2, block_rows=5).matrix,
        A.assess_map(pred, ref, sample=50, seed=2, block_rows=50).matrix)
    draws = {tuple(A.assess_map(pred, ref, sample=50, seed=s).matrix.ravel()) for s in range(5)}
    assert len(draws) > 1
    assert A.assess_map(pred, ref, sample=50).overall["n"] == 50
    with pytest.raises(InputError, match="sample"):
        A.assess_map(pred, ref, sample=0)
    np.testing.assert_array_equal(a.matrix, b.matrix)


# ---- outputs ------------------------------------------------------------------------------

def test_png_and_csv_are_written_and_never_overwritten(tmp_path):
    w = V["worked"]
    png, csv = tmp_path / "cm.png", tmp_path / "cm.csv"
    r = A.assess_map(VECTORS / w["prediction"], VECTORS / w["reference"], png=png, csv=csv)
    back = pd.read_csv(csv, index_col=0)
    assert list(back.index) == w["classes"] == list(back.columns)
    np.testing.assert_array_equal(back.to_numpy(), w["confusion"])
    image = need_module("matplotlib.image").imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # a figure, not a blank canvas
    with pytest.raises(OutputExistsError):
        A.assess_map(VECTORS / w["prediction"], VECTORS / w["reference"], csv=csv)
    A.assess_map(VECTORS / w["prediction"], VECTORS / w["reference"], csv=csv, png=png, overwrite=True)
    table = r.table()
    assert list(table["class"][:3]) == w["classes"]
    assert float(table.loc[table["class"] == "kappa", "value"].iloc[0]) == pytest.approx(w["kappa"])
    d = r.as_dict()
    assert d["confusion"] == w["confusion"] and d["classes"] == w["classes"]


def test_assessment_does_not_import_tensorflow():
    code = ("import sys; from rsunet import assess_map, count_objects; "
            f"assess_map(r'{VECTORS / V['worked']['prediction']}', r'{VECTORS / V['worked']['reference']}'); "
            f"count_objects(r'{VECTORS / V['objects']['map']}', 1); "
            "sys.exit(1 if any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- count_objects ----------------------------------------------------------------------

@pytest.mark.parametrize("case", V["objects"]["cases"], ids=lambda c: f"cls{c['cls']}-c{c['connectivity']}-min{c['min_pixels']}")
def test_objects_on_a_hand_made_map(case):
    o = V["objects"]
    res = A.count_objects(VECTORS / o["map"], case["cls"], connectivity=case["connectivity"],
                          min_pixels=case["min_pixels"])
    assert sorted(res.objects["pixels"]) == case["pixels"]
    np.testing.assert_allclose(res.objects["area_m2"], res.objects["pixels"] * o["pixel_area_m2"])
    np.testing.assert_allclose(res.objects["area_ha"], res.objects["area_m2"] / 1e4)
    s = res.summary
    assert s["count"] == len(case["pixels"])
    assert s["valid_area_ha"] == pytest.approx(o["valid_area_ha"], rel=1e-12)
    assert s["objects_per_ha"] == pytest.approx(len(case["pixels"]) / o["valid_area_ha"], rel=1e-12)


def test_object_centroid_and_labels():
    o = V["objects"]
    res = A.count_objects(VECTORS / o["map"], 1, keep_labels=True)
    square = res.objects.loc[res.objects["pixels"] == 9].iloc[0]
    assert (square["x"], square["y"]) == pytest.approx(tuple(o["square_centroid"]), abs=1e-9)
    np.testing.assert_array_equal(np.bincount(res.labels.ravel())[1:], res.objects["pixels"])
    with pytest.raises(InputError, match="connectivity"):
        A.count_objects(VECTORS / o["map"], 1, connectivity=6)
    with pytest.raises(InputError, match="min_pixels"):
        A.count_objects(VECTORS / o["map"], 1, min_pixels=0)


def _gdal_buildings(tmp_path):
    """Massachusetts buildings burnt by gdal_rasterize on their image's grid (0/1)."""
    image = shared_path("nrcan", "massachusetts_22978945_15_rgb.tif")
    polys = shared_path("nrcan", "massachusetts_22978945_15_buildings.gpkg")
    return _gdal_rasterize(image, polys, tmp_path / "buildings.tif", "-burn", "1")


def _gdal_rasterize(image, polys, out, *burn):
    """Polygons burnt by gdal_rasterize on an image's grid (Byte, 0 where none): an
    independent route to rsunet's own rasterization."""
    with rasterio.open(image) as src:
        b, w, h = src.bounds, src.width, src.height
    subprocess.run(["gdal_rasterize", "-q", "-init", "0", *burn, "-ot", "Byte",
                    "-te", *map(repr, [b.left, b.bottom, b.right, b.top]), "-ts", str(w), str(h),
                    str(polys), str(out)], check=True)
    return out


def test_real_buildings_counted_as_gdal_traces_them(tmp_path):
    """scipy.ndimage.label vs GDAL's polygon tracing (rasterio.features.shapes)."""
    from rasterio.features import shapes

    label = _gdal_buildings(tmp_path)
    values, profile = _read(label)
    counts = {}
    for connectivity in (4, 8):
        res = A.count_objects(label, 1, connectivity=connectivity)
        traced = [v for _, v in shapes(values, mask=values == 1, connectivity=connectivity)]
        counts[connectivity] = res.summary["count"]
        assert res.summary["count"] == len(traced) > 50
        assert res.objects["pixels"].sum() == (values == 1).sum()
        t = profile["transform"]
        assert res.summary["valid_area_ha"] == pytest.approx(values.size * abs(t.a * t.e) / 1e4)
        assert res.summary["objects_per_ha"] == pytest.approx(len(traced) / res.summary["valid_area_ha"])
    assert counts[8] <= counts[4]
    small = A.count_objects(label, 1, min_pixels=50)
    sizes = np.bincount(need_module("scipy.ndimage").label(values == 1, np.ones((3, 3)))[0].ravel())[1:]
    assert small.summary["count"] == int((sizes >= 50).sum())


def test_geographic_areas_agree_with_an_equal_area_projection(tmp_path):
    gpd = need_module("geopandas")
    from shapely.geometry import box

    t = Affine(1e-4, 0, -55.0, 0, -1e-4, -3.0)  # ~11 m pixels near the equator
    data = np.zeros((50, 40), np.uint8)
    data[10:30, 5:25] = 1
    with rasterio.open(tmp_path / "geo.tif", "w", driver="GTiff", width=40, height=50, count=1,
                       dtype="uint8", crs="EPSG:4326", transform=t, nodata=255) as dst:
        dst.write(data, 1)
    res = A.count_objects(tmp_path / "geo.tif", 1)
    assert res.summary["area_method"] == "geodesic"
    left, top = t * (5, 10)
    right, bottom = t * (25, 30)
    equal_area = gpd.GeoSeries([box(left, bottom, right, top)], crs="EPSG:4326").to_crs("EPSG:6933").area[0]
    assert res.objects["area_m2"].iloc[0] == pytest.approx(equal_area, rel=1e-4)


# ---- polygonize -------------------------------------------------------------------------

def test_polygonize_round_trips_through_rasterize(tmp_path):
    gpd = need_module("geopandas")
    from rasterio.features import rasterize

    m = V["multi"]
    src_path = VECTORS / m["prediction"]
    values, profile = _read(src_path)
    out = tmp_path / "map.gpkg"
    gdf = A.polygonize(src_path, out, classes={0: "a", 1: "b", 2: "c", 3: "d"})
    back = gpd.read_file(out)
    assert len(back) == len(gdf) > 4
    assert back.crs.to_epsg() == 32622
    assert set(back["class_id"]) == {0, 1, 2, 3}  # 255 made no polygon
    assert dict(zip(back["class_id"], back["class"]))[2] == "c"
    burnt = rasterize(zip(back.geometry, back["class_id"]), out_shape=values.shape,
                      transform=profile["transform"], fill=255, dtype="uint8")
    np.testing.assert_array_equal(burnt, values)
    with pytest.raises(OutputExistsError):
        A.polygonize(src_path, out)
    assert not list(tmp_path.glob(".*partial*"))
    A.polygonize(src_path, out, overwrite=True, connectivity=8)
    assert len(gpd.read_file(out)) < len(back)  # corner neighbours join regions


def test_polygon_areas_are_geodesic_in_a_geographic_crs(tmp_path):
    from rsunet.example import example_data
    from rsunet.samples import make_mask

    data = example_data()["test"]
    mask = make_mask(data["images"][0], data["masks"][0], tmp_path / "m.tif",
                     classes={1: "forest", 2: "background"})["path"]
    polys = A.polygonize(mask, tmp_path / "p.gpkg")
    assert polys.crs.is_geographic
    by_rows = A.count_objects(mask, 1).objects["area_m2"].sum()
    traced = polys.loc[polys["class_id"] == 1, "area_m2"].sum()
    assert traced == pytest.approx(by_rows, rel=1e-3)
    assert 1e5 < traced < 512 * 512 * 11 * 11  # square metres, not square degrees
