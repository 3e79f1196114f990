"""The U-Net and its losses/metrics: shapes for any band count, pixels with 255 ignored.

Mirrored by tests/testthat/test-model.R on the same vectors (model.json).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import need_module, vectors
from rsunet.errors import InputError

need_module("tensorflow")
import keras  # noqa: E402

from rsunet import model as M  # noqa: E402

V = vectors("model")


@pytest.mark.parametrize("bands,classes,channels", [(3, 2, 1), (7, 4, 4), (1, 3, 3)])
def test_unet_is_fully_convolutional_for_any_band_count(bands, classes, channels):
    net = M.unet(bands, classes, depth=3, filters=4, dropout=0.1)
    assert net.input_shape == (None, None, None, bands)
    for rows, cols in ((32, 32), (48, 64), (16, 40)):  # multiples of 2**3
        y = np.asarray(net(np.zeros((1, rows, cols, bands), np.float32)))
        assert y.shape == (1, rows, cols, channels)
    if channels > 1:
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    else:
        assert ((y >= 0) & (y <= 1)).all()


def test_unet_options_change_the_network():
    plain = M.unet(3, 2, depth=2, filters=4, batch_norm=False)
    bn = M.unet(3, 2, depth=2, filters=4, batch_norm=True, dropout=0.2)
    names = [layer.__class__.__name__ for layer in bn.layers]
    assert "BatchNormalization" in names and "Dropout" in names
    assert "BatchNormalization" not in [layer.__class__.__name__ for layer in plain.layers]
    assert M.unet(3, 2, depth=2, filters=8).count_params() > plain.count_params()
    assert M.unet(3, 2, depth=2, filters=4, activation="softmax").output_shape[-1] == 2
    assert M.unet(3, 2, depth=2, filters=4, mixed_precision=True).layers[-1].dtype_policy.name == "float32"


def test_bad_unet_arguments():
    with pytest.raises(InputError):
        M.unet(0, 2)
    with pytest.raises(InputError, match="sigmoid"):
        M.unet(3, 3, activation="sigmoid")
    with pytest.raises(InputError, match="loss"):
        M.make_loss("mse")


def _batch():
    y = np.array(V["y_true"], np.uint8)[None, ..., None]
    p = np.array(V["y_pred"], np.float32)[None, ..., None]
    return y, p


@pytest.mark.parametrize("name", ["bce_dice", "dice", "weighted_ce", "focal"])
def test_losses_match_numpy_and_ignore_255(name):
    y, p = _batch()
    loss = M.make_loss(name, V["class_weights"] if name == "weighted_ce" else None)
    assert float(loss(y, p)) == pytest.approx(V[name], rel=1e-5)
    # whatever the model says on unknown pixels does not matter
    p2 = np.where(y == 255, 0.999, p).astype(np.float32)
    assert float(loss(y, p2)) == pytest.approx(V[name], rel=1e-5)
    # a softmax model with the same probabilities gets the same loss
    soft = np.concatenate([1 - p, p], -1)
    assert float(loss(y, soft)) == pytest.approx(V[name], rel=1e-5)


def test_metrics_match_numpy_and_sklearn():
    sk = need_module("sklearn.metrics")
    y, p = _batch()
    for metric, key in zip(M.metrics(2), ("accuracy", "f1", "iou")):
        metric.update_state(y, p)
        assert float(metric.result()) == pytest.approx(V[key], rel=1e-6)
    rng = np.random.default_rng(0)
    yt = rng.integers(0, 4, size=(3, 9, 11)).astype(np.uint8)
    yt[rng.random(yt.shape) < 0.2] = 255
    probs = rng.dirichlet(np.ones(4), size=(3, 9, 11)).astype(np.float32)
    keep = yt != 255
    truth, pred = yt[keep], probs.argmax(-1)[keep]
    acc, f1, iou = M.metrics(4)
    for m in (acc, f1, iou):
        m.update_state(yt[..., None], probs)
    assert float(acc.result()) == pytest.approx(sk.accuracy_score(truth, pred), rel=1e-6)
    assert float(f1.result()) == pytest.approx(sk.f1_score(truth, pred, average="macro"), rel=1e-6)
    assert float(iou.result()) == pytest.approx(sk.jaccard_score(truth, pred, average="macro"), rel=1e-6)


@pytest.mark.parametrize("name", ["bce_dice", "focal"])
def test_compiled_models_reload_in_safe_mode(tmp_path, name):
    net = M.unet(2, 3, depth=2, filters=4)
    net.compile("adam", loss=M.make_loss(name, [1.0, 2.0, 0.5] if name != "dice" else None),
                metrics=M.metrics(3))
    x = np.random.default_rng(1).random((2, 16, 16, 2)).astype(np.float32)
    net.fit(x, np.zeros((2, 16, 16, 1), np.uint8), epochs=1, verbose=0)
    net.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(back.loss) is type(net.loss)
    np.testing.assert_allclose(back.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-5)
    assert {"BceDice", "Dice", "WeightedCrossEntropy", "Focal", "MeanF1"} <= set(M.custom_objects())


def _with_learnt_statistics(net, seed=0):
    """``net`` with batch-norm statistics and scales as training leaves them (not 0/1)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.3, 3, var.shape)])
    return net


def test_folding_batch_norm_keeps_the_outputs_and_drops_the_layers():
    net = _with_learnt_statistics(M.unet(4, 3, depth=2, filters=4, dropout=0.1))
    folded = M.with_batch_norm_folded(net)
    names = [layer.__class__.__name__ for layer in folded.layers]
    assert "BatchNormalization" not in names and "Dropout" in names
    assert folded.count_params() < net.count_params()  # the bias replaces 4 values a channel
    x = np.random.default_rng(1).normal(size=(2, 32, 48, 4)).astype(np.float32)
    expected = net.predict_on_batch(x)
    np.testing.assert_allclose(folded.predict_on_batch(x), expected, atol=1e-5)
    # one copy per network, refolded when the network's weights change
    _with_learnt_statistics(net, seed=1)
    assert M.with_batch_norm_folded(net) is folded
    np.testing.assert_allclose(folded.predict_on_batch(x), net.predict_on_batch(x), atol=1e-5)
    assert np.abs(net.predict_on_batch(x) - expected).max() > 1e-3


def test_folding_leaves_alone_what_it_cannot_fold():
    plain = M.unet(3, 2, depth=2, filters=4, batch_norm=False)
    assert M.with_batch_norm_folded(plain) is plain
    # a batch norm after a convolution whose output also goes elsewhere stays as it is
    inputs = keras.Input((None, None, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    normed = keras.layers.BatchNormalization(name="bn")(conv)
    branched = keras.Model(inputs, keras.layers.Add()([normed, conv]))
    assert M.with_batch_norm_folded(branched) is branched
