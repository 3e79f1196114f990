"""train_unet on real Amazon patches: it learns, resumes, and saves a model that reloads.

Mirrored by tests/testthat/test-training.R.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pandas as pd
import pytest
import rasterio

from conftest import ROOT, need_module
from rsunet.errors import InputError, OutputExistsError

need_module("tensorflow")
from rsunet import training  # noqa: E402
from rsunet.patches import PatchSet  # noqa: E402

TINY = dict(depth=2, filters=8, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    from amazon_patches import amazon_patch_set

    return amazon_patch_set(tmp_path_factory.mktemp("amazon"), n_images=2, size=64)


@pytest.fixture(scope="module")
def trained(patches, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "unet.keras"
    history = training.train_unet(patches, out, epochs=3, learning_rate=0.01, **TINY)
    return out, history


def test_a_small_unet_overfits_a_handful_of_real_patches(tmp_path):
    from amazon_patches import amazon_patch_set

    folder = amazon_patch_set(tmp_path, n_images=1, size=64, stride=64)
    index = pd.read_csv(folder / "index.csv")
    index["split"] = np.where(np.arange(len(index)) < 8, "train", "validation")
    index.to_csv(folder / "index.csv", index=False)
    keras.utils.set_random_seed(0)
    h = training.train_unet(folder, tmp_path / "o.keras", epochs=25, augmentation=False,
                            learning_rate=0.01, patience=100, **TINY)
    assert len(h) == 25
    assert h["loss"].iloc[-1] < 0.5 * h["loss"].iloc[0]
    assert h["accuracy"].iloc[-1] > 0.9


def test_history_log_and_curves(trained):
    out, h = trained
    assert list(h["epoch"]) == [1, 2, 3]
    for col in ("loss", "accuracy", "f1", "iou", "val_loss", "val_accuracy", "val_f1", "val_iou"):
        assert col in h.columns and h[col].notna().all()
    assert ((h[["accuracy", "f1", "iou", "val_f1"]] >= 0) & (h[["accuracy", "f1", "iou", "val_f1"]] <= 1)).all().all()
    logged = pd.read_csv(out.with_name("unet_history.csv"))
    pd.testing.assert_frame_equal(logged, h, check_dtype=False)
    assert out.with_name("unet_history.png").read_bytes()[:4] == b"\x89PNG"
    assert not out.with_name(".unet.training").exists()  # checkpoints are gone once saved


def test_artefact_carries_its_metadata_and_normalisation(trained, patches):
    out, h = trained
    with zipfile.ZipFile(out) as z:
        meta = json.loads(z.read("rsunet.json"))
    ps = PatchSet(patches)
    ids = ps.index.loc[ps.index["split"] == "train", "patch_id"].tolist()
    images, _ = ps.read(ids)
    # the Amazon chips have no nodata: every pixel of the training patches counts
    np.testing.assert_allclose(meta["normalization"]["mean"], images.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(meta["normalization"]["std"], images.std(axis=(0, 2, 3)), rtol=1e-4)
    assert meta["classes"] == {"0": "background", "1": "forest"}
    assert meta["bands"] == 3 and meta["depth"] == 2 and meta["patch_size"] == 64
    assert meta["ignore_value"] == 255 and meta["activation"] == "sigmoid"
    best = h.loc[h["val_loss"].idxmin(), "epoch"]
    assert meta["best_epoch"] == best
    m = training.load_model(out)
    assert m.multiple == 4 and m.n_classes == 2 and m.bands == 3
    p = m.predict_probabilities(images[:2].transpose(0, 2, 3, 1))
    assert p.shape == (2, 64, 64, 2)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)


def test_model_reloads_in_a_fresh_process_and_predicts_the_same(trained, tmp_path):
    out, _ = trained
    x = np.random.default_rng(3).integers(0, 255, size=(2, 32, 48, 3)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    here = training.load_model(out).predict_probabilities(x)
    code = ("import sys, numpy as np; from rsunet.training import load_model; "
            "m = load_model(sys.argv[1]); "
            "np.save(sys.argv[3], m.predict_probabilities(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, cwd=ROOT, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), here, rtol=1e-5, atol=1e-6)
    # a plain keras.models.load_model reads the same file too
    plain = keras.models.load_model(out, compile=False, safe_mode=True)
    assert plain.input_shape == (None, None, None, 3)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_at_the_next_epoch(patches, tmp_path):
    out = tmp_path / "r.keras"
    args = dict(epochs=4, seed=1, patience=10, **TINY)
    with pytest.raises(KeyboardInterrupt):
        training.train_unet(patches, out, callbacks=[_Interrupt(2)], **args)
    assert not out.exists()
    first = pd.read_csv(tmp_path / "r_history.csv")
    assert list(first["epoch"]) == [1, 2]
    state = json.loads((tmp_path / ".r.training" / "state.json").read_text())
    saved = keras.models.load_model(tmp_path / ".r.training" / state["last"], safe_mode=True)
    # other settings do not silently mix with the interrupted run
    with pytest.raises(InputError, match="resume=False"):
        training.train_unet(patches, out, **dict(args, filters=4))
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append([w.copy() for w in self.model.get_weights()])

        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    h = training.train_unet(patches, out, callbacks=[Watch()], **args)
    assert seen[1:] == [2, 3]  # epochs 3 and 4 (0-based 2, 3) only
    for a, b in zip(seen[0], saved.get_weights()):
        np.testing.assert_array_equal(a, b)  # continued from the checkpoint's weights
    assert list(h["epoch"]) == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(h.iloc[:2].reset_index(drop=True), first, check_dtype=False)
    assert out.exists()


def test_a_cosine_schedule_decays_the_learning_rate_to_one_percent(patches, tmp_path):
    rates = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            opt = self.model.optimizer
            rates.append(float(opt.learning_rate) if not callable(opt._learning_rate)
                         else float(opt._learning_rate(opt.iterations)))

    training.train_unet(patches, tmp_path / "c.keras", epochs=2, learning_rate=0.01, schedule="cosine",
                        patience=10, callbacks=[Watch()], **TINY)
    assert rates[0] == pytest.approx(0.01, rel=1e-6)
    assert all(a > b for a, b in zip(rates, rates[1:]))  # decays at every step
    n = len(rates)  # the last step of the last epoch is 1 step short of the end of the curve
    assert rates[-1] == pytest.approx(0.01 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (n - 1) / n))), rel=1e-4)
    with pytest.raises(InputError, match="schedule"):
        training.train_unet(patches, tmp_path / "d.keras", schedule="linear", **TINY)


class _Held:
    """A training source over arrays (what training._Patches gives, without a folder)."""

    def __init__(self, x, y, v, scaling, normalize="dataset"):
        self.x, self.y, self.v, self.scaling, self.normalize = x, y, v, scaling, normalize
        self.shape, self.dtype = x.shape[1:], x.dtype

    def __len__(self):
        return len(self.x)

    def read(self, positions):
        return self.x[positions], self.y[positions], self.v[positions]


@pytest.mark.parametrize("stream", [False, True])
def test_the_epoch_order_depends_only_on_seed_and_epoch(stream):
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 4, 4, 1), np.uint8)
    y = np.zeros((10, 4, 4), np.uint8)
    v = np.ones((10, 4, 4), bool)
    mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    source = _Held(x, y, v, (np.ones((10, 1), np.float32), np.zeros((10, 1), np.float32)))

    def batches(start):
        ds = training._train_dataset(source, mean, std, None, 4, 5, start, 3, 3, stream)
        return [b[0].numpy()[:, 0, 0, 0].tolist() for b in ds]

    whole, resumed = batches(0), batches(1)
    assert resumed == whole[3:]
    assert sorted(sum(whole[:3], [])[:10]) == list(range(10))  # every patch once per epoch


def test_both_channel_groups_are_made_from_the_same_augmented_raw_pixels():
    from rsunet.augmentation import AugmentParams

    rng = np.random.default_rng(0)
    x = rng.integers(20, 200, (8, 16, 16, 3)).astype(np.uint8)
    y = rng.integers(0, 2, (8, 16, 16)).astype(np.uint8)
    v = np.ones((8, 16, 16), bool)
    v[:, :3, :3] = False  # nodata: fed as the raw band mean, whatever the group
    scale = rng.uniform(0.005, 0.02, (8, 3)).astype(np.float32)
    offset = rng.uniform(-0.5, 0.0, (8, 3)).astype(np.float32)
    source = _Held(x, y, v, (scale, offset), normalize="both")
    mean = np.array([100, 110, 120, 0.5, 0.4, 0.6], np.float32)
    std = np.array([30, 40, 50, 0.3, 0.2, 0.25], np.float32)
    aug = AugmentParams(p_gain=1.0, p_haze=1.0, p_contrast=1.0, p_brightness=1.0)
    order, _ = training._epoch_batches(8, 4, 1, 0, 1, 2)
    for b, (z, labels) in enumerate(training._train_dataset(source, mean, std, aug, 4, 1, 0, 1, 2, False)):
        z = z.numpy()
        assert z.shape == (4, 16, 16, 6)
        raw = z[..., :3] * std[:3] + mean[:3]  # the augmented raw pixels
        assert not np.allclose(raw, x[order[b]], atol=1.0)  # augmentation changed them
        s, o = scale[order[b]][:, None, None, :], offset[order[b]][:, None, None, :]
        np.testing.assert_allclose(z[..., 3:], (raw * s + o - mean[3:]) / std[3:], atol=1e-4)
        unknown = labels.numpy()[..., 0] == 255
        assert unknown.any() and np.abs(z[..., :3][unknown]).max() < 1e-5


def test_a_stretched_training_patch_gets_the_training_mean_and_spread():
    # scene-scaled patches of low and high contrast: stretched, each is standardised to
    # mean 0 and sd 1 per band, as a scene of one land cover is by its own 2-98 % range
    from rsunet.augmentation import AugmentParams

    rng = np.random.default_rng(3)
    contrast = np.array([5, 10, 40, 80], np.float32)[:, None, None, None]
    x = np.clip(120 + contrast * rng.normal(size=(4, 16, 16, 2)), 0, 255).astype(np.uint8)
    y, v = np.zeros((4, 16, 16), np.uint8), np.ones((4, 16, 16), bool)
    scaling = (np.full((4, 2), 1 / 200, np.float32), np.zeros((4, 2), np.float32))
    source = _Held(x, y, v, scaling, normalize="scene")
    mean, std = np.array([0.6, 0.55], np.float32), np.array([0.2, 0.25], np.float32)
    off = dict(p_rotation=0, p_hflip=0, p_vflip=0, p_zoom=0, p_brightness=0, p_saturation=0)
    aug = AugmentParams(**off, stretch=(1, 1), p_stretch=1).checked()
    for z, _ in training._train_dataset(source, mean, std, aug, 4, 1, 0, 1, 1, False):
        z = z.numpy()
        np.testing.assert_allclose(z.mean(axis=(1, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(z.std(axis=(1, 2)), 1, rtol=1e-3)


def _sources(patches, split):
    ps = PatchSet(patches)
    return training._Patches([(ps, ps.ids(split))], "dataset")


def test_streamed_and_held_batches_are_the_same_patches_augmented_alike(patches):
    from rsunet.augmentation import AugmentParams

    source = _sources(patches, "train")
    mean, std = np.array([40, 50, 60], np.float32), np.array([10, 20, 5], np.float32)
    aug = AugmentParams(p_gain=0.5, p_haze=0.5, p_contrast=0.5)
    steps = 3
    got = {stream: [[t.numpy() for t in b]
                    for b in training._train_dataset(source, mean, std, aug, 8, 3, 0, 1, steps, stream)]
           for stream in (False, True)}
    assert len(got[True]) == len(got[False]) == steps
    order, _ = training._epoch_batches(len(source), 8, 3, 0, 1, steps)
    for b, (held, streamed) in enumerate(zip(got[False], got[True])):
        np.testing.assert_array_equal(streamed[0], held[0])  # the augmented pixels, bit for bit
        np.testing.assert_array_equal(streamed[1], held[1])
        # and they are the patches the epoch's order names: unaugmented pixels differ, labels agree
        x, y, _ = source.read(order[b])
        assert not np.allclose(held[0], (x - mean) / std)
        assert (held[1][..., 0] == y).mean() > 0.5


def test_validation_batches_are_never_augmented(patches):
    ps = PatchSet(patches)
    ids = ps.ids("validation")
    x, y, v = training._read_split(ps, ids)
    mean, std = np.array([40, 50, 60], np.float32), np.array([10, 20, 5], np.float32)
    source = _sources(patches, "validation")
    for stream in (False, True):
        batches = list(training._plain_dataset(source, mean, std, 4, stream))
        got = np.concatenate([b[0].numpy() for b in batches])
        np.testing.assert_allclose(got, (x - mean) / std, rtol=1e-6, atol=1e-5)
        labels = np.concatenate([b[1].numpy() for b in batches])
        np.testing.assert_array_equal(labels[..., 0], y)


def test_streaming_and_in_memory_training_give_the_same_losses(patches, tmp_path):
    args = dict(epochs=2, seed=4, patience=10, learning_rate=0.01, **TINY)
    held = training.train_unet(patches, tmp_path / "held.keras", stream=False, **args)
    streamed = training.train_unet(patches, tmp_path / "streamed.keras", stream=True, **args)
    cols = [c for c in held.columns if c != "seconds"]
    pd.testing.assert_frame_equal(streamed[cols], held[cols], check_exact=True)  # bit for bit
    with pytest.raises(InputError, match="stream must be"):
        training.train_unet(patches, tmp_path / "x.keras", stream="yes", **args)
    # "auto": streamed on a CPU; on a GPU machine held in memory up to IN_MEMORY_BYTES
    import tensorflow as tf

    small = _sources(patches, "train")
    gpu = bool(tf.config.list_logical_devices("GPU"))
    assert training._streams("auto", small) is (not gpu)
    assert training._streams(False, small) is False and training._streams(True, small) is True


def test_a_resumed_streaming_run_equals_an_uninterrupted_one(patches, tmp_path):
    args = dict(epochs=3, seed=2, patience=10, learning_rate=0.01, stream=True, **TINY)
    whole = training.train_unet(patches, tmp_path / "whole.keras", **args)
    with pytest.raises(KeyboardInterrupt):
        training.train_unet(patches, tmp_path / "r.keras", callbacks=[_Interrupt(1)], **args)
    resumed = training.train_unet(patches, tmp_path / "r.keras", **args)
    cols = [c for c in whole.columns if c != "seconds"]
    pd.testing.assert_frame_equal(resumed[cols], whole[cols], rtol=1e-5)
    a, b = (training.load_model(tmp_path / f).keras_model.get_weights() for f in ("whole.keras", "r.keras"))
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wb, wa, rtol=1e-5, atol=1e-6)


class _Compiled(keras.callbacks.Callback):
    """Records whether the network being fitted runs its step through XLA."""

    def on_train_begin(self, logs=None):
        self.jit = self.model.jit_compile


def test_xla_compiles_the_step_only_for_a_run_long_enough_to_repay_it(patches, tmp_path, monkeypatch):
    """On a CPU, XLA halves a U-Net's step but costs seconds to compile: a short run keeps
    Keras' step, a long one is compiled, and both learn the same numbers."""
    from rsunet.model import gpu_present

    args = dict(epochs=2, seed=5, patience=10, learning_rate=0.01, **TINY)
    short = _Compiled()
    plain = training.train_unet(patches, tmp_path / "plain.keras", callbacks=[short], **args)
    pixels = 2 * len(_sources(patches, "train")) * 64 * 64  # whole batches: at least this many
    assert pixels < training.XLA_MIN_PIXELS and short.jit is False
    monkeypatch.setattr(training, "XLA_MIN_PIXELS", pixels)  # as if this run were long
    long = _Compiled()
    compiled = training.train_unet(patches, tmp_path / "xla.keras", callbacks=[long], **args)
    assert long.jit is (not gpu_present())
    np.testing.assert_allclose(compiled["loss"], plain["loss"], rtol=1e-3)


