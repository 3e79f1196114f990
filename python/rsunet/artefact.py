"""The model artefact: what a trained model is, on disk and in memory, and what prediction needs of it.

A trained U-Net is one ``.keras`` file; rsunet adds ``rsunet.json`` inside the same zip
with what prediction needs (bands, normalisation, classes, patch size, depth, ignore
value). :func:`load_model` reads that file, or a plain Keras ``.keras`` model, in Keras'
safe mode. :class:`PixelModel` is the interface prediction uses, whatever made the
model: an :class:`RsunetModel` or the Random Forest baseline
(:class:`rsunet.baseline.PixelForest`). A model trained with ``normalize="scene"`` or
``"both"`` is bound to one scene's band percentiles by :func:`for_scene`.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rsunet.errors import ModelFormatError
from rsunet.io import atomic_path
from rsunet.normalization import band_percentiles, model_input, normalize_of, scene_scaling

__all__ = ["PixelModel", "RsunetModel", "load_model", "save_model", "read_metadata", "plain_model",
           "as_model", "for_scene", "for_raster", "scene_normalised", "SceneModel", "fill_values",
           "METADATA_NAME", "FORMAT"]

METADATA_NAME = "rsunet.json"
FORMAT = "rsunet-model/1"


@runtime_checkable
class PixelModel(Protocol):
    """What :func:`rsunet.predict_raster` needs of a model.

    Attributes:
        bands: number of input bands.
        classes: ``{class id: name}``.
        multiple: window sizes must be multiples of this (``2**depth`` for a U-Net, 1 for
            a pixel classifier).
        normalization: None, or a dict; its ``"mean"`` (per band; its first ``bands``
            values for ``"both"``) is what invalid and padded pixels are fed as, and its
            ``"scene"`` (``{"q": [2, 98]}``) says the model takes scene-scaled pixels
            (:func:`for_scene`), alone or, where ``"normalize"`` is ``"both"``, after the
            raw ones.
    """

    bands: int
    classes: dict
    multiple: int
    normalization: dict | None

    def predict_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, rows, cols, K)`` for raw pixels ``(n, rows, cols, bands)``."""


@dataclass
class RsunetModel:
    """A Keras model with what it takes to apply it to raw pixels.

    Attributes:
        keras_model: the Keras model, ``(n, rows, cols, channels)`` in: ``bands`` channels,
            or ``2 * bands`` for a model trained with ``normalize="both"``.
        bands: number of bands of the images it maps.
        classes: ``{class id: name}``.
        patch_size: training patch size (None for a plain Keras model).
        depth: number of poolings; windows must be multiples of ``2**depth``.
        ignore_value: the mask value that means unknown.
        normalization: ``{"normalize": ..., "mean": [...], "std": [...]}`` per input
            channel (``"scene": {"q": [2, 98]}`` too for ``"scene"`` and ``"both"``), or None.
        meta: everything recorded in ``rsunet.json``.
    """

    keras_model: object
    bands: int
    classes: dict
    patch_size: int | None = None
    depth: int | None = None
    ignore_value: int = 255
    normalization: dict | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def multiple(self) -> int:
        """Window sizes must be multiples of this."""
        return 2 ** self.depth if self.depth else 1

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """Pixels ``(n, rows, cols, channels)`` -> float32 model input, standardised per channel.

        Raw pixels for ``"dataset"``; scene-scaled ones for ``"scene"``, and raw then
        scene-scaled for ``"both"`` (:func:`for_scene` makes them from raw pixels)."""
        x = np.asarray(batch, dtype=np.float32)
        if self.normalization:
            mean = np.asarray(self.normalization["mean"], np.float32)
            std = np.asarray(self.normalization["std"], np.float32)
            x = (x - mean) / std
        return x

    def predict_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, rows, cols, K)`` for raw pixels ``(n, rows, cols, bands)``.

        A single sigmoid output ``p`` becomes two classes ``[1 - p, p]``. Runs Keras'
        compiled ``predict_on_batch`` (about 1.6x faster on a CPU than an eager call).
        """
        y = np.asarray(self.keras_model.predict_on_batch(self.normalize(batch)), dtype=np.float32)
        if y.shape[-1] == 1:
            y = np.concatenate([1.0 - y, y], axis=-1)
        return y


def read_metadata(path) -> dict | None:
    """The ``rsunet.json`` stored in a ``.keras`` file, or None for a plain Keras model."""
    try:
        with zipfile.ZipFile(path) as z:
            if METADATA_NAME not in z.namelist():
                return None
            return json.loads(z.read(METADATA_NAME))
    except zipfile.BadZipFile as exc:
        raise ModelFormatError(f"{path} is not a .keras model file: {exc}") from exc


def load_model(path) -> RsunetModel:
    """Load a model saved by :func:`train_unet`, or a plain Keras ``.keras`` model.

    Loading uses Keras' safe mode: no arbitrary code is deserialised.

    Raises:
        ModelFormatError: the file is missing or not a ``.keras`` model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError(f"model not found: {path}")
    if not path.endswith(".keras"):
        raise ModelFormatError(f"{path}: expected a .keras file (Keras 3 format)")
    meta = read_metadata(path)
    import keras

    from rsunet import model as _model  # registers rsunet's losses and metrics

    try:
        keras_model = keras.models.load_model(path, compile=False, safe_mode=True,
                                              custom_objects=_model.custom_objects())
    except Exception as exc:  # Keras raises ValueError, KeyError, TypeError... on foreign files
        raise ModelFormatError(f"{path} cannot be loaded as a Keras model ({type(exc).__name__}: "
                               f"{exc}); safe mode refuses Lambda layers and custom code") from exc
    if meta is None:
        return plain_model(keras_model)
    return RsunetModel(
        keras_model=keras_model,
        bands=int(meta["bands"]),
        classes={int(k): v for k, v in meta["classes"].items()},
        patch_size=meta.get("patch_size"),
        depth=meta.get("depth"),
        ignore_value=int(meta.get("ignore_value", 255)),
        normalization=meta.get("normalization"),
        meta=meta,
    )


