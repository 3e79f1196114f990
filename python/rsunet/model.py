"""The U-Net, its losses and metrics (Keras 3, TensorFlow backend).

Masks hold class ids with 255 for unknown pixels (nodata, unlabelled, rotation fill).
Every loss and metric here takes ``y_true`` as those ids, ``(n, rows, cols)`` or
``(n, rows, cols, 1)``, and ``y_pred`` as the model's output: one sigmoid channel (two
classes: 0 and 1) or K softmax channels (class id = channel). Pixels with the ignore
value contribute nothing. All are registered with Keras, so saved models reload in
safe mode.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import ops

from rsunet.errors import InputError
from rsunet.labels import IGNORE

__all__ = ["unet", "make_loss", "LOSSES", "custom_objects", "BceDice", "Dice", "WeightedCrossEntropy",
           "Focal", "MaskedAccuracy", "MeanF1", "MeanIoU", "PRECISIONS", "resolve_precision", "gpu_present",
           "with_precision", "with_batch_norm_folded", "with_dropout_at_inference"]

PRECISIONS = ("auto", "float32", "bfloat16")
# CPU flags of native bfloat16 arithmetic (oneDNN then runs convolutions in bfloat16)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

EPS = 1e-7
LOSSES = ("bce_dice", "dice", "weighted_ce", "focal")


def unet(bands, classes=2, depth=4, filters=16, batch_norm=True, dropout=0.0, activation="auto",
         mixed_precision="auto"):
    """A U-Net for any band count, fully convolutional.

    The input shape is ``(None, None, bands)``: the trained model predicts windows of
    any size that is a multiple of ``2**depth``.

    Args:
        bands: number of input bands.
        classes: number of classes K (class ids 0..K-1).
        depth: number of poolings (the bottleneck sees ``size / 2**depth``).
        filters: filters of the first level, doubled at each level down.
        batch_norm: batch normalisation after each convolution.
        dropout: dropout rate in each block (0 for none).
        activation: ``"sigmoid"`` (one output channel, binary only), ``"softmax"`` (K
            channels) or ``"auto"``: sigmoid for two classes, softmax otherwise.
        mixed_precision: ``True``, ``False`` or ``"auto"`` (float16 compute where a GPU
            is present; the output stays float32).

    Returns:
        An uncompiled ``keras.Model`` named ``"unet"``.

    Raises:
        InputError: a setting is out of range.
    """
    bands, classes, depth, filters = int(bands), int(classes), int(depth), int(filters)
    if bands < 1 or classes < 2 or not 1 <= depth <= 8 or filters < 1:
        raise InputError(f"unet needs bands >= 1, classes >= 2, depth 1..8 and filters >= 1; "
                         f"got bands={bands}, classes={classes}, depth={depth}, filters={filters}")
    if not 0 <= float(dropout) < 1:
        raise InputError(f"dropout must be in [0, 1), got {dropout}")
    activation = _activation(activation, classes)
    dtype = "mixed_float16" if _use_mixed(mixed_precision) else None
    inputs = keras.Input((None, None, bands), name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = _block(x, filters * 2 ** level, batch_norm, dropout, dtype, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{level}")(x)
    x = _block(x, filters * 2 ** depth, batch_norm, dropout, dtype, "bottom")
    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(filters * 2 ** level, 2, strides=2, padding="same",
                                         dtype=dtype, name=f"up{level}")(x)
        x = keras.layers.Concatenate(dtype=dtype, name=f"skip{level}")([x, skips[level]])
        x = _block(x, filters * 2 ** level, batch_norm, dropout, dtype, f"dec{level}")
    channels = 1 if activation == "sigmoid" else classes
    outputs = keras.layers.Conv2D(channels, 1, activation=activation, dtype="float32",
                                  name="probabilities")(x)
    return keras.Model(inputs, outputs, name="unet")


def _activation(activation, classes):
    if activation == "auto":
        return "sigmoid" if classes == 2 else "softmax"
    if activation == "sigmoid" and classes != 2:
        raise InputError(f"a sigmoid output is for two classes; with {classes} use 'softmax'")
    if activation not in ("sigmoid", "softmax"):
        raise InputError(f"activation must be 'auto', 'sigmoid' or 'softmax', got {activation!r}")
    return activation


def _use_mixed(mixed_precision):
    if mixed_precision == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return bool(mixed_precision)


def resolve_precision(precision="auto"):
    """The precision a forward pass computes in: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` is bfloat16 on a CPU with native bfloat16 arithmetic (AVX512_BF16 or AMX;
    about 1.7x faster for a U-Net there, labels 99.97 % or more identical to float32 on
    the Amazon chips) when no GPU is in use, and float32 elsewhere: a GPU model may
    already compute in float16 (``mixed_precision``), and without native support
    bfloat16 is emulated and slower.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if gpu_present():
        return "float32"
    return "bfloat16" if _cpu_flags() & set(BF16_CPU_FLAGS) else "float32"


def gpu_present():
    """Whether TensorFlow sees a GPU (what precision, batch size and XLA choices depend on)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:  # not Linux: no way to know cheaply, so no bfloat16
        return set()
    return set(line.split(":", 1)[-1].split())


def with_precision(net, precision):
    """A copy of Keras model ``net`` that computes in ``precision`` (same weights).

    For ``"bfloat16"`` every layer but the outputs computes in bfloat16 with float32
    weights (Keras' ``mixed_bfloat16`` policy); the outputs stay float32, so
    probabilities sum to 1 as precisely as before. ``"float32"`` returns ``net`` itself.

    Raises:
        InputError: ``precision`` is unknown, or the model's layers cannot be rebuilt
            with another dtype policy (a custom layer without ``dtype`` in its config).
    """
    precision = resolve_precision(precision)
    if precision == "float32":
        return net
    copy = _PRECISION_COPIES.get(net)
    if copy is None:
        copy = _PRECISION_COPIES[net] = _rebuilt(net, precision)
    # the same copy for every call: its compiled predict function is traced once; the
    # weights are copied again each time, in case ``net`` was trained further meanwhile
    copy.set_weights(net.get_weights())
    return copy


_PRECISION_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _rebuilt(net, precision):
    # the output layers stay float32; a Sequential model's is its last layer
    outputs = {net.layers[-1].name} if isinstance(net, keras.Sequential) else set(net.output_names)

    def rebuilt(layer):
        config = layer.get_config()
        if layer.name not in outputs and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(net, clone_function=rebuilt)
    except Exception as exc:  # a layer that does not take a dtype policy
        raise InputError(f"model {net.name!r} cannot compute in {precision}: {exc}; "
                         "pass precision='float32'") from exc
    return copy


def with_batch_norm_folded(net):
    """A copy of Keras model ``net`` for predicting, with every batch normalisation that
    only follows a convolution folded into that convolution's kernel and bias.

    At prediction a batch normalisation is a per-channel scale and shift, so the
    convolution can apply it: one pass less over every feature map, about 12 % of a
    U-Net's time on a CPU. Outputs differ from ``net``'s by float32 rounding only (about
    1e-6). The copy is made once per network and its weights are folded again at each
    call, in case ``net`` was trained further meanwhile. A network with nothing to fold
    is returned as it is.
    """
    pairs = _conv_batch_norm_pairs(net)
    if not pairs:
        return net
    copy = _FOLDED_COPIES.get(net)
    if copy is None:
        copy = _FOLDED_COPIES[net] = _without_batch_norm(net, pairs)
    _fold_weights(net, copy, pairs)
    return copy


_FOLDED_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_FOLDABLE_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _conv_batch_norm_pairs(net):
    """``{convolution name: batch normalisation layer}`` for each convolution (linear,
    channels last) whose output goes to one batch normalisation over channels and
    nowhere else, in a functional model (read from its config)."""
    if isinstance(net, keras.Sequential) or not isinstance(net, keras.Model):
        return {}
    try:
        entries = net.get_config()["layers"]
    except (KeyError, NotImplementedError):  # a subclassed model: no graph to read
        return {}
    uses = {}  # layer name -> names of the layers that take its output
    for entry in entries:
        for source in _inbound_names(entry.get("inbound_nodes", [])):
            uses.setdefault(source, []).append(entry["name"])
    outputs = set(net.output_names)
    pairs = {}
    for layer in net.layers:
        after = uses.get(layer.name, [])
        if (type(layer) not in _FOLDABLE_CONVS or layer.name in outputs or len(after) != 1
                or layer.data_format != "channels_last" or layer.get_config()["activation"] != "linear"):
            continue
        bn = net.get_layer(after[0])
        if isinstance(bn, keras.layers.BatchNormalization) and bn.axis in (-1, len(layer.output.shape) - 1):
            pairs[layer.name] = bn
    return pairs


def _inbound_names(node):
    """Names of the layers whose tensors appear in a layer config's ``inbound_nodes``."""
    if isinstance(node, dict):
        history = node.get("config", {}).get("keras_history") if node.get("class_name") == "__keras_tensor__" else None
        if history:
            return [history[0]]
        return [name for value in node.values() for name in _inbound_names(value)]
    if isinstance(node, (list, tuple)):
        return [name for value in node for name in _inbound_names(value)]
    return []


class _Unchanged(keras.layers.Layer):
    """Stands where a folded batch normalisation was; never saved."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def _without_batch_norm(net, pairs):
    folded = {bn.name for bn in pairs.values()}

    def rebuilt(layer):
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        elif layer.name in folded:
            return _Unchanged(name=layer.name, dtype=layer.dtype_policy.name)
        return layer.__class__.from_config(config)

    return keras.models.clone_model(net, clone_function=rebuilt)


def _fold_weights(net, copy, pairs):
    """Each convolution's kernel and bias with its batch normalisation applied; the
    other layers' weights as they are in ``net``."""
    def values(variable):
        return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)

    for layer in net.layers:
        target = copy.get_layer(layer.name)
        if layer.name in pairs:
            bn = pairs[layer.name]
            scale = 1.0 / np.sqrt(values(bn.moving_variance) + bn.epsilon)
            if bn.scale:
                scale = scale * values(bn.gamma)
            bias = values(layer.bias) if layer.use_bias else 0.0
            shift = (bias - values(bn.moving_mean)) * scale + (values(bn.beta) if bn.center else 0.0)
            kernel = values(layer.kernel) * scale  # the kernel's last axis is its outputs
            target.set_weights([kernel.astype(np.float32), shift.astype(np.float32)])
        elif layer.weights and not isinstance(target, _Unchanged):
            target.set_weights(layer.get_weights())


class _DropoutAtInference(keras.layers.Dropout):
    """Dropout that also drops when predicting (Monte Carlo dropout); never saved."""

    def call(self, inputs, training=False):
        return super().call(inputs, training=True)


def with_dropout_at_inference(net):
    """A copy of Keras model ``net`` (same weights) whose dropout layers also drop at
    prediction, for Monte Carlo dropout, and the seed states of those layers.

    Setting every state to the same ``(a, b)`` pair before a call makes its random
    masks repeatable: the same input and pair give the same output.

    Raises:
        InputError: ``net`` has no dropout layer with a rate above 0.
    """
    if not any(isinstance(layer, keras.layers.Dropout) and layer.rate > 0 for layer in net.layers):
        raise InputError(f"model {net.name!r} has no dropout layer: Monte Carlo dropout needs a "
                         "model trained with dropout > 0 (unet(dropout=0.1)); use 'entropy' instead")

    def rebuilt(layer):
        if isinstance(layer, keras.layers.Dropout):
            return _DropoutAtInference.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(net, clone_function=rebuilt)
    copy.set_weights(net.get_weights())
    states = [layer.seed_generator.state for layer in copy.layers
              if isinstance(layer, _DropoutAtInference) and layer.rate > 0]
    return copy, states


def _block(x, n, batch_norm, dropout, dtype, name):
    for i in (1, 2):
        x = keras.layers.Conv2D(n, 3, padding="same", use_bias=not batch_norm,
                                kernel_initializer="he_normal", dtype=dtype, name=f"{name}_conv{i}")(x)
        if batch_norm:
            # momentum 0.9: with the few steps per epoch of small patch sets, Keras' 0.99
            # leaves the moving statistics far behind the weights, and validation swings
            x = keras.layers.BatchNormalization(momentum=0.9, dtype=dtype, name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation("relu", dtype=dtype, name=f"{name}_relu{i}")(x)
    if dropout:
        x = keras.layers.Dropout(float(dropout), dtype=dtype, name=f"{name}_dropout")(x)
    return x


# ---- what losses and metrics share --------------------------------------------------------

def _prepare(y_true, y_pred):
    """-> (one-hot targets (n, r, c, K) float32, probabilities (n, r, c, K), valid (n, r, c, 1))."""
    y_pred = ops.cast(y_pred, "float32")
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == len(y_pred.shape):
        labels = labels[..., 0]
    valid = ops.cast(ops.not_equal(labels, IGNORE), "float32")[..., None]
    labels = ops.where(ops.equal(labels, IGNORE), 0, labels)
    if y_pred.shape[-1] == 1:
        y_pred = ops.concatenate([1.0 - y_pred, y_pred], axis=-1)
    k = y_pred.shape[-1]
    onehot = ops.one_hot(labels, k, dtype="float32")
    return onehot, ops.clip(y_pred, EPS, 1.0 - EPS), valid


def _masked_mean(per_pixel, valid):
    return ops.sum(per_pixel * valid) / ops.maximum(ops.sum(valid), 1.0)


def _dice_loss(onehot, probs, valid, smooth=1.0):
    """1 - mean over classes of the soft Dice, over the batch's valid pixels."""
    axes = (0, 1, 2)
    inter = ops.sum(onehot * probs * valid, axis=axes)
    total = ops.sum((onehot + probs) * valid, axis=axes)
    return 1.0 - ops.mean((2.0 * inter + smooth) / (total + smooth))


class _MaskedLoss(keras.losses.Loss):
    """A loss over the valid pixels of the whole batch (returns one value per batch)."""

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        onehot, probs, valid = _prepare(y_true, y_pred)
        return self.masked(onehot, probs, valid)


@keras.saving.register_keras_serializable(package="rsunet")
class BceDice(_MaskedLoss):
    """Cross-entropy plus Dice loss (the course's BCE + Dice; categorical for K > 2)."""

    default_name = "bce_dice"

    def masked(self, onehot, probs, valid):
        ce = -ops.sum(onehot * ops.log(probs), axis=-1, keepdims=True)
        return _masked_mean(ce, valid) + _dice_loss(onehot, probs, valid)


@keras.saving.register_keras_serializable(package="rsunet")
class Dice(_MaskedLoss):
    """Soft Dice loss, averaged over classes."""

    default_name = "dice"

    def masked(self, onehot, probs, valid):
        return _dice_loss(onehot, probs, valid)


@keras.saving.register_keras_serializable(package="rsunet")
class WeightedCrossEntropy(_MaskedLoss):
    """Cross-entropy with a weight per class (e.g. inverse class frequency)."""

    default_name = "weighted_ce"

    def __init__(self, class_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def masked(self, onehot, probs, valid):
        ce = -onehot * ops.log(probs)
        if self.class_weights is not None:
            ce = ce * ops.convert_to_tensor(self.class_weights, "float32")
        return _masked_mean(ops.sum(ce, axis=-1, keepdims=True), valid)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="rsunet")
class Focal(_MaskedLoss):
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted by ``(1 - p_true)**gamma``."""

    default_name = "focal"

    def __init__(self, gamma=2.0, class_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def masked(self, onehot, probs, valid):
        p_true = ops.sum(onehot * probs, axis=-1, keepdims=True)
        loss = -((1.0 - p_true) ** self.gamma) * ops.log(p_true)
        if self.class_weights is not None:
            w = ops.sum(onehot * ops.convert_to_tensor(self.class_weights, "float32"), axis=-1, keepdims=True)
            loss = loss * w
        return _masked_mean(loss, valid)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "class_weights": self.class_weights}


def make_loss(loss, class_weights=None):
    """A loss object from its name (``"bce_dice"``, ``"dice"``, ``"weighted_ce"``, ``"focal"``).

    Raises:
        InputError: unknown name.
    """
    if isinstance(loss, keras.losses.Loss):
        return loss
    if loss == "bce_dice":
        return BceDice()
    if loss == "dice":
        return Dice()
    if loss == "weighted_ce":
        return WeightedCrossEntropy(class_weights)
    if loss == "focal":
        return Focal(class_weights=class_weights)
    raise InputError(f"loss must be one of {LOSSES} (or a keras Loss), got {loss!r}")


# ---- metrics: one confusion matrix per epoch, ignore pixels left out ------------------------

class _Confusion(keras.metrics.Metric):
    """Accumulates the K x K confusion matrix (rows: reference, columns: predicted)."""

    def __init__(self, n_classes=2, name=None, dtype=None):
        super().__init__(name=name or self.default_name, dtype=dtype)
        self.n_classes = int(n_classes)
        self.matrix = self.add_variable(shape=(self.n_classes, self.n_classes), initializer="zeros",
                                        name="confusion", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        onehot, probs, valid = _prepare(y_true, y_pred)
        k = self.n_classes
        pred = ops.one_hot(ops.argmax(probs, axis=-1), k, dtype="float32") * valid
        truth = ops.reshape(onehot[..., :k], (-1, k))
        self.matrix.assign_add(ops.matmul(ops.transpose(truth), ops.reshape(pred, (-1, k))))

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.n_classes, self.n_classes)))

    def _per_class(self):
        m = self.matrix
        tp = ops.diagonal(m)
        ref, pred = ops.sum(m, axis=1), ops.sum(m, axis=0)
        present = ops.cast((ref + pred) > 0, "float32")
        return tp, ref, pred, present

    def get_config(self):
        return {"n_classes": self.n_classes, "name": self.name}


@keras.saving.register_keras_serializable(package="rsunet")
class MaskedAccuracy(_Confusion):
    """Overall accuracy over pixels whose mask is not the ignore value."""

    default_name = "accuracy"

    def result(self):
        return ops.sum(ops.diagonal(self.matrix)) / ops.maximum(ops.sum(self.matrix), 1.0)


@keras.saving.register_keras_serializable(package="rsunet")
class MeanF1(_Confusion):
    """F1 score averaged over the classes present in reference or prediction (macro)."""

    default_name = "f1"

    def result(self):
        tp, ref, pred, present = self._per_class()
        f1 = 2.0 * tp / ops.maximum(ref + pred, 1.0)
        return ops.sum(f1 * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="rsunet")
class MeanIoU(_Confusion):
    """Intersection over union averaged over the classes present (macro)."""

    default_name = "iou"

    def result(self):
        tp, ref, pred, present = self._per_class()
        iou = tp / ops.maximum(ref + pred - tp, 1.0)
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)


def metrics(n_classes):
    """The per-epoch metrics train_unet reports: accuracy, F1 and IoU, ignoring 255."""
    return [MaskedAccuracy(n_classes), MeanF1(n_classes), MeanIoU(n_classes)]


def custom_objects() -> dict:
    """rsunet's serialisable losses and metrics, by name, for loading saved models."""
    return {cls.__name__: cls for cls in (BceDice, Dice, WeightedCrossEntropy, Focal,
                                          MaskedAccuracy, MeanF1, MeanIoU)}