def test_clear_errors(patches, trained, tmp_path):
    with pytest.raises(InputError, match="epochs must be a number"):
        training.train_unet(patches, tmp_path / "n.keras", epochs="ten", **TINY)
    out, _ = trained
    with pytest.raises(OutputExistsError):
        training.train_unet(patches, out, epochs=1, **TINY)
    index = pd.read_csv(patches / "index.csv").drop(columns=["split"])
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("patches.json",):
        (bare / f).write_text((patches / f).read_text())
    index.to_csv(bare / "index.csv", index=False)
    with pytest.raises(InputError, match="split_patches"):
        training.train_unet(bare, tmp_path / "m.keras", epochs=1, **TINY)
    with pytest.raises(InputError, match=".keras"):
        training.train_unet(patches, tmp_path / "m.h5", epochs=1, **TINY)
    with pytest.raises(InputError, match="monitor"):
        training.train_unet(patches, tmp_path / "m.keras", monitor="f2", **TINY)


def test_a_scene_normalised_unet_maps_a_scene_whatever_its_gain_and_offset(patches, trained, tmp_path):
    from conftest import rescaled_copy, vectors
    from rsunet.example import example_data
    from rsunet.prediction import predict_raster

    out = tmp_path / "scene.keras"
    training.train_unet(patches, out, epochs=1, normalize="scene", **TINY)
    meta = training.read_metadata(out)
    assert meta["normalization"]["scene"] == {"q": [2.0, 98.0]}
    ps = PatchSet(patches)
    ids = ps.index.loc[ps.index["split"] == "train", "patch_id"].tolist()
    images, _ = ps.read(ids)
    scale, offset = ps.scaling(ids, "scene")
    scaled = images * scale[:, :, None, None] + offset[:, :, None, None]
    np.testing.assert_allclose(meta["normalization"]["mean"], scaled.mean(axis=(0, 2, 3)), rtol=1e-4)

    image = example_data()["test"]["images"][0]
    changed = rescaled_copy(image, tmp_path / "changed.tif")  # float32, brighter, more contrast
    kw = dict(window=128, overlap=32, output="probabilities", progress=False)
    a = predict_raster(out, image, tmp_path / "a.tif", **kw)
    b = predict_raster(out, changed, tmp_path / "b.tif", **kw)
    with rasterio.open(a) as pa, rasterio.open(b) as pb, rasterio.open(image) as src:
        assert np.abs(pa.read() - pb.read()).max() < 1e-3
        x = np.moveaxis(src.read(), 0, -1)[np.newaxis, :128, :128]
    # a dataset-normalised model sees the changed scene as another scene
    plain = training.load_model(trained[0])
    rescale = vectors("patches")["scene_rescale"]
    y = x * np.float32(rescale["gain"]) + np.float32(rescale["offset"])
    assert np.abs(plain.predict_probabilities(x) - plain.predict_probabilities(y)).max() > 0.1


