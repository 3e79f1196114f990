"""Prediction at any scale: sliding windows, blending, TTA, streaming and resumable mosaics.

The central property: with a per-pixel model (a 1x1 convolution) every window agrees on
every pixel, so whatever the scene size, window, overlap, blending and augmentation, the
mosaic must equal the model applied to the whole array at once. Expected values come
from Keras on the whole array, or from numpy by hand (the shared vectors).
Mirrored by tests/testthat/test-prediction.R on the same vectors (prediction.json).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from conftest import VECTORS, need_module, vectors
from rsunet import prediction
from rsunet.errors import (BandMismatchError, InputError, ModelFormatError, OutputExistsError,
                           PatchSizeError)

keras = need_module("keras")
from rsunet.artefact import RsunetModel, load_model, plain_model as _plain_model  # noqa: E402

hypothesis = need_module("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

VEC = vectors("prediction")
TRANSFORM = Affine(10.0, 0, 600000.0, 0, -10.0, 5000000.0)


# ---- helpers -----------------------------------------------------------------------

def write_image(path, data, nodata=0, crs="EPSG:32622", transform=TRANSFORM):
    profile = dict(driver="GTiff", count=data.shape[0], height=data.shape[1],
                   width=data.shape[2], dtype=data.dtype.name, transform=transform, crs=crs,
                   nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def random_image(rng, bands, rows, cols, hole_fraction=0.1):
    data = rng.integers(1, 256, size=(bands, rows, cols)).astype(np.uint8)
    data[:, rng.random((rows, cols)) < hole_fraction] = 0
    return data


def per_pixel_model(bands=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    inp = keras.Input((None, None, bands))
    m = keras.Model(inp, keras.layers.Conv2D(k, 1, activation="softmax")(inp))
    kernel = rng.normal(size=(1, 1, bands, k)).astype(np.float32) * 0.03
    bias = (-128.0 * kernel[0, 0].sum(0) + rng.normal(size=k) * 0.1).astype(np.float32)
    m.set_weights([kernel, bias])
    return _plain_model(m)


def small_unet(bands=3, k=3, depth=2, seed=1):
    """A seeded, fully convolutional U-Net (rsunet.model.unet is another stage's work)."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    x = inp = keras.Input((None, None, bands))
    x = layers.Rescaling(1 / 255)(x)
    skips = []
    for d in range(depth):
        x = layers.Conv2D(8 * 2 ** d, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(8 * 2 ** depth, 3, padding="same", activation="relu")(x)
    for d in reversed(range(depth)):
        x = layers.UpSampling2D()(x)
        x = layers.Concatenate()([x, skips[d]])
        x = layers.Conv2D(8 * 2 ** d, 3, padding="same", activation="relu")(x)
    last = layers.Conv2D(k, 1, activation="softmax")
    net = keras.Model(inp, last(x))
    # sharpen the random init so the probabilities span [0, 1], as a trained model's do
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 30, bias])
    return RsunetModel(keras_model=net, bands=bands,
                       classes={i: f"c{i}" for i in range(k)}, depth=depth)


def whole_scene(model, data):
    """The model on the whole array at once: (K, rows, cols) probabilities."""
    y = model.predict_probabilities(np.moveaxis(data, 0, -1)[None])[0]
    return np.moveaxis(y, -1, 0)


def read(path):
    with rasterio.open(path) as src:
        return src.read()


def check_against_whole(model, data, outs, nodata=0):
    expected = whole_scene(model, data)
    valid = np.all(data != nodata, axis=0)
    classes = np.argmax(expected, axis=0).astype(np.uint8)
    classes[~valid] = 255
    np.testing.assert_array_equal(read(outs["classes"])[0], classes)
    probs = read(outs["probabilities"])
    assert np.isnan(probs[:, ~valid]).all()
    np.testing.assert_allclose(probs[:, valid], expected[:, valid], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def pixel_model():
    return per_pixel_model()


# ---- the per-pixel property ----------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 70), window=st.integers(1, 40),
       overlap_frac=st.floats(0, 0.99), blend=st.sampled_from(prediction.BLENDS),
       tta=st.booleans(), batch_size=st.integers(1, 5), seed=st.integers(0, 2**16),
       chunk=st.sampled_from([3, 17, 2048]))
def test_per_pixel_model_mosaic_equals_whole_array(pixel_model, rows, cols, window,
                                                    overlap_frac, blend, tta, batch_size, seed,
                                                    chunk):
    prediction.COLUMN_CHUNK = chunk  # wide scenes are blended in column chunks
    try:
        _check_per_pixel(pixel_model, rows, cols, window, overlap_frac, blend, tta,
                         batch_size, seed)
    finally:
        prediction.COLUMN_CHUNK = 2048


