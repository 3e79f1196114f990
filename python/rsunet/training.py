"""Training a U-Net on a patch set: the training loop, its checkpoints and its history.

What it writes, the self-describing ``.keras`` model, is :mod:`rsunet.artefact`'s
(:func:`load_model`, :func:`save_model` and :class:`RsunetModel` are re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import time
from pathlib import Path

import numpy as np

from rsunet.artefact import FORMAT, RsunetModel, load_model, read_metadata, save_model
from rsunet.errors import InputError, OutputExistsError, PatchSetMismatchError
from rsunet.io import atomic_path, check_not_input
from rsunet.normalization import SCALED_ALONE, band_stats, input_channels, model_input, normalization_record
from rsunet.quiet import new_models_expected

__all__ = ["train_unet", "plot_history", "load_model", "save_model", "read_metadata", "RsunetModel"]


def train_unet(patches, out, depth=4, filters=16, batch_norm=True, dropout=0.0, loss="bce_dice",
               class_weights=None, epochs=20, batch_size=16, learning_rate=1e-3, schedule="constant",
               patience=5, monitor="val_loss", augmentation=True, normalize="dataset", seed=0,
               mixed_precision="auto", sampling="uniform", strategy="auto", stream="auto", resume=True,
               overwrite=False, progress=True, callbacks=None):
    """Train a U-Net on a patch set and save it as one self-describing ``.keras`` file.

    Training patches (``split == "train"``) are augmented on the fly in a ``tf.data``
    pipeline (parallel map, prefetch); validation patches (``split == "validation"``)
    never are; ``"test"`` patches are not used. Inputs are normalised per channel with the
    mean and standard deviation of the training patches' valid pixels (after the scene
    scaling of ``normalize="scene"``; ``"both"`` has two channels per band); pixels whose
    mask is 255 (unknown, nodata, rotation fill) count in no loss and no metric.

    Batches are read from the patch set's memory-mapped stacks as training goes
    (``stream``), so memory does not grow with the number of patches, or, for a set that
    fits, gathered from the patches held in memory; the batches, their augmentation and
    the losses are the same either way.

    After every epoch the model is checkpointed in a hidden folder beside ``out``
    (``.<name>.training/``) and the log ``<name>_history.csv`` is rewritten. If the run
    is interrupted, calling ``train_unet`` again with the same arguments continues at
    the next epoch (``epochs`` and ``patience`` may be raised to train longer). Training
    stops early when ``monitor`` has not improved for ``patience`` epochs; ``out``
    receives the weights of the best epoch, and ``<name>_history.png`` the curves.

    Args:
        patches: a patch folder or :class:`rsunet.patches.PatchSet` with a ``split``
            column (run :func:`rsunet.split_patches` first).
        out: the model file to write (``.keras``).
        depth: U-Net depth (number of poolings); windows must be multiples of ``2**depth``.
        filters: filters of the first level (doubled at each level).
        batch_norm: batch normalisation after each convolution.
        dropout: dropout rate in each block.
        loss: ``"bce_dice"`` (the course's cross-entropy + Dice), ``"dice"``,
            ``"weighted_ce"`` or ``"focal"``.
        class_weights: for ``"weighted_ce"`` and ``"focal"``: one weight per class id,
            or ``"auto"`` (also called ``"balanced"``: each class weighted by the inverse of
            its pixel frequency in the training patches).
        epochs: the last epoch to train.
        batch_size: patches per step.
        learning_rate: Adam's learning rate (its starting value with a schedule).
        schedule: ``"constant"`` or ``"cosine"`` (the learning rate decays along a half
            cosine from ``learning_rate`` at the first step to 1 % of it at the last step
            of epoch ``epochs``: large steps early, fine ones at the end).
        patience: epochs without improvement of ``monitor`` before stopping.
        monitor: ``"val_loss"`` (lower is better) or ``"val_f1"``, ``"val_iou"``,
            ``"val_accuracy"`` (higher is better); it chooses the best epoch too.
        augmentation: ``True`` (the defaults of :func:`rsunet.augment`), ``False``, or a
            dict of :func:`rsunet.augment`'s settings, e.g. ``{"p_rotation": 0.8}``.
        normalize: ``"dataset"``: raw values, standardised with the training pixels' band
            means and deviations, the same for every scene (right for calibrated data,
            e.g. surface reflectance). ``"scene"``: each scene's 2 and 98 % band
            percentiles are first mapped to 0 and 1, so haze, illumination and contrast
            that differ between scenes do not move the input; prediction scales each
            scene by its own percentiles. Right for uncalibrated imagery (8-bit
            composites, drone mosaics), wrong where a scene holds a single land cover.
            ``"scene_joint"``: as ``"scene"`` with one stretch for all bands (the lowest
            band's 2 % to 0, the highest band's 98 % to 1), so a scene keeps its colour.
            ``"both"``: the network gets 2 x bands input channels, the bands standardised as
            with ``"dataset"`` (absolute brightness) followed by the bands scene-scaled as
            with ``"scene"`` and then standardised (relative contrast), so it can learn when
            a scene's stretch is meaningful; augmentation changes the raw pixels before both
            are made. The model's ``bands`` stays the image's band count; prediction scales
            each scene by its own percentiles, as for ``"scene"``. ``"scene"`` and ``"both"``
            need the scene percentiles that :func:`rsunet.make_patches` records.
        seed: random seed of the weights, the batch order and the augmentation.
        mixed_precision: ``"auto"`` (float16 compute on a GPU), ``True`` or ``False``;
            the output layer stays float32 and the loss is scaled (Keras'
            ``LossScaleOptimizer``). Recorded in the model (``mixed_precision``).
        strategy: ``"auto"``: ``tf.distribute.MirroredStrategy`` over the GPUs when more
            than one is visible, else the default strategy (one device); ``"mirrored"``
            (over the GPUs, or the logical CPU devices without one), ``"default"``, or a
            ``tf.distribute.Strategy``. ``batch_size`` is the global batch (split among
            the replicas); checkpoints, resuming and the model file are the same.
        sampling: ``"uniform"``: every epoch draws each training patch once, in a random
            order. ``"balanced"``: for rare targets; each draw picks a class (one of those
            present in the training patches, with equal chance), then a patch in which that
            class is present (the index's ``n_<class>`` columns), so a patch is drawn with
            probability ``1/K * sum(1/|patches with c|)`` over its classes ``c``, and each
            class is present in at least ``1/K`` of the drawn patches. The loss then weighs
            the rare classes' patches more (as if they were repeated in the set); the
            validation patches and their loss are not resampled. Epochs keep their
            length; patches without a labelled pixel are never drawn.
        stream: ``True``: read each batch from disk in the ``tf.data`` pipeline (parallel
            reads, prefetch); ``False``: hold the training and validation patches in memory;
            ``"auto"``: streamed, except on a GPU machine for a set of up to 256 MiB of
            patches (``IN_MEMORY_BYTES``), held in memory there (docs/architecture.md says
            why). The results are the same.
        resume: continue an interrupted run of the same call; ``False`` starts afresh.
        overwrite: replace an existing ``out``.
        progress: show a progress bar over epochs.
        callbacks: extra Keras callbacks (run after rsunet's checkpointing).

    Returns:
        The history, a pandas DataFrame with one row per epoch: ``epoch``, ``loss``,
        ``accuracy``, ``f1``, ``iou`` and the same with ``val_``, ``seconds``.

    Raises:
        InputError: no ``split`` column, no training or validation patches, a bad
            setting, or an interrupted run with other settings (use ``resume=False``).
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    import keras

    from rsunet import model as _model
    from rsunet.augmentation import AugmentParams

    _check_numbers(depth=depth, filters=filters, dropout=dropout, epochs=epochs,
                   batch_size=batch_size, learning_rate=learning_rate, patience=patience, seed=seed)
    out = Path(out)
    if out.suffix != ".keras":
        raise InputError(f"out must be a .keras file, got {out}")
    history_files = [out.with_name(f"{out.stem}_history{ext}") for ext in (".csv", ".png")]
    check_not_input([out, *history_files], patches)
    mine = resume and _Run.interrupted(out)  # an interrupted run's own history files
    for path in [out] + ([] if mine else history_files):
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")
    sets = _patch_sets(patches)
    ps = sets[0]  # they agree in bands, dtype, size and classes
    train_ids, val_ids = _split_ids(sets)
    aug = AugmentParams.from_any(augmentation)
    seen = [i for one in sets for i, n in one.pixel_counts().items() if n > 0]
    n_classes = max(max(ps.classes), max(seen, default=1)) + 1
    settings = dict(depth=int(depth), filters=int(filters), batch_norm=bool(batch_norm),
                    dropout=float(dropout), loss=loss, class_weights=class_weights,
                    batch_size=int(batch_size), learning_rate=float(learning_rate),
                    schedule=schedule, monitor=monitor, augmentation=aug.as_dict() if aug else None,
                    sampling=sampling,
                    normalize=normalize, seed=int(seed),
                    n_classes=n_classes, patches=_folders(sets),
                    train=_digest(train_ids), validation=_digest(val_ids))
    if schedule not in SCHEDULES:
        raise InputError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if monitor not in MONITORS:
        raise InputError(f"monitor must be one of {MONITORS}, got {monitor!r}")
    if int(epochs) < 1 or int(batch_size) < 1 or int(patience) < 1:
        raise InputError(f"epochs, batch_size and patience must be at least 1, got {epochs}, "
                         f"{batch_size}, {patience}")
    train = _Patches(list(zip(sets, train_ids)), normalize)
    val = _Patches(list(zip(sets, val_ids)), normalize)
    stream = _streams(stream, train, val)
    # one pass over the training patches, chunk by chunk, before _Run: a broken set leaves nothing
    mean, std, counts = train.statistics()
    weights = _class_weights(class_weights, counts, n_classes)
    draws = _draw_weights(sampling, train, n_classes)
    run = _Run(out, settings, resume)
    activation = "sigmoid" if n_classes == 2 else "softmax"
    steps = -(-len(train) // int(batch_size))
    devices = _strategy(strategy)

    with devices.scope():  # the weights and the optimizer's slots live on every replica
        if run.resumed:
            net = keras.models.load_model(run.last_path, custom_objects=_model.custom_objects(),
                                          safe_mode=True)
        else:
            keras.utils.set_random_seed(int(seed))
            net = _model.unet(input_channels(ps.bands, normalize), n_classes, depth, filters,
                              batch_norm, dropout, activation=activation,
                              mixed_precision=mixed_precision)
            optimizer = keras.optimizers.Adam(_learning_rate(learning_rate, schedule, int(epochs) * steps))
            if _is_mixed(net):  # float16 gradients underflow without loss scaling
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            net.compile(optimizer=optimizer, loss=_model.make_loss(loss, weights),
                        metrics=_model.metrics(n_classes))
        start, epochs = run.epoch, int(epochs)
        if _xla_on_cpu(devices, (epochs - start) * steps * int(batch_size) * ps.size ** 2):
            net.jit_compile = True

    run.state["patience"] = int(patience)
    if start < epochs and run.state.get("wait", 0) < int(patience):
        train_ds = _train_dataset(train, mean, std, aug, int(batch_size), int(seed), start, epochs,
                                  steps, stream, draws)
        val_ds = _plain_dataset(val, mean, std, int(batch_size), stream)
        cbs = [run.callback()] + ([_EpochBar(start, epochs)] if progress else []) + list(callbacks or [])
        with new_models_expected():  # a new network each call: TensorFlow's retracing advice is moot
            net.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=start,
                    steps_per_epoch=steps, callbacks=cbs, verbose=0, shuffle=False)

    final = _model.unet(input_channels(ps.bands, normalize), n_classes, depth, filters, batch_norm,
                        dropout, activation=activation, mixed_precision=mixed_precision)
    final.load_weights(run.best_path)
    history = run.history()
    best = history.loc[history["epoch"] == run.state["best_epoch"]].iloc[0]
    meta = dict(format=FORMAT, bands=ps.bands, band_names=None,
                dtype=next(iter(ps.scenes.values()))["dtype"],
                normalization=normalization_record(mean, std, normalize),
                classes={str(i): ps.classes.get(i, str(i)) for i in range(n_classes)},
                patch_size=ps.size, depth=int(depth), multiple=2 ** int(depth),
                ignore_value=ps.ignore_value, activation=activation, filters=int(filters),
                batch_norm=bool(batch_norm), dropout=float(dropout), loss=loss, schedule=schedule,
                class_weights=None if weights is None else [float(w) for w in weights],
                augmentation=settings["augmentation"], seed=int(seed), monitor=monitor, sampling=sampling,
                mixed_precision=_is_mixed(final), replicas=int(devices.num_replicas_in_sync),
                best_epoch=int(best["epoch"]), epochs_trained=int(history["epoch"].max()),
                best={k: float(v) for k, v in best.items() if k != "epoch"},
                patches=settings["patches"], n_train=len(train), n_validation=len(val))
    save_model(final, out, meta, overwrite=True)
    plot_history(history, run.plot_path, overwrite=True)
    run.finish()
    return history


MONITORS = ("val_loss", "val_accuracy", "val_f1", "val_iou")
STRATEGIES = ("auto", "mirrored", "default")


def _strategy(strategy):
    """The ``tf.distribute.Strategy`` to train under: ``"auto"`` mirrors over the GPUs when
    there are several, ``"mirrored"`` over the GPUs or, without any, the logical CPU devices
    (how CI tests it), ``"default"`` is the one device TensorFlow picks."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {STRATEGIES} or a tf.distribute.Strategy, "
                         f"got {strategy!r}")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if strategy == "mirrored" or (strategy == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.get_strategy()


# Pixels a run passes through the network (epochs left x steps x batch x patch area) below
# which XLA's compilation costs more than it saves on a CPU (2 AVX2 cores: it adds 7-8 s to
# the first epoch of a depth-2, 8-filter U-Net, which saves 0.8 s an epoch of 24 steps of
# 8 x 64^2 patches, so about 7 M pixels to even out; a depth-4, 16-filter one: 10 s more,
# 0.5 s less a step of 16 x 128^2, so about 5 M pixels). Below it a run keeps Keras' step.
XLA_MIN_PIXELS = 10_000_000


def _xla_on_cpu(devices, pixels):
    """Whether to compile the training step with XLA where Keras would not: on a CPU with
    one replica, for a run that passes at least ``XLA_MIN_PIXELS`` through the network.
    Keras' "auto" leaves XLA off when no GPU is present, yet it fuses the U-Net's
    elementwise work (batch norm, activations, their gradients): 3.43 -> 1.72 s a step of
    16 x 128^2 patches on a 2-core AVX2 CPU. GPUs keep Keras' own choice, and a mirrored
    strategy its plain step."""
    from rsunet.model import gpu_present

    return devices.num_replicas_in_sync == 1 and not gpu_present() and pixels >= XLA_MIN_PIXELS


def _is_mixed(net):
    """Whether the network computes in float16 (its outputs stay float32)."""
    return any(layer.dtype_policy.name == "mixed_float16" for layer in net.layers)


def _check_numbers(**values):
    """Numeric settings must be numbers: ``epochs="ten"`` is a typed error, not Python's."""
    for name, value in values.items():
        try:
            float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a number, got {value!r}") from None
SCHEDULES = ("constant", "cosine")


def _learning_rate(learning_rate, schedule, total_steps):
    """Adam's learning rate: a number, or a Keras schedule over the run's optimizer steps
    (saved with the checkpoints, so a resumed run continues on the same curve)."""
    import keras

    if schedule == "constant":
        return float(learning_rate)
    return keras.optimizers.schedules.CosineDecay(float(learning_rate), decay_steps=max(total_steps, 1),
                                                  alpha=0.01)
def _patch_sets(patches):
    """``patches`` (a folder or PatchSet, or a list of them) -> [PatchSet], which must agree
    in what a model is made for: bands, dtype, patch size and classes."""
    from rsunet.patches import as_patchset

    items = list(patches) if isinstance(patches, (list, tuple)) else [patches]
    if not items:
        raise InputError("patches is empty: give a patch folder or a list of them")
    sets = [as_patchset(p) for p in items]
    first = _what_a_model_sees(sets[0])
    for other in sets[1:]:
        seen = _what_a_model_sees(other)
        differ = [k for k in first if first[k] != seen[k]]
        if differ:
            raise PatchSetMismatchError(
                f"the patch sets {sets[0].path} and {other.path} differ in "
                + ", ".join(f"{k} ({first[k]} vs {seen[k]})" for k in differ)
                + ": one model trains on patch sets with the same bands, dtype, size and classes; "
                "make them again with make_patches() alike")
    return sets


def _what_a_model_sees(ps):
    return dict(bands=ps.bands, dtype=sorted({s["dtype"] for s in ps.scenes.values()}), size=ps.size,
                classes=ps.classes)


def _folders(sets):
    """The settings' record of the patch sets: a folder, or the list of them."""
    folders = [str(ps.path.resolve()) for ps in sets]
    return folders[0] if len(folders) == 1 else folders


def _split_ids(sets):
    """-> (training ids, validation ids), each a list per patch set."""
    for ps in sets:
        if not ps.has_split:
            raise InputError(f"the patch set {ps.path} has no 'split' column: run "
                             "split_patches(patches) first to choose training and validation patches")
    train, val = [ps.ids("train") for ps in sets], [ps.ids("validation") for ps in sets]
    n_train, n_val = sum(map(len, train)), sum(map(len, val))
    if not n_train or not n_val:
        where = f"the patch set {sets[0].path} needs" if len(sets) == 1 else "the patch sets need"
        raise InputError(f"{where} training and validation patches; there are {n_train} "
                         f"and {n_val}: run split_patches() with a validation share")
    return train, val


def _digest(ids_per_set):
    """A fingerprint of the ids (one set: of its ids, as before several sets were possible)."""
    ids = ids_per_set[0] if len(ids_per_set) == 1 else \
        [f"{k}/{i}" for k, one in enumerate(ids_per_set) for i in one]
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _read_split(ps, ids):
    """-> images (n, rows, cols, bands) native dtype, labels (n, rows, cols) uint8, valid bool."""
    images, labels = ps.read(ids)
    valid = ps.valid(ids, images)
    if images.dtype.kind == "f":  # NaN and inf are nodata: never a value the network sees
        images[~np.isfinite(images)] = 0
    return np.ascontiguousarray(np.moveaxis(images, 1, -1)), labels, valid


def _class_weights(class_weights, counts, n_classes):
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights not in ("auto", "balanced"):
            raise InputError(f"class_weights must be 'auto' (or 'balanced') or one weight per class, "
                             f"got {class_weights!r}")
        counts = np.asarray(counts[:n_classes], np.float64)
        present = counts > 0
        w = np.zeros(n_classes)
        w[present] = counts[present].sum() / (present.sum() * counts[present])
        return w.tolist()
    w = [float(v) for v in (class_weights.values() if isinstance(class_weights, dict) else class_weights)]
    if len(w) != n_classes:
        raise InputError(f"class_weights needs {n_classes} weights (one per class id), got {len(w)}")
    return w


class _Patches:
    """The patches of one split, of one or several patch sets, read by position.

    ``read`` copies a batch out of the sets' memory-mapped ``.npy`` stacks: it costs that
    batch's bytes, whatever the number of patches, so a set larger than memory trains.
    """

    def __init__(self, parts, normalize):
        """``parts``: ``[(PatchSet, patch ids)]``; ``normalize`` as in :func:`train_unet`."""
        self.parts = [(ps, np.asarray(ids, dtype=object)) for ps, ids in parts]
        for ps, _ in self.parts:  # a missing or truncated stack fails now, before any output exists
            for scene in ps.scenes:
                ps.stacks(scene)
        self.owner = np.concatenate([np.full(len(ids), k) for k, (_, ids) in enumerate(self.parts)])
        self.local = np.concatenate([np.arange(len(ids)) for _, ids in self.parts])
        self.normalize = normalize
        scalings = [ps.scaling(ids, normalize) for ps, ids in self.parts]
        self.scaling = tuple(np.concatenate([sc[i] for sc in scalings]) for i in (0, 1))
        first = self.parts[0][0]
        self.shape = (first.size, first.size, first.bands)
        self.dtype = np.dtype(next(iter(first.scenes.values()))["dtype"])

    def __len__(self):
        return len(self.owner)

    @property
    def nbytes(self):
        """Bytes of the images, masks and validity of every patch (what memory would hold)."""
        rows, cols, bands = self.shape
        return len(self) * rows * cols * (bands * self.dtype.itemsize + 2)

    def read(self, positions):
        """-> images ``(n, rows, cols, bands)`` native dtype, labels ``(n, rows, cols)`` uint8,
        valid bool, of the patches at ``positions`` (in that order)."""
        positions = np.asarray(positions, np.int64)
        n = len(positions)
        images = np.empty((n, *self.shape), self.dtype)
        labels = np.empty((n, *self.shape[:2]), np.uint8)
        valid = np.empty((n, *self.shape[:2]), bool)
        owners = self.owner[positions]
        for k in np.unique(owners):
            where = np.flatnonzero(owners == k)
            ps, ids = self.parts[k]
            images[where], labels[where], valid[where] = _read_split(ps, ids[self.local[positions[where]]])
            _drop_pages(ps)
        return images, labels, valid

    def presence(self, n_classes):
        """``(patches, n_classes)`` bool: which classes each patch holds (its index row's
        ``n_<class>`` pixel counts)."""
        from rsunet.patches import count_columns

        out = np.zeros((len(self), n_classes), bool)
        start = 0
        for ps, ids in self.parts:
            rows = ps.index.set_index("patch_id").loc[list(ids)]
            for c, column in count_columns(ps.index).items():
                if c < n_classes:
                    out[start:start + len(ids), c] = rows[column].to_numpy() > 0
            start += len(ids)
        return out

    def statistics(self, chunk=64):
        """Means and deviations of the model's input channels over the valid pixels (after
        scaling: :func:`rsunet.normalization.model_input`) and the pixel count of each label
        value (256), in one pass over the patches, ``chunk`` at a time."""
        counts = np.zeros(256, np.int64)

        def chunks():
            for i in range(0, len(self), chunk):
                positions = np.arange(i, min(i + chunk, len(self)))
                x, y, v = self.read(positions)
                counts[:] += np.bincount(y.ravel(), minlength=256)
                scale, offset = (s[positions][:, None, None, :] for s in self.scaling)
                yield model_input(x.astype(np.float32), scale, offset, self.normalize), v

        mean, std = band_stats(chunks())
        return mean, std, counts


def _drop_pages(ps):
    """Unmap from this process the pages of ``ps``'s stacks that reads have touched (they
    stay in the kernel's page cache; a later read maps them again). Without it, the
    resident size of a streaming run grows, epoch after epoch, to the size of the stacks."""
    for scene in ps.scenes:
        for stack in ps.stacks(scene):
            mapping = getattr(stack, "_mmap", None)  # np.memmap's mapping
            if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mapping.madvise(mmap.MADV_DONTNEED)


# On a GPU machine, up to this many bytes of patches (training and validation together) are
# held in memory when stream="auto": see docs/architecture.md ("Training at scale").
IN_MEMORY_BYTES = 256 << 20
STREAMS = ("auto", True, False)


def _streams(stream, *splits):
    """Whether batches are read from disk (True) or gathered from the splits held in memory."""
    if stream not in STREAMS or not isinstance(stream, (str, bool)):
        raise InputError(f"stream must be 'auto', True or False, got {stream!r}")
    if stream == "auto":  # on the CPU streaming is as fast (bench P10); a GPU can outpace the reader
        import tensorflow as tf

        small = sum(s.nbytes for s in splits) <= IN_MEMORY_BYTES
        return not (small and tf.config.list_logical_devices("GPU"))
    return bool(stream)


def _fetch(tf, source, stream):
    """A function of a batch's positions -> its (images, labels, valid) tensors: read from
    disk in the pipeline (``stream``) or gathered from the whole split held as constants.
    Both give the same values."""
    if not stream:
        held = [tf.constant(a) for a in source.read(np.arange(len(source)))]
        return lambda idx: tuple(tf.gather(a, idx) for a in held)

    def fetch(idx):
        x, y, v = tf.numpy_function(source.read, [idx], [tf.as_dtype(source.dtype), tf.uint8, tf.bool],
                                    stateful=False)
        # the static shapes gather would give: the same shapes, the same kernels, the same sums
        x.set_shape([idx.shape[0], *source.shape])
        y.set_shape([idx.shape[0], *source.shape[:2]])
        v.set_shape([idx.shape[0], *source.shape[:2]])
        return x, y, v

    return fetch


SAMPLINGS = ("uniform", "balanced")


def _draw_weights(sampling, source, n_classes):
    """None (uniform: a permutation per epoch) or each training patch's chance of a draw."""
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return None if sampling == "uniform" else _balanced_weights(source.presence(n_classes))


def _balanced_weights(presence):
    """Draw probabilities that equalise class presence: pick one of the K classes present
    anywhere with equal chance, then a patch that holds it. ``presence`` is ``(patches,
    classes)`` bool; a patch's probability is ``1/K * sum over its classes c of 1/n_c``."""
    presence = np.asarray(presence, bool)
    n_c = presence.sum(axis=0)
    present = n_c > 0
    if not present.any():
        raise InputError("no training patch holds a labelled pixel: nothing to sample")
    p = (presence[:, present] / n_c[present]).sum(axis=1) / present.sum()
    return p / p.sum()


def _epoch_batches(n, batch_size, seed, start, epochs, steps, weights=None):
    """Positions ``(steps * epochs', batch_size)`` and stateless seeds of every batch of
    epochs start..epochs-1: those of epoch e depend only on (seed, e), so a resumed run sees
    what an uninterrupted one would. ``weights``: draw with these probabilities (with
    replacement) instead of a permutation."""
    order, seeds = [], []
    for e in range(start, epochs):
        rng = np.random.default_rng([seed, e])
        if weights is not None:
            idx = rng.choice(n, steps * batch_size, p=weights)
        else:
            idx = rng.permutation(n)
            idx = np.concatenate([idx, rng.integers(0, n, max(steps * batch_size - n, 0))])
        idx = idx[:steps * batch_size]
        order.append(idx.reshape(steps, batch_size))
        seeds.append(np.stack([np.full(steps, seed * 7919 + e), np.arange(steps)], axis=1))
    return (np.concatenate(order).astype(np.int64).reshape(-1, batch_size),
            np.concatenate(seeds).astype(np.int64).reshape(-1, 2))


def _train_dataset(source, mean, std, aug, batch_size, seed, start, epochs, steps, stream, weights=None):
    """Augmented batches of epochs start..epochs-1 (:func:`_epoch_batches`), read by
    ``source`` in a parallel map with prefetch."""
    import tensorflow as tf

    order, seeds = _epoch_batches(len(source), batch_size, seed, start, epochs, steps, weights)
    fetch = _fetch(tf, source, stream)
    prepare = _batch_preparer(tf, source, mean, std, aug)

    def load(idx, batch_seed):
        return prepare(idx, *fetch(idx), batch_seed)

    ds = tf.data.Dataset.from_tensor_slices((order, seeds))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_pipeline_options(tf))


def _pipeline_options(tf):
    """Bounded threads for the augmentation pipeline: one per 4 cores (at least one), each
    op on one thread. Unbounded, tf.data and the ops in it take as many threads as there
    are cores, and on a small machine (2 cores) they preempt the training step they feed
    (bench/bench_training.py, P5)."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, (os.cpu_count() or 1) // 4)
    options.threading.max_intra_op_parallelism = 1
    return options


def _batch_preparer(tf, source, mean, std, aug=None):
    """A function ``(positions, images, labels, valid, batch seed)`` -> the network's input
    ``(n, rows, cols, channels)`` standardised, and labels ``(n, rows, cols, 1)``.

    ``"scene"`` and ``"scene_joint"`` patches are scaled before augmentation, which then sees scene-scaled
    pixels; ``"dataset"`` and ``"both"`` patches are augmented raw, and ``"both"``'s two
    channel groups are made from the augmented pixels, so both see the same change. Fill
    and nodata pixels become ``mean[:bands]``, in the pixels augmentation sees, before the
    channels are made: what :func:`rsunet.artefact.fill_values` feeds prediction.
    """
    from rsunet.augmentation import augment_batch

    scale_t, offset_t = (tf.constant(s) for s in source.scaling)
    mean_t, std_t = tf.constant(mean), tf.constant(std)
    centre, spread = tf.constant(mean[:source.shape[-1]]), tf.constant(std[:source.shape[-1]])
    normalize = source.normalize
    scaled_first = normalize in SCALED_ALONE

    def prepare(idx, x, labels, valid, batch_seed=None):
        scale = tf.gather(scale_t, idx)[:, None, None, :]
        offset = tf.gather(offset_t, idx)[:, None, None, :]
        x = tf.cast(x, tf.float32)
        if scaled_first:
            x = model_input(x, scale, offset, normalize)
        if aug is not None:
            x, labels, valid = augment_batch(x, labels, valid, batch_seed, aug, centre, spread)
        x = tf.where(valid[..., None], x, centre)  # nodata and fill: the band mean, as in prediction
        if not scaled_first:
            x = model_input(x, scale, offset, normalize, lambda parts: tf.concat(parts, axis=-1))
        return (x - mean_t) / std_t, labels[..., None]

    return prepare


def _plain_dataset(source, mean, std, batch_size, stream):
    """Validation batches in index order, never augmented; held in memory once computed
    unless streamed."""
    import tensorflow as tf

    fetch = _fetch(tf, source, stream)
    prepare = _batch_preparer(tf, source, mean, std)

    def load(idx):
        return prepare(idx, *fetch(idx))

    ds = tf.data.Dataset.range(len(source)).batch(batch_size)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return (ds if stream else ds.cache()).prefetch(tf.data.AUTOTUNE)


class _Run:
    """The files of one training run: checkpoints and state in ``.<name>.training/``."""

    def __init__(self, out, settings, resume):
        self.out = out
        self.dir = out.with_name(f".{out.stem}.training")
        self.csv_path = out.with_name(f"{out.stem}_history.csv")
        self.plot_path = out.with_name(f"{out.stem}_history.png")
        self.state_path = self.dir / "state.json"
        self.settings = json.loads(json.dumps(settings, default=str))
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else None
        if state is not None and resume and state["settings"] != self.settings:
            changed = sorted(k for k in self.settings if state["settings"].get(k) != self.settings[k])
            raise InputError(f"{self.dir} holds an interrupted training with other settings "
                             f"({', '.join(changed)}); rerun with those settings to continue, or "
                             "pass resume=False to start afresh")
        if state is None or not resume or not state.get("last"):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
            state = dict(settings=self.settings, epoch=0, rows=[], best=None, best_epoch=None,
                         wait=0, last=None, stopped=False)
        self.state = state
        self.resumed = bool(state["last"])

    @staticmethod
    def interrupted(out):
        """An interrupted run of ``out`` waits in its folder (its history files are its own)."""
        return (out.with_name(f".{out.stem}.training") / "state.json").exists()

    epoch = property(lambda self: int(self.state["epoch"]))
    last_path = property(lambda self: self.dir / self.state["last"])
    best_path = property(lambda self: self.dir / "best.weights.h5")

    def history(self):
        import pandas as pd

        return pd.DataFrame(self.state["rows"])

    def callback(self):
        import keras

        run = self

        class Checkpoint(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                run.end_epoch(self.model, epoch, logs or {}, time.perf_counter() - self.t0)

        return Checkpoint()

    def end_epoch(self, net, epoch, logs, seconds):
        s = self.state
        names = [m for m in ("loss", "accuracy", "f1", "iou") if m in logs]
        names += [k for k in sorted(logs) if k not in names and not k.startswith("val_")
                  and k != "learning_rate"]
        row = dict(epoch=epoch + 1, **{k: float(logs[k]) for k in names},
                   **{f"val_{k}": float(logs[f"val_{k}"]) for k in names if f"val_{k}" in logs},
                   seconds=round(seconds, 3))
        value = row[s["settings"]["monitor"]]
        lower = s["settings"]["monitor"] == "val_loss"
        if s["best"] is None or (value < s["best"] if lower else value > s["best"]):
            tmp = self.dir / "best.partial.weights.h5"
            net.save_weights(tmp)
            os.replace(tmp, self.best_path)
            s.update(best=value, best_epoch=epoch + 1, wait=0)
        else:
            s["wait"] += 1
        last = f"last-{epoch + 1}.keras"
        net.save(self.dir / last)
        previous = s["last"]
        s.update(epoch=epoch + 1, last=last, rows=s["rows"] + [row])
        if s["wait"] >= s.get("patience", 1 << 30):
            s["stopped"] = True
            net.stop_training = True
        with atomic_path(self.state_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(s, indent=1))
        if previous and previous != last:
            (self.dir / previous).unlink(missing_ok=True)
        with atomic_path(self.csv_path, overwrite=True) as tmp:
            self.history().to_csv(tmp, index=False)

    def finish(self):
        """The model is saved: the checkpoints are no longer needed."""
        shutil.rmtree(self.dir, ignore_errors=True)


class _EpochBar:
    """A tqdm bar over epochs, with the last epoch's loss and validation scores."""

    def __new__(cls, start, epochs):
        import keras
        from tqdm.auto import tqdm

        class Bar(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = tqdm(total=epochs, initial=start, unit="epoch", desc="train_unet")

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                self.bar.set_postfix({k: f"{logs[k]:.3f}" for k in ("loss", "val_loss", "val_f1")
                                      if k in logs})
                self.bar.update(1)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Bar()


def plot_history(history, out=None, overwrite=False):
    """A figure of the training curves (loss, accuracy, F1, IoU; train and validation).

    Args:
        history: the DataFrame :func:`train_unet` returns (or its ``_history.csv``).
        out: the PNG to write (None: write nothing).
        overwrite: replace an existing ``out``.

    Returns:
        The :class:`matplotlib.figure.Figure` (the global matplotlib backend is untouched).
    """
    import pandas as pd

    from rsunet.plotting import new_figure, save_figure

    check_not_input(out, history)
    history = pd.read_csv(history) if isinstance(history, (str, os.PathLike)) else history
    names = [m for m in ("loss", "accuracy", "f1", "iou") if m in history.columns]
    fig = new_figure(figsize=(3.2 * len(names), 3))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(history["epoch"], history[name], "o-", label="train")
        if f"val_{name}" in history.columns:
            ax.plot(history["epoch"], history[f"val_{name}"], "o-", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, overwrite)