def test_a_both_normalised_unet_takes_raw_and_scene_scaled_bands_and_predicts_as_by_hand(patches, tmp_path):
    from rsunet.artefact import save_model
    from rsunet.example import example_data
    from rsunet.normalization import band_percentiles, scene_scaling
    from rsunet.prediction import predict_raster

    out = tmp_path / "both.keras"
    training.train_unet(patches, out, epochs=1, normalize="both", **TINY)
    model = training.load_model(out)
    ps = PatchSet(patches)
    b = ps.bands
    assert model.bands == b and model.keras_model.input_shape[-1] == 2 * b
    norm = model.normalization
    assert norm["normalize"] == "both" and norm["scene"] == {"q": [2.0, 98.0]}
    # the record: the raw bands' mean and deviation, then the scene-scaled bands'
    ids = ps.index.loc[ps.index["split"] == "train", "patch_id"].tolist()
    images, _ = ps.read(ids)
    scale, offset = ps.scaling(ids, "both")
    scaled = images * scale[:, :, None, None] + offset[:, :, None, None]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    np.testing.assert_allclose(mean, np.r_[images.mean(axis=(0, 2, 3)), scaled.mean(axis=(0, 2, 3))],
                               rtol=1e-4)
    np.testing.assert_allclose(std, np.r_[images.std(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))],
                               rtol=1e-4)

    # predict_raster: the network on [standardised raw, standardised scene-scaled] pixels
    image = example_data()["test"]["images"][0]
    kw = dict(window=512, overlap=0, blend="average", output="probabilities", precision="float32",
              progress=False)  # float32: "auto" may compute in bfloat16 on this CPU
    mapped = predict_raster(out, image, tmp_path / "map.tif", **kw)
    with rasterio.open(image) as src, rasterio.open(mapped) as m:
        x = np.moveaxis(src.read(), 0, -1)[np.newaxis].astype(np.float32)
        got = np.moveaxis(m.read(), 0, -1)
    s, o = scene_scaling(band_percentiles(image, norm["scene"]["q"]))
    by_hand = np.concatenate([(x - mean[:b]) / std[:b], (x * s + o - mean[b:]) / std[b:]], axis=-1)
    p = np.asarray(model.keras_model.predict_on_batch(by_hand), np.float32)[0]
    np.testing.assert_allclose(got, np.concatenate([1 - p, p], axis=-1), atol=1e-6)

    # saved and loaded again: the same record, the same map
    again = save_model(model.keras_model, tmp_path / "again.keras", model.meta)
    reloaded = training.load_model(again)
    assert reloaded.normalization == norm and reloaded.keras_model.input_shape[-1] == 2 * b
    remapped = predict_raster(again, image, tmp_path / "remap.tif", **kw)
    with rasterio.open(remapped) as m:
        np.testing.assert_array_equal(np.moveaxis(m.read(), 0, -1), got)


