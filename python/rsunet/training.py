"""Training a U-Net on a patch set, and the self-describing model artefact.

A trained model is one ``.keras`` file; rsunet adds ``rsunet.json`` inside the same zip
with what prediction needs (bands, normalisation, classes, patch size, depth, ignore
value). :func:`load_model` reads that file, or a plain Keras ``.keras`` model, in Keras'
safe mode.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from rsunet.errors import ModelFormatError

METADATA_NAME = "rsunet.json"


@dataclass
class RsunetModel:
    """A Keras model with what it takes to apply it to raw pixels.

    Attributes:
        keras_model: the Keras model, ``(n, rows, cols, bands)`` in.
        bands: number of input bands.
        classes: ``{class id: name}``.
        patch_size: training patch size (None for a plain Keras model).
        depth: number of poolings; windows must be multiples of ``2**depth``.
        ignore_value: the mask value that means unknown.
        normalization: ``{"mean": [...], "std": [...]}`` per band, or None.
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
        """Raw pixels ``(n, rows, cols, bands)`` -> float32 model input."""
        x = np.asarray(batch, dtype=np.float32)
        if self.normalization:
            mean = np.asarray(self.normalization["mean"], np.float32)
            std = np.asarray(self.normalization["std"], np.float32)
            x = (x - mean) / std
        return x

    def predict_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, rows, cols, K)`` for raw pixels ``(n, rows, cols, bands)``.

        A single sigmoid output ``p`` becomes two classes ``[1 - p, p]``.
        """
        x = self.normalize(batch)
        y = np.asarray(self.keras_model(x, training=False), dtype=np.float32)
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

    keras_model = keras.models.load_model(path, compile=False, safe_mode=True,
                                          custom_objects=_model.custom_objects())
    if meta is None:
        return _plain_model(keras_model)
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


def _plain_model(keras_model) -> RsunetModel:
    bands = int(keras_model.input_shape[-1])
    k = int(keras_model.output_shape[-1])
    k = 2 if k == 1 else k
    return RsunetModel(keras_model=keras_model, bands=bands,
                       classes={i: str(i) for i in range(k)})