def _check_per_pixel(pixel_model, rows, cols, window, overlap_frac, blend, tta, batch_size,
                     seed):
    rng = np.random.default_rng(seed)
    data = random_image(rng, 3, rows, cols)
    overlap = int(overlap_frac * window)
    with tempfile.TemporaryDirectory() as tmp:
        image = write_image(Path(tmp) / "scene.tif", data)
        outs = prediction.predict_raster(
            pixel_model, image, Path(tmp) / "map.tif", window=window, overlap=overlap,
            blend=blend, tta=tta, output="both", batch_size=batch_size, progress=False)
        check_against_whole(pixel_model, data, outs)


@pytest.mark.parametrize("case", VEC["cases"], ids=lambda c: "{window}-{overlap}-{blend}-{tta}".format(**c))
def test_vector_cases_match_numpy_by_hand(tmp_path, case):
    image = VECTORS / VEC["image"]
    data = read(image).astype(np.float64)
    logits = np.einsum("bhw,bk->hwk", data, np.array(VEC["kernel"])) + np.array(VEC["bias"])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    valid = np.all(data != VEC["nodata"], axis=0)
    outs = prediction.predict_raster(VECTORS / VEC["model"], image, tmp_path / "map.tif",
                                     output="both", progress=False, **case)
    classes = read(outs["classes"])[0]
    expected = probs.argmax(-1)
    np.testing.assert_array_equal(classes[valid], expected[valid])
    assert (classes[~valid] == 255).all()
    assert [int((classes == c).sum()) for c in range(3)] == VEC["class_counts"]
    p = read(outs["probabilities"])
    np.testing.assert_allclose(np.moveaxis(p[:, valid], 0, -1), probs[valid], atol=1e-5)
    np.testing.assert_allclose(np.nansum(p, axis=(1, 2)), VEC["prob_sums"], rtol=1e-5)


def test_normalisation_of_an_rsunet_model_is_applied(tmp_path, pixel_model):
    rng = np.random.default_rng(3)
    data = random_image(rng, 3, 30, 41)
    model = RsunetModel(keras_model=pixel_model.keras_model, bands=3,
                        classes={0: "a", 1: "b", 2: "c", 3: "d"},
                        normalization={"mean": [100.0, 120.0, 90.0], "std": [50.0, 20.0, 70.0]})
    outs = prediction.predict_raster(model, write_image(tmp_path / "s.tif", data),
                                     tmp_path / "m.tif", window=16, overlap=4, output="both",
                                     progress=False)
    # by hand: normalise, then the 1x1 convolution and softmax
    kernel, bias = (w.astype(np.float64) for w in pixel_model.keras_model.get_weights())
    x = (np.moveaxis(data, 0, -1) - [100.0, 120.0, 90.0]) / [50.0, 20.0, 70.0]
    logits = x @ kernel[0, 0] + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    valid = np.all(data != 0, axis=0)
    got = read(outs["probabilities"])
    np.testing.assert_allclose(np.moveaxis(got, 0, -1)[valid], p[valid], atol=1e-5)
    with rasterio.open(outs["probabilities"]) as src:
        assert src.descriptions == ("p_a", "p_b", "p_c", "p_d")


# ---- a real (small) U-Net -------------------------------------------------------------

# Measured here (seeds 5-7, window 64, overlap 32, probabilities spanning [0, 1]):
# "centre" gave max |mosaic - whole scene| = 0.0: its 16-px margin exceeds the U-Net's
# reach, so each pixel comes from a window that sees all its neighbours, on the same
# 4-px pooling grid. "hann" gave max 0.026-0.050 (a few pixels on class boundaries, where
# a window's zero padding tips the softmax) and mean 6e-5 to 9e-5; every class agreed.
# (With a plain average the max was 0.5: why the window edges need low weight.)
UNET_TOLERANCE = {"centre": (1e-6, 1e-7), "hann": (0.06, 2e-4)}  # (max, mean) abs difference


@pytest.mark.parametrize("blend", ["centre", "hann"])
def test_unet_mosaic_matches_whole_scene_prediction(tmp_path, blend):
    model = small_unet()
    rng = np.random.default_rng(5)
    # smooth structure so the U-Net's neighbourhood matters, sizes multiples of 4
    base = rng.integers(1, 256, size=(3, 24, 28)).astype(np.float32)
    data = np.clip(np.kron(base, np.ones((4, 4))) + rng.normal(0, 8, (3, 96, 112)), 1, 255)
    data = data.astype(np.uint8)
    outs = prediction.predict_raster(model, write_image(tmp_path / "s.tif", data),
                                     tmp_path / "m.tif", window=64, overlap=32, blend=blend,
                                     output="both", precision="float32", progress=False)
    expected = whole_scene(model, data)
    assert expected.min() < 0.01 and expected.max() > 0.99  # a decisive model
    diff = np.abs(read(outs["probabilities"]) - expected)
    max_tol, mean_tol = UNET_TOLERANCE[blend]
    assert diff.max() <= max_tol and diff.mean() <= mean_tol
    agree = (read(outs["classes"])[0] == expected.argmax(0)).mean()
    assert agree >= 0.999


