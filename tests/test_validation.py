"""cross_validate: folds that never share a scene, figures that pool back to assess_map.

Mirrored by tests/testthat/test-validation.R on the same vector (validation.json): four
bundled chips, two folds, tiny models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio

from conftest import need_module, shared_path, vectors
from rsunet.assessment import assess_map
from rsunet.errors import InputError, OutputExistsError, OutputIsInputError
from rsunet.example import example_data
from rsunet.validation import assign_folds, cross_validate

need_module("tensorflow")
V = vectors("validation")


def config():
    data = example_data()
    pairs = {p.stem: (p, m) for part in ("train", "test")
             for p, m in zip(data[part]["images"], data[part]["masks"])}
    images, labels = zip(*(pairs[c] for c in V["chips"]))
    return dict(V["config"], scenes={"train": {"images": [str(p) for p in images],
                                               "labels": [str(p) for p in labels]}})


@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "cv"
    return cross_validate(config(), out, folds=V["folds"], progress=False)


def _fold_maps(out, k, model):
    return sorted((out / f"fold-{k}" / "maps" / model).glob("*.tif"))


def test_no_scene_is_both_trained_on_and_assessed_in_a_fold(cv):
    mapped = []
    for k in range(1, V["folds"] + 1):
        index = pd.read_csv(cv.out / f"fold-{k}" / "index.csv")
        trained = set(index.loc[index["split"].isin(["train", "validation"]), "scene"])
        held = set(index.loc[index["split"] == "test", "scene"])
        assert trained and held and not trained & held
        for model in ("unet", "random_forest"):
            assert {p.stem for p in _fold_maps(cv.out, k, model)} == held
        assert set(cv.folds.loc[cv.folds["fold"] == k, "scene"]) == held
        mapped += sorted(held)
    assert sorted(mapped) == sorted(V["chips"])  # every scene mapped exactly once


def test_pooled_and_fold_figures_equal_assess_map_on_the_fold_maps(cv):
    masks = {s: cv.out / "masks" / f"{s}.tif" for s in V["chips"]}
    for model in ("unet", "random_forest"):
        maps = [p for k in range(1, V["folds"] + 1) for p in _fold_maps(cv.out, k, model)]
        pooled = assess_map(maps, [masks[p.stem] for p in maps])
        row = cv.summary[(cv.summary["model"] == model)].set_index("metric")
        for metric in ("macro_f1", "overall_accuracy", "kappa", "mean_iou"):
            assert row.loc[metric, "pooled"] == pytest.approx(pooled.overall[metric], abs=1e-12)
        for k in range(1, V["folds"] + 1):
            fold_maps = _fold_maps(cv.out, k, model)
            fold = assess_map(fold_maps, [masks[p.stem] for p in fold_maps])
            got = cv.scores[(cv.scores["model"] == model) & (cv.scores["fold"] == k)].set_index("scene")
            assert got.loc["all", "macro_f1"] == pytest.approx(fold.overall["macro_f1"], abs=1e-12)
            assert got.loc["all", "pixels"] == fold.overall["n"]
            for _, s in fold.per_scene.iterrows():
                assert got.loc[s["scene"], "overall_accuracy"] == pytest.approx(s["overall_accuracy"], abs=1e-12)


def test_the_summary_is_mean_and_sd_over_folds(cv):
    per_fold = cv.scores[cv.scores["scene"] == "all"]
    for (model, metric), row in cv.summary.set_index(["model", "metric"]).iterrows():
        v = per_fold.loc[per_fold["model"] == model, metric].to_numpy(float)
        assert row["mean"] == pytest.approx(v.mean()) and row["sd"] == pytest.approx(v.std(ddof=1))
        assert row["folds"] == V["folds"]
    assert {"f1_forest", "f1_background"} <= set(cv.summary["metric"])
    assert (cv.out / "figures" / "cross_validation.png").stat().st_size > 10_000
    assert "macro F1" in repr(cv)


def test_a_rerun_continues_and_other_settings_are_refused(cv):
    models = sorted((cv.out / "fold-1" / "models").glob("*.*"))
    before = {p: p.stat().st_mtime_ns for p in models}
    again = cross_validate(config(), cv.out, folds=V["folds"], progress=False)
    pd.testing.assert_frame_equal(again.scores, cv.scores)
    assert {p: p.stat().st_mtime_ns for p in models} == before  # nothing retrained
    with pytest.raises(OutputExistsError, match="other settings"):
        cross_validate(config(), cv.out, folds=3, progress=False)


def test_block_folds_hold_out_blocks_and_purge_the_patches_touching_them(cv, tmp_path):
    block = V["block"]
    with pytest.raises(OutputIsInputError):  # out holds the source: refused, nothing touched
        cross_validate(cv.out / "patches", cv.out, folds=2, by="block", config=V["config"])
    assert (cv.out / "scores.csv").exists()
    res = cross_validate(cv.out / "patches", tmp_path / "blocks", folds=V["folds"], by="block",
                         block=block, models="random_forest", config=V["config"], progress=False)
    cell = block * 128
    for k in range(1, V["folds"] + 1):
        index = pd.read_csv(tmp_path / "blocks" / f"fold-{k}" / "index.csv")
        held = res.folds[res.folds["fold"] == k]
        cells = {(s, int(b.split(":")[1]), int(b.split(":")[2])) for s, b in zip(held["scene"], held["block"])}
        used = index[index["split"].isin(["train", "validation"])]
        for _, p in used.iterrows():  # brute force: no used patch shares a pixel with a held-out cell
            rows = range(p["row_off"] // cell, (p["row_off"] + p["height"] - 1) // cell + 1)
            cols = range(p["col_off"] // cell, (p["col_off"] + p["width"] - 1) // cell + 1)
            assert not any((p["scene"], r, c) in cells for r in rows for c in cols)
        for path in _fold_maps(tmp_path / "blocks", k, "random_forest"):
            with rasterio.open(path) as src:
                a = src.read(1)
            inside = np.zeros(a.shape, bool)
            for s, r, c in cells:
                if s == path.stem:
                    inside[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = True
            assert (a[~inside] == 255).all() and (a[inside] != 255).all()
    # each block is held out exactly once
    assert not res.folds.duplicated(["scene", "block"]).any()


def test_the_figure_of_one_model_shows_its_scenes_worst_first(cv, tmp_path):
    from rsunet.validation import plot_cross_validation

    one = cv.scores[cv.scores["model"] == cv.scores["model"].iloc[0]]
    (tmp_path / "scores.csv").write_text(one.to_csv(index=False))
    fig = plot_cross_validation(tmp_path)
    folds_ax, scenes_ax = fig.axes
    assert folds_ax.get_title() == "each fold" and scenes_ax.get_title() == "each scene, worst first"
    widths = [bar.get_width() for bar in scenes_ax.patches]
    assert len(widths) == (one["scene"] != "all").sum() and widths == sorted(widths)


def _tiny_unet(case, folder):
    """The U-Net of a single-cover case: trained on the first chips of the published set."""
    from amazon_patches import amazon_patch_set
    from rsunet.training import train_unet

    patches = amazon_patch_set(folder, n_images=case["n_images"], size=64)
    train_unet(patches, folder / "unet.keras", progress=False, **case["train"])
    return folder / "unet.keras"


def _fraction_mapped_as(model, chip, window, cls, folder):
    """The fraction of a window of a published chip that ``model`` maps as class ``cls``."""
    from rsunet.io import read_raster, write_raster
    from rsunet.prediction import predict_raster

    part = read_raster(shared_path("amazon", "train", "images", f"{chip}.tiff"), window=window)
    scene = write_raster(folder / f"{chip}.tif", part.data, part.transform, part.crs)
    out = predict_raster(model, scene, folder / f"{chip}_map.tif", window=256, overlap=0, progress=False)
    return (read_raster(out).data[0] == cls).mean()


def test_a_single_cover_scene_stays_one_class_with_the_default_normalisation(tmp_path):
    """An all-forest window of a real chip, mapped by a U-Net trained with the default
    normalisation, is forest, not a mosaic of false clearings."""
    case = V["single_cover"]
    model = _tiny_unet(case, tmp_path)
    assert _fraction_mapped_as(model, case["chip"], case["window"], case["class"], tmp_path) \
        >= case["min_fraction"]


def test_scene_joint_keeps_an_all_forest_window_and_an_all_pasture_chip_one_class(tmp_path):
    """Scaled per scene with all bands together, a scene of one land cover keeps its
    colour: forest stays forest and a pale pasture stays non-forest (a per-band stretch
    reads the window as clearings, and part of the pasture as forest)."""
    case = V["single_cover_joint"]
    model = _tiny_unet(case, tmp_path)
    for scene in case["scenes"]:
        got = _fraction_mapped_as(model, scene["chip"], scene["window"], scene["class"], tmp_path)
        assert got >= scene["min_fraction"], scene["chip"]


def test_a_new_model_each_fold_does_not_print_tensorflows_retracing_advice():
    """cross_validate trains and maps a new model each fold (train_unet and predict_raster
    make a new network each call), which TensorFlow counts as retracing; inside those
    calls that warning is hidden and other TensorFlow messages pass."""
    import logging

    import tensorflow as tf

    from rsunet.quiet import new_models_expected

    def new_function_each_time():
        for n in range(1, 8):
            tf.function(_double, autograph=False)(tf.zeros((n,)))

    logger, seen = logging.getLogger("tensorflow"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        new_function_each_time()
        assert any("triggered tf.function retracing" in m for m in seen)  # TF would print it
        seen.clear()
        with new_models_expected():
            new_function_each_time()
            logger.warning("another message")
        assert seen == ["another message"]
        logger.warning("1 out of 1 calls triggered tf.function retracing")  # after: shown
        assert seen[-1].endswith("triggered tf.function retracing")
    finally:
        logger.removeHandler(handler)


def _double(x):
    return x * 2


def test_assign_folds_is_balanced_seeded_and_keeps_scenes_whole():
    index = pd.DataFrame({"scene": np.repeat(list("abcdefg"), [5, 5, 4, 4, 3, 3, 2]),
                          "row_off": 0, "col_off": 0, "width": 64, "height": 64})
    folds = assign_folds(index, folds=3, seed=1)
    assert (index.groupby("scene")["scene"].size() > 0).all()
    assert (folds.groupby(index["scene"]).nunique() == 1).all()  # a scene in one fold
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= 5
    pd.testing.assert_series_equal(folds, assign_folds(index, folds=3, seed=1))
    assert len({tuple(assign_folds(index, folds=3, seed=s)) for s in range(10)}) > 1  # the seed decides
    with pytest.raises(InputError, match="by='block'"):
        assign_folds(index, folds=8)


def test_clear_errors(tmp_path):
    with pytest.raises(InputError, match="by must be"):
        cross_validate(config(), tmp_path / "a", by="pixel")
    with pytest.raises(InputError, match="at least 2"):
        cross_validate(config(), tmp_path / "b", folds=1)
    with pytest.raises(InputError, match="models"):
        cross_validate(config(), tmp_path / "c", models=["svm"])
    with pytest.raises(InputError, match="did you mean 'epochs'"):  # checked before anything runs
        cross_validate(dict(config(), train_unet={"epoch": 3}), tmp_path / "e", folds=2)
    with pytest.raises(InputError, match="5 folds need at least 5 scenes"):
        cross_validate(config(), tmp_path / "d", folds=5, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything was written
