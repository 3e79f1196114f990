"""The pixel Random Forest baseline on the bundled Amazon chips.

Mirrored by tests/testthat/test-baseline.R.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from rsunet import baseline
from rsunet.errors import InputError, ModelFormatError
from rsunet.example import example_data
from rsunet.patches import PatchSet, make_patches, split_patches
from rsunet.prediction import predict_raster
from rsunet.samples import make_mask

AMAZON = {1: "forest", 2: "background"}


@pytest.fixture(scope="module")
def patch_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baseline")
    data = example_data()["train"]
    masks = [make_mask(img, png, tmp / f"{img.stem}_mask.tif", classes=AMAZON)["path"]
             for img, png in zip(data["images"][:2], data["masks"][:2])]
    make_patches(data["images"][:2], masks, tmp / "patches", size=128, progress=False)
    split_patches(tmp / "patches", fractions=(0.75, 0.25), block=2, seed=1)
    return tmp / "patches"


def test_sampled_pixels_are_balanced_labelled_training_pixels(patch_dir):
    ps = PatchSet(patch_dir)
    X, y = baseline.sample_pixels(ps, "train", n_per_class=700, seed=3)
    train = ps.index.loc[ps.index["split"] == "train", "patch_id"]
    _, masks = ps.read(list(train))
    available = {c: int((masks == c).sum()) for c in (0, 1)}
    assert X.shape == (len(y), 3) and X.dtype == np.float32
    assert set(np.unique(y)) <= {0, 1} and 255 not in y
    for c in (0, 1):
        assert (y == c).sum() == min(700, available[c])


def test_forest_maps_a_scene_exactly_as_it_classifies_its_pixels(patch_dir, tmp_path):
    model = baseline.train_baseline(patch_dir, tmp_path / "rf.joblib", n_per_class=400,
                                    n_trees=10, seed=0)
    image = example_data()["test"]["images"][0]
    out = predict_raster(tmp_path / "rf.joblib", image, tmp_path / "map.tif",
                         window=256, overlap=32, progress=False)
    with rasterio.open(image) as src:
        pixels = np.moveaxis(src.read(), 0, -1).reshape(-1, src.count).astype(np.float32)
        shape = (src.height, src.width)
    expected = model.forest.classes_[model.forest.predict_proba(pixels).argmax(1)]
    with rasterio.open(out) as dst:
        np.testing.assert_array_equal(dst.read(1), expected.reshape(shape))


def test_forest_beats_chance_on_held_aside_reference(patch_dir, tmp_path):
    model = baseline.train_baseline(patch_dir, n_per_class=1000, n_trees=20, seed=0)
    data = example_data()["test"]
    ref = make_mask(data["images"][0], data["masks"][0], tmp_path / "ref.tif",
                    classes=AMAZON)["path"]
    with rasterio.open(data["images"][0]) as src, rasterio.open(ref) as r:
        x = np.moveaxis(src.read(), 0, -1)[np.newaxis]
        truth = r.read(1)
    pred = model.predict_probabilities(x)[0].argmax(-1)
    assert (pred == truth).mean() > 0.6


def test_save_load_roundtrip_and_errors(patch_dir, tmp_path):
    model = baseline.train_baseline(patch_dir, tmp_path / "rf.joblib", n_per_class=200,
                                    n_trees=5, seed=0)
    again = baseline.load_baseline(tmp_path / "rf.joblib")
    x = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3))
    np.testing.assert_array_equal(model.predict_probabilities(x), again.predict_probabilities(x))
    np.testing.assert_allclose(again.predict_probabilities(x).sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ModelFormatError):
        baseline.load_baseline(tmp_path / "none.joblib")
    with pytest.raises(InputError, match="no patches in split"):
        baseline.sample_pixels(PatchSet(patch_dir), "test")


def test_a_scene_normalised_forest_maps_a_scene_whatever_its_gain_and_offset(patch_dir, tmp_path):
    from conftest import rescaled_copy

    model = baseline.train_baseline(patch_dir, tmp_path / "rf.joblib", n_per_class=400,
                                    n_trees=10, normalize="scene", seed=0)
    assert model.normalization == {"normalize": "scene", "scene": {"q": [2.0, 98.0]}}
    X, _ = baseline.sample_pixels(patch_dir, "train", 400, 0, normalize="scene")
    assert -1 < np.median(X) < 2  # scaled, not raw 0..255 values
    image = example_data()["test"]["images"][0]
    changed = rescaled_copy(image, tmp_path / "changed.tif")
    maps = [predict_raster(tmp_path / "rf.joblib", scene, tmp_path / f"{i}.tif", window=256,
                           overlap=32, progress=False) for i, scene in enumerate((image, changed))]
    with rasterio.open(maps[0]) as a, rasterio.open(maps[1]) as b:
        assert (a.read(1) == b.read(1)).mean() > 0.999
    with pytest.raises(InputError, match="normalize must be one of"):
        baseline.train_baseline(patch_dir, n_trees=2, normalize="raw")


def _mapped_whole(model, out):
    """A test chip mapped in one window: (its path, its pixels (1, rows, cols, bands), P(class 1))."""
    image = example_data()["test"]["images"][0]
    mapped = predict_raster(model, image, out, window=512, overlap=0, output="probabilities",
                            progress=False)
    with rasterio.open(image) as src, rasterio.open(mapped) as m:
        return image, np.moveaxis(src.read(), 0, -1)[np.newaxis].astype(np.float32), m.read(2)


def test_a_both_normalised_forest_sees_raw_and_scene_scaled_values_side_by_side(patch_dir, tmp_path):
    from rsunet.normalization import band_percentiles, scene_scaling

    raw, y = baseline.sample_pixels(patch_dir, "train", 300, 0, normalize="dataset")
    scaled, _ = baseline.sample_pixels(patch_dir, "train", 300, 0, normalize="scene")
    both, y_both = baseline.sample_pixels(patch_dir, "train", 300, 0, normalize="both")
    np.testing.assert_array_equal(both, np.concatenate([raw, scaled], axis=1))
    np.testing.assert_array_equal(y_both, y)
    model = baseline.train_baseline(patch_dir, None, n_per_class=300, n_trees=5, normalize="both", seed=0)
    assert model.bands == 3 and model.forest.n_features_in_ == 6
    assert model.normalization == {"normalize": "both", "scene": {"q": [2.0, 98.0]}}
    image, x, got = _mapped_whole(model, tmp_path / "both.tif")
    s, o = scene_scaling(band_percentiles(image))  # the scene's own percentiles, bound by predict_raster
    by_hand = model.predict_probabilities(np.concatenate([x, x * s + o], axis=-1))
    np.testing.assert_allclose(got, by_hand[0, ..., 1], atol=1e-6)


def test_a_scene_joint_forest_sees_all_bands_stretched_together(patch_dir, tmp_path):
    from rsunet.normalization import band_percentiles

    model = baseline.train_baseline(patch_dir, None, n_per_class=300, n_trees=5,
                                    normalize="scene_joint", seed=0)
    assert model.bands == 3 and model.forest.n_features_in_ == 3
    assert model.normalization == {"normalize": "scene_joint", "scene": {"q": [2.0, 98.0], "joint": True}}
    image, x, got = _mapped_whole(model, tmp_path / "joint.tif")
    q = band_percentiles(image)  # the scene's own, bound by predict_raster: one range for all bands
    low, high = np.float32(q[:, 0].min()), np.float32(q[:, -1].max())
    by_hand = model.predict_probabilities((x - low) / (high - low))
    # float32 rounding of scale and offset may put a rare pixel on the other side of a split
    assert (np.abs(got - by_hand[0, ..., 1]) < 1e-6).mean() > 0.999