def test_a_scene_joint_unet_stretches_all_bands_together_and_predicts_as_by_hand(patches, tmp_path):
    from rsunet.example import example_data
    from rsunet.normalization import band_percentiles
    from rsunet.prediction import predict_raster

    out = tmp_path / "joint.keras"
    training.train_unet(patches, out, epochs=1, normalize="scene_joint", **TINY)
    model = training.load_model(out)
    norm = model.normalization
    assert norm["normalize"] == "scene_joint" and norm["scene"] == {"q": [2.0, 98.0], "joint": True}
    assert model.keras_model.input_shape[-1] == model.bands
    # one scale and offset for every band of a scene: the lowest 2 % to 0, the highest 98 % to 1
    ps = PatchSet(patches)
    ids = ps.index.loc[ps.index["split"] == "train", "patch_id"].tolist()
    scale, offset = ps.scaling(ids, "scene_joint")
    assert np.ptp(scale, axis=1).max() == 0 and np.ptp(offset, axis=1).max() == 0
    per_band, _ = ps.scaling(ids, "scene")
    assert np.ptp(per_band, axis=1).max() > 0  # the example scenes' bands differ in spread
    images, _ = ps.read(ids)
    scaled = images * scale[:, :, None, None] + offset[:, :, None, None]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-4)

    image = example_data()["test"]["images"][0]
    mapped = predict_raster(out, image, tmp_path / "map.tif", window=512, overlap=0, blend="average",
                            output="probabilities", precision="float32", progress=False)
    with rasterio.open(image) as src, rasterio.open(mapped) as m:
        x = np.moveaxis(src.read(), 0, -1)[np.newaxis].astype(np.float32)
        got = np.moveaxis(m.read(), 0, -1)
    q = band_percentiles(image, norm["scene"]["q"])
    low, high = q[:, 0].min(), q[:, -1].max()
    by_hand = ((x - low) / (high - low) - mean) / std
    p = np.asarray(model.keras_model.predict_on_batch(by_hand), np.float32)[0]
    np.testing.assert_allclose(got, np.concatenate([1 - p, p], axis=-1), atol=1e-5)