def plain_model(keras_model) -> RsunetModel:
    """A plain Keras model (no rsunet.json) as an :class:`RsunetModel`: raw pixels in, classes
    ``0..K-1`` (a sigmoid output: 2)."""
    bands = int(keras_model.input_shape[-1])
    k = int(keras_model.output_shape[-1])
    k = 2 if k == 1 else k
    return RsunetModel(keras_model=keras_model, bands=bands,
                       classes={i: str(i) for i in range(k)})


def save_model(keras_model, out, meta, overwrite=False):
    """Save a Keras model as ``out`` (.keras) with ``rsunet.json`` inside the zip, atomically."""
    with atomic_path(out, overwrite) as tmp:
        keras_model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(METADATA_NAME, json.dumps(meta, indent=1))
    return Path(out)


# ---- a model for prediction ----------------------------------------------------------------

def as_model(model):
    """A model with ``predict_probabilities``, from a path, a Keras model or a model object."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if path.endswith(".joblib"):
            from rsunet.baseline import load_baseline

            return load_baseline(path)
        return load_model(path)
    if isinstance(model, PixelModel):
        return model
    if hasattr(model, "predict_probabilities"):
        return _Completed(model)
    if hasattr(model, "input_shape") and hasattr(model, "output_shape"):
        return plain_model(model)
    raise ModelFormatError(
        f"model must be a .keras path, an RsunetModel or a Keras model, got {type(model).__name__}")


class _Completed:
    """A user's model object with ``predict_probabilities`` made a full :class:`PixelModel`:
    the attributes it lacks get the values that change nothing (pixel by pixel, raw input)."""

    def __init__(self, model):
        self.model = model
        missing = [name for name in ("bands", "classes") if not hasattr(model, name)]
        if missing:
            raise ModelFormatError(f"a {type(model).__name__} model needs {' and '.join(missing)} "
                                   "beside predict_probabilities (the band count and {id: name})")
        self.multiple = getattr(model, "multiple", 1) or 1
        self.normalization = getattr(model, "normalization", None)

    def __getattr__(self, name):
        return getattr(self.model, name)


def scene_normalised(model) -> dict | None:
    """The scene scaling a model was trained with (``{"q": [2, 98]}``: ``normalize`` was
    ``"scene"`` or ``"both"``), or None."""
    return (model.normalization or {}).get("scene")


def for_raster(model, src):
    """The model bound to this scene's band percentiles if it was trained with them."""
    scene = scene_normalised(model)
    return for_scene(model, band_percentiles(src, scene["q"])) if scene else model


def for_scene(model, percentiles):
    """A model trained with ``normalize="scene"``, ``"scene_joint"`` or ``"both"``, bound to
    one scene's band percentiles.

    Its ``predict_probabilities`` takes that scene's raw pixels ``(n, rows, cols, bands)``
    (a ``"both"`` model gets them followed by their scene-scaled values).
    :func:`predict_raster` binds every scene it maps; call this to apply such a model to
    arrays yourself.

    Args:
        model: an :class:`RsunetModel` or a :class:`rsunet.baseline.PixelForest` trained
            with ``normalize="scene"`` or ``"both"``.
        percentiles: ``(bands, 2)``: the scene's low and high band percentiles, from
            ``rsunet.normalization.band_percentiles(scene, model.normalization["scene"]["q"])``.
    """
    joint = bool((scene_normalised(model) or {}).get("joint"))
    return SceneModel(model, *scene_scaling(percentiles, joint=joint))


class SceneModel:
    """Scales raw pixels by one scene's percentiles, then hands them to the model (after the
    raw pixels for a ``"both"`` model: :func:`rsunet.normalization.model_input`)."""

    def __init__(self, model, scale, offset):
        self.model, self.scale, self.offset = model, scale, offset
        # not .normalize: that is the model's method; a model that records no "both" takes
        # scene-scaled pixels alone, as for_scene always gave
        self.normalized_as = "both" if normalize_of(model.normalization) == "both" else "scene"

    def __getattr__(self, name):
        return getattr(self.model, name)

    @property
    def normalization(self):
        # what raw value becomes the model's band mean: fill for nodata and padding ("both":
        # its first bands are the raw bands' already)
        norm = dict(self.model.normalization)
        if norm.get("mean") is not None and self.normalized_as == "scene":
            norm["mean"] = ((np.asarray(norm["mean"]) - self.offset) / self.scale).tolist()
        return norm

    def predict_probabilities(self, batch):
        return self.model.predict_probabilities(
            model_input(np.asarray(batch, np.float32), self.scale, self.offset, self.normalized_as))


def fill_values(model, bands):
    """What invalid or padded pixels are fed to the model: the band means (0 once normalised;
    a ``"both"`` model's first ``bands`` means are the raw bands')."""
    norm = model.normalization
    if norm and norm.get("mean") is not None:
        return np.asarray(norm["mean"], np.float32).reshape(-1)[:bands]
    return np.zeros(bands, np.float32)