def test_unet_window_must_be_a_multiple_of_its_pooling(tmp_path):
    image = write_image(tmp_path / "s.tif", np.ones((3, 20, 20), np.uint8))
    with pytest.raises(PatchSizeError, match="multiple of 4"):
        prediction.predict_raster(small_unet(), image, tmp_path / "m.tif", window=30,
                                  overlap=2, progress=False)


# ---- georeferencing, formats, scenes ---------------------------------------------------

def test_output_keeps_crs_transform_and_is_tiled_compressed(tmp_path, pixel_model):
    rng = np.random.default_rng(1)
    data = random_image(rng, 3, 40, 45)
    t = Affine(0.5, 0, 2600000.0, 0, -0.5, 7500000.0)
    image = write_image(tmp_path / "s.tif", data, crs="EPSG:2953", transform=t)
    out = prediction.predict_raster(pixel_model, image, tmp_path / "m.tif", window=16,
                                    overlap=4, progress=False)
    with rasterio.open(out) as src, rasterio.open(image) as ref:
        assert src.crs == ref.crs and src.transform == ref.transform
        assert (src.width, src.height, src.count, src.dtypes[0]) == (45, 40, 1, "uint8")
        assert src.nodata == 255
        assert src.compression.name.lower() == "deflate"
        assert src.profile["tiled"]
        assert '"0": "0"' in src.tags()["RSUNET_CLASSES"]


def test_uint8_probabilities_are_scaled_and_cog_is_valid(tmp_path, pixel_model):
    rng = np.random.default_rng(2)
    data = random_image(rng, 3, 33, 50)
    out = prediction.predict_raster(pixel_model, write_image(tmp_path / "s.tif", data),
                                    tmp_path / "p.tif", window=16, overlap=6, blend="centre",
                                    output="probabilities", prob_dtype="uint8", cog=True,
                                    progress=False)
    expected = whole_scene(pixel_model, data)
    valid = np.all(data != 0, axis=0)
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        q = src.read()
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
    assert (q[:, ~valid] == 255).all()
    assert np.abs(q[:, valid] / 254.0 - expected[:, valid]).max() <= 0.5 / 254 + 1e-6


def test_many_scenes_from_a_list_and_a_folder(tmp_path, pixel_model):
    rng = np.random.default_rng(4)
    folder = tmp_path / "scenes"
    folder.mkdir()
    datas = {name: random_image(rng, 3, r, c) for name, r, c in [("a", 20, 30), ("b", 9, 5)]}
    for name, d in datas.items():
        write_image(folder / f"{name}.tif", d)
    outs = prediction.predict_raster(pixel_model, folder, tmp_path / "maps", window=8,
                                     overlap=2, progress=False)
    assert [p.name for p in outs] == ["a.tif", "b.tif"]
    listed = prediction.predict_raster(pixel_model, [folder / "b.tif"], tmp_path / "maps2",
                                       window=8, overlap=2, progress=False)
    assert read(listed[0]).tobytes() == read(outs[1]).tobytes()
    for (name, d), out in zip(datas.items(), outs):
        expected = whole_scene(pixel_model, d).argmax(0)
        expected[np.any(d == 0, axis=0)] = 255
        np.testing.assert_array_equal(read(out)[0], expected)


def test_bad_inputs_raise_typed_errors_before_any_work(tmp_path, pixel_model):
    image = write_image(tmp_path / "s.tif", np.ones((2, 20, 20), np.uint8))
    with pytest.raises(BandMismatchError, match="2 bands but the model takes 3"):
        prediction.predict_raster(pixel_model, image, tmp_path / "m.tif", progress=False)
    trained = RsunetModel(keras_model=pixel_model.keras_model, bands=3, classes={0: "a"},
                          meta={"dtype": "uint16"})
    image3 = write_image(tmp_path / "s3.tif", np.ones((3, 20, 20), np.uint8))
    with pytest.raises(BandMismatchError, match="trained on uint16"):
        prediction.predict_raster(trained, image3, tmp_path / "m.tif", progress=False)
    for bad in [dict(overlap=16, window=16), dict(blend="max"), dict(output="x"),
                dict(prob_dtype="int16"), dict(batch_size=0)]:
        with pytest.raises(InputError):
            prediction.predict_raster(pixel_model, image3, tmp_path / "m.tif", progress=False,
                                      **bad)
    with pytest.raises(PatchSizeError):
        prediction.predict_raster(pixel_model, image3, tmp_path / "m.tif", window=0)
    (tmp_path / "exists.tif").write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        prediction.predict_raster(pixel_model, image3, tmp_path / "exists.tif", progress=False)
    assert (tmp_path / "exists.tif").read_bytes() == b"mine"