def test_normalize_must_be_dataset_scene_or_both(patches, tmp_path):
    with pytest.raises(InputError, match="normalize must be one of"):
        training.train_unet(patches, tmp_path / "x.keras", epochs=1, normalize="patch", **TINY)
    assert not (tmp_path / "x.keras").exists()


def test_a_list_of_two_patch_sets_trains_one_model(patches, tmp_path):
    from amazon_patches import amazon_patch_set

    other = amazon_patch_set(tmp_path / "other", n_images=1, size=64, seed=1)
    sets = [PatchSet(patches), PatchSet(other)]
    both = training._Patches([(ps, ps.ids("train")) for ps in sets], "dataset")
    n = [len(ps.ids("train")) for ps in sets]
    assert len(both) == sum(n)
    picks = np.array([n[0] + 1, 0, n[0]])  # positions past the first set's are the second's
    x, y, v = both.read(picks)
    for got, (ps, i) in zip(x, [(sets[1], 1), (sets[0], 0), (sets[1], 0)]):
        np.testing.assert_array_equal(got, training._read_split(ps, [ps.ids("train")[i]])[0][0])
    out = tmp_path / "two.keras"
    h = training.train_unet([patches, other], out, epochs=1, stream=True, **TINY)
    assert list(h["epoch"]) == [1]
    meta = training.read_metadata(out)
    assert meta["n_train"] == sum(n)
    assert meta["patches"] == [str(patches.resolve()), str(other.resolve())]


