"""Stratified sampling, area-adjusted accuracy (Olofsson et al. 2014) and map comparison.

Expected values come from elsewhere: the published worked example of Olofsson et al.
(2014) at its printed precision, the paper's equations written out term by term in
tools/make_test_vectors.py, numpy counts of the vector maps, an equal-area projection
for geodesic areas, a hand-computed McNemar table, and a simulation whose true
difference is known. Mirrored by tests/testthat/test-estimation.R.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio

from conftest import VECTORS, vectors
from rsunet import assessment as A
from rsunet import estimation as E
from rsunet.errors import ClassFieldError, GridMismatchError, InputError, OutputExistsError, RsunetWarning
from rsunet.io import write_raster

V = vectors("estimation")


def _read(name):
    with rasterio.open(VECTORS / name) as src:
        return src.read(1), src.transform


# ---- the published worked example -----------------------------------------------------------

def _olofsson(**kwargs):
    o = V["olofsson"]
    return A.assess_map(VECTORS / o["map"], VECTORS / o["points"], design="stratified", **kwargs)


def test_olofsson_worked_example_to_the_printed_precision():
    o, pub = V["olofsson"], V["olofsson"]["published"]
    r = _olofsson()
    pc = r.per_class
    assert list(pc["class"]) == o["classes"]
    np.testing.assert_array_equal(pc["mapped_ha"], np.array(o["mapped_pixels"]) * o["pixel_ha"])
    np.testing.assert_array_equal(np.round(pc["area_ha"]), pub["area_ha"])
    np.testing.assert_array_equal(np.round(pc["area_ci_ha"]), pub["area_ci_ha"])
    np.testing.assert_array_equal(np.round(pc["users_accuracy"], 2), pub["users_accuracy"])
    np.testing.assert_array_equal(np.round(pc["users_ci"], 2), pub["users_ci"])
    np.testing.assert_array_equal(np.round(pc["producers_accuracy"], 2), pub["producers_accuracy"])
    assert round(r.overall["overall_accuracy"], 2) == pub["overall_accuracy"]
    assert round(r.overall["overall_accuracy_ci"], 2) == pub["overall_accuracy_ci"]
    assert r.overall["n"] == 640 and r.overall["total_area_ha"] == o["total_ha"]
    assert r.overall["area_method"] == "planar"


def test_olofsson_matches_the_papers_equations_written_out():
    eq = V["olofsson"]["equations"]
    r = _olofsson()
    pc = r.per_class
    for key in ("users_accuracy", "users_se", "producers_accuracy", "producers_se", "area_ha", "area_se_ha"):
        np.testing.assert_allclose(pc[key], eq[key], rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(pc["users_ci"], 1.96 * np.array(eq["users_se"]), rtol=1e-10)
    np.testing.assert_allclose(pc["producers_ci"], 1.96 * np.array(eq["producers_se"]), rtol=1e-10)
    assert r.overall["overall_accuracy"] == pytest.approx(eq["overall_accuracy"], rel=1e-12)
    assert r.overall["overall_accuracy_se"] == pytest.approx(eq["overall_accuracy_se"], rel=1e-10)
    np.testing.assert_allclose(r.error_matrix.to_numpy(), eq["error_matrix"], rtol=1e-10, atol=1e-15)
    assert r.error_matrix.to_numpy().sum() == pytest.approx(1.0, abs=1e-12)
    # the sample counts, reference in rows (the transpose of the paper's table)
    np.testing.assert_array_equal(r.confusion.to_numpy(), np.array(V["olofsson"]["table_map_rows"]).T)


def test_olofsson_from_the_bare_table_and_from_class_names():
    o, eq = V["olofsson"], V["olofsson"]["equations"]
    bare = E.estimate_stratified(np.array(o["table_map_rows"]).T,
                                 np.array(o["mapped_pixels"]) * 100 * 0.09)
    np.testing.assert_allclose(bare.per_class["area_ha"], eq["area_ha"], rtol=1e-10)
    by_name = _olofsson(field="reference_name")
    np.testing.assert_allclose(by_name.per_class["producers_se"], eq["producers_se"], rtol=1e-10)


def test_stratified_outputs_and_refusals(tmp_path):
    o = V["olofsson"]
    r = _olofsson(png=tmp_path / "area.png", csv=tmp_path / "area.csv")
    assert (tmp_path / "area.png").stat().st_size > 0
    assert "area_ha" in (tmp_path / "area.csv").read_text()
    with pytest.raises(OutputExistsError):
        _olofsson(png=tmp_path / "area.png")
    assert set(r.as_dict()) >= {"per_class", "overall", "error_matrix"}
    with pytest.raises(InputError, match="census"):   # a raster reference is a census
        A.assess_map(VECTORS / o["map"], VECTORS / o["map"], design="stratified")
    with pytest.raises(ClassFieldError, match="label"):
        _olofsson(field="label")
    with pytest.raises(InputError, match="where and sample"):
        _olofsson(sample=5)
    with pytest.raises(InputError, match="design"):
        A.assess_map(VECTORS / o["map"], VECTORS / o["points"], design="random")
    import geopandas as gpd

    pts = gpd.read_file(VECTORS / o["points"])
    with pytest.raises(InputError, match="no sample point"):   # a stratum without points
        A.assess_map(VECTORS / o["map"], pts[pts.map_class != 1], design="stratified")
    # unlabelled points are left out, with a warning
    pts["reference"] = pts["reference"].astype("Int64")
    pts.loc[:9, "reference"] = pd_na()
    with pytest.warns(RsunetWarning, match="10 without a reference class"):
        fewer = A.assess_map(VECTORS / o["map"], pts, design="stratified")
    assert fewer.overall["n"] == 630


def pd_na():
    import pandas as pd

    return pd.NA


def test_geodesic_class_areas_in_a_geographic_crs():
    g = V["geographic"]
    with rasterio.open(VECTORS / g["map"]) as src:
        pixels, area, method = E.class_areas(src)
    assert method == "geodesic"
    np.testing.assert_allclose(area[:3] / 1e4, g["area_ha"], rtol=1e-6)


# ---- sample_points ------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["proportional", "equal", "given"])
def test_sample_points_hits_the_counts_on_valid_pixels(tmp_path, case):
    s = V["strata"]
    values, transform = _read(s["map"])
    spec = s[case]
    kwargs = dict(allocation=spec["allocation"]) if case == "given" else dict(n=spec["n"], allocation=case)
    gdf = E.sample_points(VECTORS / s["map"], tmp_path / "p.gpkg", seed=1, block_rows=7, **kwargs)
    counts = np.bincount(gdf["map_class"], minlength=4)
    np.testing.assert_array_equal(counts, spec["counts"])
    rows, cols = gdf["row"].to_numpy(), gdf["col"].to_numpy()
    assert ((rows >= 0) & (rows < values.shape[0]) & (cols >= 0) & (cols < values.shape[1])).all()
    np.testing.assert_array_equal(values[rows, cols], gdf["map_class"])   # valid, of its stratum
    assert len(set(zip(rows, cols))) == len(gdf)                          # without replacement
    x, y = transform * (cols + 0.5, rows + 0.5)                           # pixel centres
    np.testing.assert_allclose(gdf.geometry.x, x)
    np.testing.assert_allclose(gdf.geometry.y, y)
    import geopandas as gpd

    back = gpd.read_file(tmp_path / "p.gpkg")
    assert back.crs == gdf.crs and "reference" in back.columns and back["reference"].isna().all()


def test_sample_points_is_seeded_and_reads_a_reference(tmp_path):
    s = V["strata"]
    a = E.sample_points(VECTORS / s["map"], tmp_path / "a.gpkg", n=50, seed=3)
    b = E.sample_points(VECTORS / s["map"], tmp_path / "b.gpkg", n=50, seed=3, block_rows=5)
    c = E.sample_points(VECTORS / s["map"], tmp_path / "c.gpkg", n=50, seed=4)
    np.testing.assert_array_equal(a[["row", "col"]], b[["row", "col"]])
    assert not np.array_equal(a[["row", "col"]], c[["row", "col"]])
    # the map as its own reference: every point's reference is its map class
    d = E.sample_points(VECTORS / s["map"], tmp_path / "d.gpkg", n=50, seed=3, reference=VECTORS / s["map"])
    np.testing.assert_array_equal(d["reference"].to_numpy(int), d["map_class"])


def test_sample_points_refusals(tmp_path):
    s = V["strata"]
    m = VECTORS / s["map"]
    with pytest.warns(RsunetWarning, match="fewer valid pixels"):
        short = E.sample_points(m, tmp_path / "s.gpkg", allocation={3: 12})
    assert len(short) == 10
    for kwargs, match in ((dict(), "n"), (dict(n=0), "positive"), (dict(n=5, allocation="optimal"), "allocation"),
                          (dict(n=5, allocation={0: 2}), "sum"), (dict(allocation={7: 2}), "does not map"),
                          (dict(n=2.5), "whole number")):
        with pytest.raises(InputError, match=match):
            E.sample_points(m, tmp_path / "x.gpkg", **kwargs)
    assert not (tmp_path / "x.gpkg").exists()
    with pytest.raises(OutputExistsError):
        E.sample_points(m, tmp_path / "s.gpkg", n=5)
    write_raster(tmp_path / "two.tif", np.zeros((2, 8, 8), np.uint8), (1, 0, 0, 0, -1, 8), "EPSG:32633")
    with pytest.raises(InputError, match="2 bands"):
        E.sample_points(tmp_path / "two.tif", tmp_path / "y.gpkg", n=5)


def test_sampled_then_assessed_closes_the_loop(tmp_path):
    """sample_points -> reference from a label raster -> assess_map(design='stratified')."""
    s = V["strata"]
    truth = E.sample_points(VECTORS / s["map"], tmp_path / "p.gpkg", n=40, allocation="equal",
                            reference=VECTORS / s["map"])
    r = A.assess_map(VECTORS / s["map"], tmp_path / "p.gpkg", design="stratified")
    assert r.overall["overall_accuracy"] == 1.0 and r.overall["n"] == len(truth)
    np.testing.assert_allclose(r.per_class["area_ha"], r.per_class["mapped_ha"], rtol=1e-12)
    np.testing.assert_array_equal(r.per_class["area_ci_ha"], 0.0)


# ---- compare_maps ----------------------------------------------------------------------------

def test_mcnemar_on_the_hand_computed_table(tmp_path):
    m = V["mcnemar"]
    c = E.compare_maps(VECTORS / m["a"], VECTORS / m["b"], VECTORS / m["reference"], block=8,
                       thin=m["thin"], n_boot=200, seed=0, png=tmp_path / "cmp.png")
    for key in ("both_right", "a_only", "b_only", "both_wrong"):
        assert c.mcnemar[key] == m[key], key
    assert c.mcnemar["statistic"] == pytest.approx(m["statistic"], rel=1e-12)
    assert c.mcnemar["p_value"] == pytest.approx(m["p_value"], rel=1e-9)
    t = c.table.set_index("metric")
    assert t.loc["overall_accuracy", "a"] == pytest.approx(m["overall_accuracy_a"], rel=1e-12)
    assert t.loc["overall_accuracy", "b"] == pytest.approx(m["overall_accuracy_b"], rel=1e-12)
    assert (t["lower"] <= t["difference"]).all() and (t["difference"] <= t["upper"]).all()
    assert c.settings["n_blocks"] == 25 and c.settings["n"] == 1600
    assert (tmp_path / "cmp.png").stat().st_size > 0
    # kappa and F1 as assess_map computes them for each map
    for which, col in (("a", "a"), ("b", "b")):
        one = A.assess_map(VECTORS / m[which], VECTORS / m["reference"])
        assert t.loc["kappa", col] == pytest.approx(one.overall["kappa"], rel=1e-12)
        np.testing.assert_allclose(t.loc[[f"f1_class_{i}" for i in one.class_ids], col],
                                   one.per_class["f1"], rtol=1e-12)
    assert E.mcnemar_test(0, 0)["p_value"] == 1.0


def test_several_scenes_pool_their_blocks():
    m = V["mcnemar"]
    a, b, ref = (VECTORS / m[k] for k in ("a", "b", "reference"))
    one = E.compare_maps(a, b, ref, block=8, thin=m["thin"], n_boot=50)
    two = E.compare_maps([a, a], [b, b], [ref, ref], block=8, thin=m["thin"], n_boot=50)
    np.testing.assert_allclose(two.table[["a", "b", "difference"]], one.table[["a", "b", "difference"]],
                               rtol=1e-12)
    assert two.settings["n_blocks"] == 2 * one.settings["n_blocks"] and two.settings["n"] == 2 * one.settings["n"]
    assert two.mcnemar["a_only"] == 2 * m["a_only"] and len(two.disagreement) == 2
    with pytest.raises(InputError, match="three lists"):
        E.compare_maps([a, a], [b], [ref, ref])


def test_compare_maps_refusals(tmp_path):
    m = V["mcnemar"]
    with pytest.raises(GridMismatchError):
        E.compare_maps(VECTORS / m["a"], VECTORS / V["strata"]["map"], VECTORS / m["reference"])
    with pytest.raises(InputError, match="positive"):
        E.compare_maps(VECTORS / m["a"], VECTORS / m["b"], VECTORS / m["reference"], block=0)


def _simulated_pair(tmp_path, rng, size=96, clump=8, error_a=0.10, error_b=0.20):
    """A reference and two maps whose errors come in ``clump`` x ``clump`` patches, with
    expected accuracies 1 - error_a and 1 - error_b (true OA difference error_b - error_a)."""
    truth = rng.integers(0, 3, size=(size, size)).astype(np.uint8)
    k = size // clump

    def erred(p):
        wrong = np.kron(rng.random((k, k)) < p, np.ones((clump, clump), bool))
        return np.where(wrong, (truth + 1) % 3, truth).astype(np.uint8)

    t = (10, 0, 500000, 0, -10, 7000000)
    paths = []
    for name, arr in (("ref", truth), ("a", erred(error_a)), ("b", erred(error_b))):
        paths.append(write_raster(tmp_path / f"{name}.tif", arr, t, "EPSG:32622", 255, overwrite=True))
    return paths, error_b - error_a


def test_block_bootstrap_covers_the_true_difference_at_the_nominal_rate(tmp_path):
    """80 simulated map pairs (96 x 96 pixels, errors in 8 x 8 patches, 300 replicates,
    24-pixel blocks): the 95 % interval of the OA difference must cover the true
    difference in at least 68 of 80 (0.85; over 150 pairs it covered 0.93, and
    P(X < 68) = 0.004 for X ~ Binomial(80, 0.93): a percentile interval from 16 blocks
    is a little narrow). Pixel-wise resampling (block = 1) ignores the patches and
    must cover far less often (at most half): the test tells a sound interval from a
    naive one."""
    rng = np.random.default_rng(20261201)
    covered, replicates = {24: 0, 1: 0}, 80
    for _ in range(replicates):
        (ref, a, b), truth = _simulated_pair(tmp_path, rng)
        for block in covered:
            t = E.compare_maps(a, b, ref, block=block, n_boot=300, seed=int(rng.integers(1 << 31)))
            oa = t.table.set_index("metric").loc["overall_accuracy"]
            covered[block] += oa["lower"] <= truth <= oa["upper"]
    assert covered[24] >= 68, covered
    assert covered[1] <= replicates // 2, covered


def test_command_line(tmp_path, capsys):
    from rsunet.cli import main

    o, s = V["olofsson"], V["strata"]
    assert main(["assess", str(VECTORS / o["map"]), str(VECTORS / o["points"]), "--design", "stratified"]) == 0
    assert "stable non-forest" in capsys.readouterr().out
    assert main(["sample", str(VECTORS / s["map"]), str(tmp_path / "p.gpkg"), "--allocation", "{0: 4, 2: 3}"]) == 0
    assert (tmp_path / "p.gpkg").exists()
    m = V["mcnemar"]
    assert main(["compare", str(VECTORS / m["a"]), str(VECTORS / m["b"]), str(VECTORS / m["reference"]),
                 "--block", "8", "--n-boot", "50"]) == 0
    assert "McNemar" in capsys.readouterr().out
    assert main(["sample", str(VECTORS / s["map"]), str(tmp_path / "q.gpkg")]) == 2   # no n: a user error


def test_accuracy_page_runs(tmp_path, monkeypatch):
    """Every Python block of docs/accuracy.md, in order, in an empty folder."""
    import re

    from conftest import ROOT

    text = (ROOT / "docs" / "accuracy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, block in enumerate(blocks):
            exec(compile(block, f"accuracy.md[block {i}]", "exec"), namespace)
    for name in ("area.png", "area.csv", "comparison.png", "to_label.gpkg", "points.gpkg"):
        assert (tmp_path / name).exists(), name
    area, census = namespace["area"], namespace["census"]
    # the census accuracy lies within the sample estimate's interval (a 95 % interval: this
    # seed's draw is one where it does)
    o = area.overall
    assert abs(o["overall_accuracy"] - census.overall["overall_accuracy"]) <= o["overall_accuracy_ci"]
    assert len(namespace["boxes"]) == 10