# ---- resumable and atomic ---------------------------------------------------------------

class Boom(Exception):
    pass


def _bands_image(tmp_path, rows=100):
    rng = np.random.default_rng(8)
    return write_image(tmp_path / "s.tif", random_image(rng, 3, rows, 37))


KW = dict(window=16, overlap=6, blend="hann", tta=True, output="probabilities", progress=False)


def test_interrupted_run_resumes_and_gives_identical_bytes(tmp_path, pixel_model, monkeypatch):
    image = _bands_image(tmp_path)
    ref = prediction.predict_raster(pixel_model, image, tmp_path / "ref.tif", **KW)

    def explode(j):
        if j == 4:
            raise Boom()
    monkeypatch.setattr(prediction, "_after_band", explode)
    out = tmp_path / "out.tif"
    with pytest.raises(Boom):
        prediction.predict_raster(pixel_model, image, out, **KW)
    assert not out.exists()  # the final name appears only when complete
    partial = tmp_path / ".out.tif.rsunet-partial"
    assert partial.is_dir()

    seen = []
    monkeypatch.setattr(prediction, "_after_band", seen.append)
    prediction.predict_raster(pixel_model, image, out, **KW)
    assert seen[0] == 5  # continued after the 5 finished bands, did not start over
    assert out.read_bytes() == ref.read_bytes()
    assert not partial.exists()


def test_a_different_call_does_not_resume_a_stale_partial(tmp_path, pixel_model, monkeypatch):
    image = _bands_image(tmp_path)
    other = dict(KW, overlap=4)
    ref = prediction.predict_raster(pixel_model, image, tmp_path / "ref.tif", **other)

    def explode(j):
        if j == 3:
            raise Boom()
    monkeypatch.setattr(prediction, "_after_band", explode)
    with pytest.raises(Boom):
        prediction.predict_raster(pixel_model, image, tmp_path / "out.tif", **KW)
    seen = []
    monkeypatch.setattr(prediction, "_after_band", seen.append)
    prediction.predict_raster(pixel_model, image, tmp_path / "out.tif", **other)
    assert seen[0] == 0
    assert (tmp_path / "out.tif").read_bytes() == ref.read_bytes()


def test_sigkilled_process_resumes_to_identical_bytes(tmp_path, pixel_model):
    image = _bands_image(tmp_path, rows=120)
    model_path = tmp_path / "model.keras"
    pixel_model.keras_model.save(model_path)
    kw = dict(KW, output="both")
    ref = prediction.predict_raster(str(model_path), image, tmp_path / "ref.tif", **kw)
    out = tmp_path / "out.tif"
    script = textwrap.dedent(f"""
        import os, signal
        from rsunet import prediction
        def die(j):
            if j == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        prediction._after_band = die
        prediction.predict_raster({str(model_path)!r}, {str(image)!r}, {str(out)!r}, **{kw!r})
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    outs = prediction.predict_raster(str(model_path), image, out, **kw)
    assert outs["classes"].read_bytes() == ref["classes"].read_bytes()
    assert outs["probabilities"].read_bytes() == ref["probabilities"].read_bytes()


# ---- flat memory ------------------------------------------------------------------------

def test_accumulator_holds_one_window_of_rows_whatever_the_height(tmp_path, pixel_model,
                                                                   monkeypatch):
    shapes = []
    real = prediction._Accumulator.__init__

    def spy(self, k, window, width, blend):
        real(self, k, window, width, blend)
        shapes.append(self.values.shape)
    monkeypatch.setattr(prediction._Accumulator, "__init__", spy)
    for rows in (20, 300):
        image = write_image(tmp_path / f"s{rows}.tif", np.ones((3, rows, 30), np.uint8))
        prediction.predict_raster(pixel_model, image, tmp_path / f"m{rows}.tif", window=16,
                                  overlap=4, progress=False)
    assert shapes == [(4, 16, 30), (4, 16, 30)]


def test_window_offsets_cover_every_pixel():
    for length in range(1, 60):
        for window in (1, 7, 16):
            for overlap in range(window):
                offs = prediction.window_offsets(length, window, window - overlap)
                covered = np.zeros(max(length, window), bool)
                for o in offs:
                    covered[o:o + window] = True
                assert covered[:length].all() and offs[0] == 0
                assert offs == sorted(set(offs))


# ---- precision -----------------------------------------------------------------------

@pytest.mark.parametrize("faster", ["bfloat16", "auto"])
def test_faster_precisions_keep_the_float32_labels_on_real_chips(tmp_path, faster):
    """A U-Net trained on three bundled chips maps the three bundled test chips in
    bfloat16, and with "auto" (batch norm folded; bfloat16 too where the CPU has it), with
    at least 99.9 % of float32's labels (precision.json, shared with R)."""
    from rsunet.example import example_data

    case = vectors("precision")["bfloat16"]
    model = VECTORS / case["model"]
    for chip in case["chips"]:
        image = example_data()["root"] / chip
        maps = {p: read(prediction.predict_raster(
                    model, image, tmp_path / f"{p}_{Path(chip).stem}.tif", window=case["window"],
                    overlap=case["overlap"], precision=p, progress=False))[0]
                for p in ("float32", faster)}
        assert (maps["float32"] == 0).any() and (maps["float32"] == 1).any()  # both classes
        assert (maps[faster] == maps["float32"]).mean() >= case["min_agreement"], chip


def test_float32_maps_are_the_models_own_predictions_and_auto_folds_batch_norm(tmp_path):
    """One window, no blending: precision="float32" writes the network's own output bit for
    bit; "auto" runs it with its batch normalisations folded (within float32 rounding)."""
    from rsunet import unet
    from rsunet.model import resolve_precision

    keras.utils.set_random_seed(4)
    net = unet(3, classes=3, depth=2, filters=4)
    rng = np.random.default_rng(4)
    for layer in net.layers:  # statistics as training leaves them, so folding changes weights
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(.5, 1.5, g.shape), rng.normal(0, .2, b.shape),
                               rng.normal(0, .2, m.shape), rng.uniform(.3, 3, v.shape)])
    model = RsunetModel(keras_model=net, bands=3, classes={0: "a", 1: "b", 2: "c"}, depth=2,
                        normalization={"normalize": "dataset", "mean": [120.0] * 3, "std": [60.0] * 3})
    data = rng.integers(1, 256, size=(3, 32, 32)).astype(np.uint8)
    image = write_image(tmp_path / "s.tif", data)
    own = net.predict_on_batch(model.normalize(np.moveaxis(data, 0, -1)[None]))[0]
    args = dict(window=32, overlap=0, blend="average", output="probabilities", progress=False)
    exact = read(prediction.predict_raster(model, image, tmp_path / "f.tif", precision="float32", **args))
    np.testing.assert_array_equal(np.moveaxis(exact, 0, -1), own)
    auto = read(prediction.predict_raster(model, image, tmp_path / "a.tif", precision="auto", **args))
    assert not np.array_equal(auto, exact)
    # folded in float32: rounding only; where the CPU has bfloat16, "auto" computes in it
    tolerance = 1e-5 if resolve_precision("auto") == "float32" else 2e-2
    np.testing.assert_allclose(np.moveaxis(auto, 0, -1), own, atol=tolerance)