def test_patch_sets_that_differ_give_a_typed_error_naming_what_differs(patches, tmp_path):
    import shutil

    from rsunet.errors import PatchSetMismatchError

    renamed = tmp_path / "renamed"
    shutil.copytree(patches, renamed)
    meta = json.loads((renamed / "patches.json").read_text())
    meta["classes"] = {"0": "background", "1": "palms"}
    (renamed / "patches.json").write_text(json.dumps(meta))
    with pytest.raises(PatchSetMismatchError, match=r"renamed differ in classes .*palms"):
        training.train_unet([patches, renamed], tmp_path / "x.keras", epochs=1, **TINY)
    assert not (tmp_path / "x.keras").exists() and not (tmp_path / ".x.training").exists()


def test_balanced_sampling_draws_a_rare_class_at_the_expected_rate():
    n, rare = 1000, np.arange(20)  # class 1 in 2 % of the patches, background in all
    presence = np.zeros((n, 2), bool)
    presence[:, 0] = True
    presence[rare, 1] = True
    weights = training._balanced_weights(presence)
    # pick a class (1/2), then one of its patches: a rare patch 1/2 (1/1000 + 1/20)
    expected = len(rare) * 0.5 * (1 / n + 1 / len(rare))  # 0.51, against 0.02 uniform
    assert weights[rare].sum() == pytest.approx(expected)
    order, _ = training._epoch_batches(n, 16, 7, 0, 40, 63, weights)  # 40 epochs, 40,320 draws
    drawn = np.isin(order, rare).mean()
    # the draws are binomial: 4 standard errors (0.0099 here) is a 1-in-15,000 miss for a fair sampler
    tolerance = 4 * np.sqrt(expected * (1 - expected) / order.size)
    assert abs(drawn - expected) < tolerance
    uniform, _ = training._epoch_batches(n, 16, 7, 0, 40, 63)
    assert abs(np.isin(uniform, rare).mean() - 0.02) < 4 * np.sqrt(0.02 * 0.98 / uniform.size)
    # every rare patch is drawn, each about alike
    counts = np.bincount(order.ravel(), minlength=n)[rare]
    assert counts.min() > 0.7 * counts.mean()


