"""The course's "traditional ML" baseline: a Random Forest on pixel values.

The course turned pixels into a table (one row per pixel, one column per band) and
trained a Random Forest on it. :func:`train_baseline` does that on the same training
patches the U-Net sees, and returns a :class:`PixelForest` that predicts like a
trained U-Net does (``predict_probabilities`` on ``(n, rows, cols, bands)`` batches),
so :func:`rsunet.predict_raster` maps a whole scene with it and :func:`rsunet.assess_map`
scores it the same way: the comparison differs only in the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from rsunet.errors import InputError, ModelFormatError, OutputExistsError
from rsunet.io import atomic_path, check_not_input


@dataclass
class PixelForest:
    """A Random Forest over single pixels, with the interface of a trained U-Net.

    Attributes:
        forest: the fitted :class:`sklearn.ensemble.RandomForestClassifier`.
        bands: number of bands of the images it maps.
        classes: ``{class id: name}``; ``forest.classes_`` holds the ids it saw.
        meta: how it was trained (pixels per class, trees, normalize, seed).
        normalization: None (raw pixels) or ``{"normalize": "scene" or "both", "scene":
            {"q": [2, 98]}}`` for a forest trained on scene-scaled pixels, or on the raw
            and scene-scaled values side by side (2 x bands features; see
            :func:`rsunet.artefact.for_scene`).
    """

    forest: object
    bands: int
    classes: dict
    meta: dict = field(default_factory=dict)
    multiple: int = 1
    normalization: dict | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def predict_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, rows, cols, K)`` for pixels ``(n, rows, cols, features)``
        (raw bands; scene-scaled, or both, once bound by :func:`rsunet.artefact.for_scene`)."""
        batch = np.asarray(batch)
        pixels = batch.reshape(-1, batch.shape[-1]).astype(np.float32)
        seen = self.forest.predict_proba(pixels)
        out = np.zeros((pixels.shape[0], max(self.classes) + 1), np.float32)
        out[:, self.forest.classes_.astype(int)] = seen
        return out.reshape(*batch.shape[:-1], -1)

    def save(self, path, overwrite=False):
        """Write the forest with joblib (a pickle: load only files you trust)."""
        import joblib

        with atomic_path(path, overwrite) as tmp:
            joblib.dump(self, tmp, compress=3)
        return path


def load_baseline(path) -> PixelForest:
    """Load a :class:`PixelForest` saved by :meth:`PixelForest.save` (trusted files only)."""
    import joblib

    import hashlib

    if not os.path.exists(path):
        raise ModelFormatError(f"baseline model not found: {path}")
    try:
        model = joblib.load(path)
    except Exception as exc:  # joblib/pickle raise many types on a foreign or damaged file
        raise ModelFormatError(f"{path} is not a model saved by train_baseline() "
                               f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(model, PixelForest):
        raise ModelFormatError(f"{path} does not hold an rsunet PixelForest")
    with open(path, "rb") as f:  # what resuming a prediction compares: the file, not the pickle
        model.file_digest = hashlib.file_digest(f, "sha256").hexdigest() \
            if hasattr(hashlib, "file_digest") else hashlib.sha256(f.read()).hexdigest()
    return model


def sample_pixels(patches, split="train", n_per_class=5000, seed=0, normalize="dataset"):
    """A class-balanced table of labelled pixels from the patches of one split.

    Returns:
        ``(X, y)``: ``X`` is ``(n, bands)`` float32 band values (raw, or scaled by their
        scene's percentiles for ``normalize="scene"`` or ``"scene_joint"``; ``(n, 2 * bands)``, raw then scaled,
        for ``"both"``), ``y`` the class ids. Unknown (ignore) and nodata pixels are never
        sampled.
    """
    from rsunet.normalization import model_input
    from rsunet.patches import as_patchset

    ps = as_patchset(patches)
    ids = _split_ids(ps, split)
    images, masks = ps.read(ids)
    scale, offset = ps.scaling(ids, normalize)
    pixels = np.moveaxis(images, 1, -1).reshape(-1, images.shape[1])
    labels = masks.reshape(-1)
    rng = np.random.default_rng(seed)
    picks = []
    for cls in np.unique(labels[labels != ps.ignore_value]):
        where = np.flatnonzero(labels == cls)
        picks.append(rng.choice(where, size=min(n_per_class, where.size), replace=False))
    if not picks:
        raise InputError(f"the {split!r} patches hold no labelled pixels")
    pick = np.concatenate(picks)
    patch_of = pick // masks[0].size
    x = model_input(pixels[pick].astype(np.float32), scale[patch_of], offset[patch_of], normalize)
    return x, labels[pick]


def _split_ids(ps, split):
    ids = ps.ids(split)
    if split is not None and not ids:
        raise InputError(f"no patches in split {split!r}")
    return ids


def train_baseline(patches, out=None, n_per_class=5000, n_trees=100, normalize="dataset", seed=0,
                   overwrite=False) -> PixelForest:
    """Train the pixel-based Random Forest baseline on a patch set's training split.

    Args:
        patches: a patch folder (from :func:`make_patches`, split by :func:`split_patches`)
            or a :class:`PatchSet`.
        out: where to save the model (``.joblib``), or None to keep it in memory.
        n_per_class: training pixels drawn per class (class-balanced, as the course's
            table of samples).
        n_trees: number of trees.
        normalize: ``"dataset"``: raw pixel values, the course's table (a forest needs no
            scaling); ``"scene"``: each scene's 2 and 98 % band percentiles mapped to 0
            and 1, as :func:`rsunet.train_unet` can (prediction then scales each scene
            by its own percentiles); ``"scene_joint"``: one stretch for all bands, as
            ``train_unet``'s; ``"both"``: the raw and the scene-scaled values of
            each band side by side (2 x bands features), as ``train_unet``'s ``"both"``.
        seed: random seed for the sample and the forest.
        overwrite: replace an existing ``out``.

    Returns:
        A :class:`PixelForest`, usable as the ``model`` of :func:`predict_raster`.
    """
    from sklearn.ensemble import RandomForestClassifier

    from rsunet.normalization import scene_record
    from rsunet.patches import as_patchset

    check_not_input(out, patches)
    if out is not None and os.path.exists(out) and not overwrite:  # before training, not after
        raise OutputExistsError(f"{out} exists; pass overwrite=True to replace it")
    ps, scene = as_patchset(patches), scene_record(normalize)
    X, y = sample_pixels(ps, "train", n_per_class, seed, normalize)
    forest = RandomForestClassifier(n_estimators=n_trees, n_jobs=-1, random_state=seed,
                                    min_samples_leaf=2)
    forest.fit(X, y)
    model = PixelForest(forest=forest, bands=ps.bands, classes=dict(ps.classes),
                        meta=dict(n_per_class=n_per_class, n_trees=n_trees, seed=seed,
                                  n_pixels=int(len(y)), normalize=normalize),
                        normalization=None if scene is None else dict(normalize=normalize, scene=scene))
    if out is not None:
        model.save(out, overwrite=overwrite)
    return model