def test_auto_batches_hold_about_2_to_the_17_pixels_on_a_cpu(monkeypatch, pixel_model):
    monkeypatch.setattr(prediction, "_gpu_present", lambda: False)
    net = small_unet()
    calls = {w: prediction._check_params(net, w, 0, "hann", "classes", "float32", "auto")["batch_size"]
             for w in (64, 128, 256, 512, 1024)}
    assert calls == {64: 32, 128: 8, 256: 2, 512: 1, 1024: 1}
    monkeypatch.setattr(prediction, "_gpu_present", lambda: True)
    assert prediction._check_params(net, 256, 0, "hann", "classes", "float32", "auto")["batch_size"] == 16
    for bad in (0, 2.5, True, "max"):
        with pytest.raises(InputError, match="batch_size must be a positive integer or 'auto'"):
            prediction._check_params(pixel_model, 16, 0, "hann", "classes", "float32", bad)


def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    from rsunet import model as network

    monkeypatch.setattr(network, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert network.resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(network, "_cpu_flags", lambda: {"avx512f", "avx2"})
    assert network.resolve_precision("auto") == "float32"
    assert network.resolve_precision("bfloat16") == "bfloat16"  # asked for: emulated if need be
    with pytest.raises(InputError, match="precision must be one of"):
        network.resolve_precision("float16")


def test_a_bfloat16_copy_has_the_same_weights_and_float32_outputs():
    from rsunet.model import with_precision

    net = small_unet().keras_model
    copy = with_precision(net, "bfloat16")
    assert copy is not net and with_precision(net, "float32") is net
    for a, b in zip(net.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    inner = [layer for layer in copy.layers if layer.name not in copy.output_names
             and not isinstance(layer, keras.layers.InputLayer)]
    assert {layer.dtype_policy.name for layer in inner} == {"mixed_bfloat16"}
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    y = copy.predict_on_batch(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, net.predict_on_batch(x), atol=0.1)


def test_an_unknown_precision_is_refused_before_any_work(tmp_path, pixel_model):
    image = write_image(tmp_path / "s.tif", random_image(np.random.default_rng(2), 3, 40, 40))
    with pytest.raises(InputError, match="precision"):
        prediction.predict_raster(pixel_model, image, tmp_path / "m.tif", window=16, overlap=4,
                                  precision="half", progress=False)
    assert not (tmp_path / "m.tif").exists()


# ---- uncertainty -----------------------------------------------------------------------

def by_hand_probabilities():
    """The shared per-pixel model's probabilities (rows, cols, K) and validity, in numpy."""
    data = read(VECTORS / VEC["image"]).astype(np.float64)
    logits = np.einsum("bhw,bk->hwk", data, np.array(VEC["kernel"])) + np.array(VEC["bias"])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True), np.all(data != VEC["nodata"], axis=0)


def entropy_by_hand(p):
    return -(p * np.log(p)).sum(-1) / np.log(p.shape[-1])


def margin_by_hand(p):
    top = np.sort(p, axis=-1)
    return 1 - (top[..., -1] - top[..., -2])


@pytest.mark.parametrize("kind,by_hand", [("entropy", entropy_by_hand), ("margin", margin_by_hand)])
@pytest.mark.parametrize("case", VEC["cases"][:3], ids=lambda c: "{window}-{overlap}-{blend}-{tta}".format(**c))
def test_uncertainty_layers_equal_numpy_on_the_whole_array(tmp_path, kind, by_hand, case):
    probs, valid = by_hand_probabilities()
    outs = prediction.predict_raster(VECTORS / VEC["model"], VECTORS / VEC["image"],
                                     tmp_path / "map.tif", uncertainty=kind, progress=False, **case)
    assert set(outs) == {"classes", "uncertainty"}
    with rasterio.open(outs["uncertainty"]) as src:
        u = src.read(1)
        assert src.descriptions == (f"uncertainty_{kind}",) and src.tags()["RSUNET_UNCERTAINTY"] == kind
        assert src.crs == rasterio.open(VECTORS / VEC["image"]).crs
    assert np.isnan(u[~valid]).all()
    np.testing.assert_allclose(u[valid], by_hand(probs[valid]), rtol=0, atol=1e-5)
    assert 0 <= u[valid].min() and u[valid].max() <= 1 and u[valid].std() > 0.01  # informative


def test_uint8_uncertainty_is_scaled_like_probabilities(tmp_path, pixel_model):
    data = random_image(np.random.default_rng(4), 3, 50, 60)
    image = write_image(tmp_path / "s.tif", data)
    f = prediction.predict_raster(pixel_model, image, tmp_path / "f.tif", window=16, overlap=4,
                                  uncertainty="margin", progress=False)
    q = prediction.predict_raster(pixel_model, image, tmp_path / "q.tif", window=16, overlap=4,
                                  uncertainty="margin", prob_dtype="uint8", progress=False)
    exact, scaled = read(f["uncertainty"])[0], read(q["uncertainty"])[0]
    valid = ~np.isnan(exact)
    np.testing.assert_array_equal(scaled[valid], np.rint(exact[valid] * 254).astype(np.uint8))
    assert (scaled[~valid] == 255).all()


def test_tta_uncertainty_measures_disagreement_between_the_views(tmp_path, pixel_model):
    rng = np.random.default_rng(6)
    data = rng.integers(1, 256, size=(3, 48, 56)).astype(np.uint8)
    image = write_image(tmp_path / "s.tif", data)
    args = dict(window=32, overlap=8, tta=True, output="probabilities", progress=False)
    # a per-pixel model gives the same answer in every view: no disagreement anywhere
    flat = prediction.predict_raster(pixel_model, image, tmp_path / "p.tif", uncertainty="tta", **args)
    assert np.nanmax(read(flat["uncertainty"])) < 1e-5
    # a U-Net sees different neighbourhoods once rotated: disagreement, in 0..1, and the
    # probabilities themselves are those of a TTA run without the uncertainty layer
    unet = small_unet()
    with_u = prediction.predict_raster(unet, image, tmp_path / "u.tif", uncertainty="tta",
                                       precision="float32", **args)
    plain = prediction.predict_raster(unet, image, tmp_path / "plain.tif", precision="float32", **args)
    u = read(with_u["uncertainty"])[0]
    assert u.max() > 0.01 and u.min() >= 0 and u.max() <= 1
    np.testing.assert_array_equal(read(with_u["probabilities"]), read(plain))


def test_uncertainty_arguments_are_checked_before_any_work(tmp_path, pixel_model):
    image = write_image(tmp_path / "s.tif", random_image(np.random.default_rng(2), 3, 40, 40))
    with pytest.raises(InputError, match="pass tta=True"):
        prediction.predict_raster(pixel_model, image, tmp_path / "m.tif", window=16, overlap=4,
                                  uncertainty="tta", progress=False)
    with pytest.raises(InputError, match="uncertainty must be one of"):
        prediction.predict_raster(pixel_model, image, tmp_path / "m.tif", window=16, overlap=4,
                                  uncertainty="variance", progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "s.tif"]


def dropout_unet(seed=3):
    """A tiny U-Net with dropout, as unet(dropout=...) builds it, sharpened like small_unet."""
    from rsunet import unet

    keras.utils.set_random_seed(seed)
    net = unet(3, classes=2, depth=2, filters=4, batch_norm=False, dropout=0.3)
    return RsunetModel(keras_model=net, bands=3, classes={0: "a", 1: "b"}, depth=2)


def test_mc_dropout_disagreement_is_repeatable_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    image = write_image(tmp_path / "s.tif", rng.integers(1, 256, size=(3, 80, 64)).astype(np.uint8))
    model = dropout_unet()
    args = dict(window=32, overlap=8, uncertainty="mc_dropout", mc_passes=4, output="both",
                precision="float32", progress=False)
    first = prediction.predict_raster(model, image, tmp_path / "a.tif", **args)
    again = prediction.predict_raster(model, image, tmp_path / "b.tif", **args)
    u = read(first["uncertainty"])[0]
    assert u.max() > 0.001 and u.min() >= 0 and u.max() <= 1  # the passes differ
    for kind in first:  # the masks follow the pixels: the same call gives the same bytes
        assert first[kind].read_bytes() == again[kind].read_bytes(), kind
    # the probabilities are the mean of the passes: not those of the deterministic model
    plain = prediction.predict_raster(model, image, tmp_path / "plain.tif", window=32, overlap=8,
                                      output="probabilities", precision="float32", progress=False)
    assert not np.array_equal(read(first["probabilities"]), read(plain))

    interrupted_run(monkeypatch, 2, model, image, tmp_path / "c.tif", **args)
    resumed = prediction.predict_raster(model, image, tmp_path / "c.tif", **args)
    for kind in first:
        assert resumed[kind].read_bytes() == first[kind].read_bytes(), kind


def test_mc_dropout_needs_a_model_with_dropout(tmp_path, pixel_model):
    image = write_image(tmp_path / "s.tif", random_image(np.random.default_rng(2), 3, 40, 40))
    with pytest.raises(InputError, match="no dropout layer"):
        prediction.predict_raster(pixel_model, image, tmp_path / "m.tif", window=16, overlap=4,
                                  uncertainty="mc_dropout", progress=False)
    with pytest.raises(InputError, match="mc_passes must be a positive integer"):
        prediction.predict_raster(dropout_unet(), image, tmp_path / "m.tif", window=16, overlap=4,
                                  uncertainty="mc_dropout", mc_passes=0, progress=False)
    assert not (tmp_path / "m.tif").exists()


# ---- blocks of whole windows ------------------------------------------------------------

def _blocked(monkeypatch, rows, cols):
    monkeypatch.setattr(prediction, "BLOCK_ROWS", rows)
    monkeypatch.setattr(prediction, "BLOCK_COLUMNS", cols)


def interrupted_run(monkeypatch, n, model, image, out, **kw):
    """Run predict_raster until ``n`` bands are saved, then kill it (an exception): the
    bands it finished."""
    bands = []

    def stop(j):
        bands.append(j)
        if len(bands) == n:
            raise Boom()
    monkeypatch.setattr(prediction, "_after_band", stop)
    with pytest.raises(Boom):
        prediction.predict_raster(model, image, out, **kw)
    monkeypatch.setattr(prediction, "_after_band", None)
    return bands


def _blocks_image(tmp_path):
    rng = np.random.default_rng(11)
    base = rng.integers(1, 256, size=(3, 23, 30)).astype(np.float32)
    data = np.clip(np.kron(base, np.ones((4, 4))) + rng.normal(0, 8, (3, 92, 120)), 0, 255)
    data = data.astype(np.uint8)
    data[:, :9, :13] = 0  # a nodata corner
    return write_image(tmp_path / "s.tif", data)


@pytest.fixture(scope="module")
def unet_model():
    return small_unet()


@pytest.mark.parametrize("blend,tta,prob_dtype", [
    ("hann", False, "float32"), ("centre", False, "uint8"), ("average", False, "float32"),
    ("hann", True, "uint8"), ("centre", True, "float32")])
def test_blocks_give_the_bytes_of_one_pass(tmp_path, monkeypatch, unet_model, blend, tta,
                                          prob_dtype):
    image = _blocks_image(tmp_path)
    # one window per model call: blocks batch windows differently from one pass, and a
    # convolution can round a window differently in another batch (oneDNN on an AVX2 CPU,
    # 3.6e-7); batched, the two agree to that rounding (tests/test_distributed.py)
    kw = dict(window=16, overlap=6, blend=blend, tta=tta, output="both",
              prob_dtype=prob_dtype, batch_size=1, progress=False)
    _blocked(monkeypatch, None, None)  # one block: the single pass over the scene
    ref = prediction.predict_raster(unet_model, image, tmp_path / "ref.tif", **kw)
    layouts = []
    real = prediction._Layout.of
    monkeypatch.setattr(prediction._Layout, "of",
                        staticmethod(lambda *a: layouts.append(real(*a)) or layouts[-1]))
    _blocked(monkeypatch, 30, 35)
    outs = prediction.predict_raster(unet_model, image, tmp_path / "out.tif", **kw)
    assert len(layouts[0].blocks) >= 9 and len(layouts[0].row_groups) >= 3
    for kind in ("classes", "probabilities"):
        assert outs[kind].read_bytes() == ref[kind].read_bytes(), kind


def test_an_interrupted_blocked_run_recomputes_only_unfinished_blocks(tmp_path, monkeypatch,
                                                                     pixel_model):
    image = _blocks_image(tmp_path)
    # one window a call: blocks group windows into calls of other sizes, and even a
    # per-pixel Keras model rounds differently in a call of another size (AVX2 oneDNN)
    kw = dict(KW, window=16, overlap=6, output="both", batch_size=1)
    _blocked(monkeypatch, None, None)
    ref = prediction.predict_raster(pixel_model, image, tmp_path / "ref.tif", **kw)
    _blocked(monkeypatch, 30, 35)
    out = tmp_path / "out.tif"
    bands = interrupted_run(monkeypatch, 40, pixel_model, image, out, **kw)
    assert not out.exists()
    store = tmp_path / ".out.tif.rsunet-partial"
    finished = sorted(p.name for p in store.glob("block_*.json"))
    again = []
    monkeypatch.setattr(prediction, "_after_band", again.append)
    outs = prediction.predict_raster(pixel_model, image, out, **kw)
    total = prediction._Layout.of(92, 120, 16, 6, 30, 35).total_rows()
    assert len(bands) == 40 < total
    assert len(bands) + len(again) == total  # nothing finished was computed twice
    assert len(finished) >= 3
    for kind in ("classes", "probabilities"):
        assert outs[kind].read_bytes() == ref[kind].read_bytes(), kind
    assert not store.exists()


def test_layout_cores_tile_the_scene_and_halos_reach_every_window():
    for height, width, window, overlap, rows, cols in [(92, 120, 16, 6, 30, 35),
                                                       (10, 7, 16, 4, 3, 2), (300, 50, 32, 0, 64, 1)]:
        layout = prediction._Layout.of(height, width, window, overlap, rows, cols)
        owner = np.zeros((height, width), int)
        for b, ((ja, jb), (ma, mb)) in enumerate(layout.blocks):
            r0, r1 = layout.row_offs[ja], layout.edge(layout.row_offs, height, jb - 1)
            c0, c1 = layout.core_cols(b)
            owner[r0:r1, c0:c1] += 1
            # every window touching the core is in the block, and only those
            for i, r in enumerate(layout.row_offs):
                touches = r < r1 and r + window > r0
                assert (i in layout.window_rows(b)) == touches
            for m, c in enumerate(layout.col_offs):
                assert (m in layout.window_cols(b)) == (c < c1 and c + window > c0)
        assert (owner == 1).all()


def test_any_object_with_predict_probabilities_bands_and_classes_is_a_model(tmp_path, pixel_model):
    class Mine:  # what predict_raster's docstring promises to take: nothing more
        bands, classes = 3, {0: "a", 1: "b", 2: "c", 3: "d"}

        def predict_probabilities(self, batch):
            return pixel_model.predict_probabilities(batch)

    data = random_image(np.random.default_rng(9), 3, 30, 40)
    image = write_image(tmp_path / "s.tif", data)
    mine = prediction.predict_raster(Mine(), image, tmp_path / "mine.tif", window=16, overlap=4,
                                     precision="float32", progress=False)
    ref = prediction.predict_raster(pixel_model, image, tmp_path / "ref.tif", window=16, overlap=4,
                                    precision="float32", progress=False)
    np.testing.assert_array_equal(read(mine), read(ref))

    class NoBands:
        classes = {0: "a"}

        def predict_probabilities(self, batch):
            return batch

    with pytest.raises(ModelFormatError, match="needs bands"):
        prediction.predict_raster(NoBands(), image, tmp_path / "x.tif", window=16, overlap=4,
                                  progress=False)


def test_a_sequential_keras_model_maps_in_bfloat16_too(tmp_path):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255),
                            keras.layers.Conv2D(4, 3, padding="same"),
                            keras.layers.Conv2D(2, 1, activation="softmax")])
    image = write_image(tmp_path / "s.tif", random_image(np.random.default_rng(1), 3, 40, 40))
    maps = [read(prediction.predict_raster(net, image, tmp_path / f"{p}.tif", window=16, overlap=4,
                                           output="probabilities", precision=p, progress=False))
            for p in ("float32", "bfloat16")]
    np.testing.assert_allclose(maps[1], maps[0], atol=0.05)