def test_balanced_sampling_trains_and_is_recorded(patches, tmp_path):
    ps = PatchSet(patches)
    source = training._Patches([(ps, ps.ids("train"))], "dataset")
    presence = source.presence(2)
    rows = ps.index.set_index("patch_id").loc[ps.ids("train")]
    np.testing.assert_array_equal(presence[:, 1], rows["n_1"].to_numpy() > 0)
    out = tmp_path / "b.keras"
    training.train_unet(patches, out, epochs=1, sampling="balanced", class_weights="auto",
                        loss="weighted_ce", **TINY)
    meta = training.read_metadata(out)
    assert meta["sampling"] == "balanced"
    counts = np.array([rows["n_0"].sum(), rows["n_1"].sum()], float)
    np.testing.assert_allclose(meta["class_weights"], counts.sum() / (2 * counts), rtol=1e-6)
    with pytest.raises(InputError, match="sampling must be one of"):
        training.train_unet(patches, tmp_path / "x.keras", sampling="rare", **TINY)


MIRRORED = r"""
import json, sys
import tensorflow as tf  # two logical CPU devices, set before TensorFlow starts its devices
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import pandas as pd
from rsunet import training

patches, out = sys.argv[1], sys.argv[2]
args = dict(epochs=2, depth=2, filters=4, batch_size=8, seed=3, patience=5, progress=False,
            strategy="mirrored", learning_rate=0.01)

class Stop(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt

try:
    training.train_unet(patches, out, callbacks=[Stop()], **args)
except KeyboardInterrupt:
    pass
first = pd.read_csv(out.replace(".keras", "_history.csv"))
h = training.train_unet(patches, out, **args)
meta = training.read_metadata(out)
print(json.dumps(dict(replicas=meta["replicas"], epochs=h["epoch"].tolist(), first=first["loss"].tolist(),
                      loss=h["loss"].tolist(), devices=len(tf.config.list_logical_devices("CPU")))))
"""


def test_a_mirrored_strategy_trains_and_resumes_on_two_logical_cpus(patches, tmp_path):
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(patches), str(tmp_path / "m.keras")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["devices"] == 2 and got["replicas"] == 2
    assert got["epochs"] == [1, 2]
    assert got["loss"][:1] == pytest.approx(got["first"], rel=1e-6)  # epoch 1 kept, epoch 2 resumed
    assert np.isfinite(got["loss"]).all()
    m = training.load_model(tmp_path / "m.keras")
    assert m.n_classes == 2


def test_mixed_precision_forced_on_cpu_trains_and_predicts_float32(patches, tmp_path):
    out = tmp_path / "mixed.keras"
    h = training.train_unet(patches, out, epochs=1, mixed_precision=True, strategy="default", **TINY)
    assert np.isfinite(h["loss"]).all()
    meta = training.read_metadata(out)
    assert meta["mixed_precision"] is True and meta["replicas"] == 1
    m = training.load_model(out)
    assert training._is_mixed(m.keras_model)
    x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)).astype(np.uint8)
    p = m.predict_probabilities(x)
    assert p.dtype == np.float32 and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(InputError, match="strategy must be one of"):
        training.train_unet(patches, tmp_path / "x.keras", strategy="tpu", **TINY)
