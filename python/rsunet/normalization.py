"""Normalisation: how raw pixel values become a model's input, in one place.

Four ways, chosen by ``normalize`` (:data:`NORMALIZE`) when a model is trained:

* ``"dataset"``: raw values, standardised with the band means and deviations of the
  training pixels (:func:`band_stats`), the same for every scene;
* ``"scene"``: each scene's 2 and 98 % band percentiles (:func:`band_percentiles`,
  recorded per scene in a patch set) are first mapped to 0 and 1 (:func:`scene_scaling`),
  then standardised as above;
* ``"scene_joint"``: as ``"scene"``, but one stretch for all bands together: the
  scene's lowest band 2 % percentile becomes 0 and its highest band 98 % percentile 1,
  so a scene's colour (which band is brighter than which) survives the stretch. A
  per-band stretch takes it away: a pale pasture and a dark forest both span 0..1 in
  every band;
* ``"both"``: the network gets twice the bands, the raw bands followed by the
  scene-scaled ones (:func:`model_input`), each standardised with its own training
  statistics: absolute brightness and the scene's relative contrast side by side, so a
  network can learn when a scene's stretch means something (a scene of a single land
  cover) and when it does not.

A model records which (:func:`normalization_record`, read back by :func:`normalize_of`);
:func:`rsunet.artefact.for_scene` binds a ``"scene"`` or ``"both"`` model to a scene's
percentiles, and the figures' display stretch (:func:`rsunet.plotting.stretch`) uses
the same scaling.
"""

from __future__ import annotations

import os

import numpy as np
from rasterio.windows import Window

from rsunet.errors import InputError
from rsunet.io import open_raster, read_padded

__all__ = ["NORMALIZE", "SCENE_PERCENTILES", "check_normalize", "scene_record", "band_percentiles",
           "reads_whole", "BandValues", "scene_scaling", "input_channels", "model_input", "band_stats",
           "normalization_record", "normalize_of", "SCALED_ALONE"]

NORMALIZE = ("dataset", "scene", "scene_joint", "both")
SCALED_ALONE = ("scene", "scene_joint")  # the network sees scene-scaled pixels only
SCENE_PERCENTILES = (2.0, 98.0)


def band_percentiles(src, q=SCENE_PERCENTILES, max_pixels=2 ** 22) -> np.ndarray:
    """Per-band percentiles of a scene's valid pixels: its dark and bright ends.

    A scene of at most ``max_pixels`` pixels is read whole. A larger one is sampled on
    a regular grid of 256 x 256 windows holding about ``max_pixels`` pixels, so the cost
    is bounded whatever the scene's size and the same call always gives the same values.
    The figures are exactly numpy's ``np.percentile`` of those pixels in float64.

    Args:
        src: a raster path or an open rasterio dataset.
        q: the percentiles (0..100).
        max_pixels: the most pixels read.

    Returns:
        ``(bands, len(q))`` float64.

    Raises:
        InputError: the scene holds no valid pixel.
    """
    if isinstance(src, (str, os.PathLike)):
        with open_raster(src) as opened:
            return band_percentiles(opened, q, max_pixels)
    indexes = list(range(1, src.count + 1))
    values = BandValues(src.count, src.dtypes[0])
    for w in _sample_windows(src.width, src.height, max_pixels):
        values.add(*read_padded(src, indexes, w, w))
    return values.percentiles(q, src.name)


def reads_whole(src, max_pixels=2 ** 22) -> bool:
    """Whether :func:`band_percentiles` reads every pixel of ``src`` (not a sample)."""
    return src.width * src.height <= max_pixels


class BandValues:
    """The valid pixel values of a scene, added window by window, and their percentiles.

    Integer bands of up to 16 bits are kept as counts per value (``np.bincount``: a few
    KiB whatever the scene, and percentiles without sorting the pixels); other dtypes
    keep the values themselves. Either way :meth:`percentiles` gives exactly
    ``np.percentile`` of all the values added, in float64, so a caller that reads the
    scene anyway (make_patches cutting it strip by strip) gets the same figures as
    :func:`band_percentiles` without a second read.
    """

    def __init__(self, bands, dtype):
        dtype = np.dtype(dtype)
        self.counted = dtype.kind in "ui" and dtype.itemsize <= 2
        self.low = int(np.iinfo(dtype).min) if self.counted else 0
        self.counts = [np.zeros(1 << (8 * dtype.itemsize), np.int64) if self.counted else []
                       for _ in range(bands)]

    def add(self, data, valid=None):
        """Add ``(bands, rows, cols)`` pixels; ``valid`` ``(rows, cols)``, None when all are."""
        for b, band in enumerate(data):
            values = band.ravel() if valid is None else band[valid]
            if self.counted and values.dtype == np.uint8:
                self.counts[b] += _byte_counts(values)
            elif self.counted:
                shifted = values.astype(np.int64) - self.low if self.low else values
                self.counts[b] += np.bincount(shifted, minlength=len(self.counts[b]))
            else:
                self.counts[b].append(values.copy())

    def percentiles(self, q, name="the scene"):
        """``(bands, len(q))`` float64, as ``np.percentile(values.astype(float64), q)``."""
        out = []
        for counts in self.counts:
            if self.counted:
                out.append(_percentiles_of_counts(counts, self.low, q))
            else:
                values = np.concatenate(counts) if counts else np.empty(0)
                out.append(np.percentile(values.astype(np.float64), list(q)) if values.size else None)
        if any(o is None for o in out):
            raise InputError(f"{name} holds no valid pixel")
        return np.stack(out)


def _byte_counts(values):
    """``np.bincount(values, minlength=256)`` of uint8 values, twice as fast.

    Pillow's histogram of an 8-bit image counts the bytes in place, where ``np.bincount``
    first copies them to 64-bit integers: half of the time make_patches spends on the
    scene percentiles (P3 in docs/performance.md).
    """
    from PIL import Image

    flat = np.ascontiguousarray(values).reshape(-1)
    if not flat.size:
        return np.zeros(256, np.int64)
    image = Image.frombuffer("L", (flat.size, 1), flat, "raw", "L", 0, 1)
    return np.asarray(image.histogram(), np.int64)


def _percentiles_of_counts(counts, low, q):
    """``np.percentile`` (method "linear") of the values ``low + i`` repeated ``counts[i]`` times.

    Follows numpy's own steps (virtual index ``(n - 1) * q / 100``, its two neighbours,
    and numpy's two-sided linear interpolation), so the float64 result is bit-identical
    to sorting the values; tests compare the two on random histograms.
    """
    n = int(counts.sum())
    if n == 0:
        return None
    virtual = (n - 1) * np.asanyarray(np.true_divide(list(q), 100))
    previous = np.floor(virtual)
    above = virtual >= n - 1
    previous[above] = n - 1
    following = np.where(above, n - 1, previous + 1)
    gamma = virtual - np.where(above, -1, previous)  # numpy's gamma, used only where a == b
    ends = np.cumsum(counts)
    a = (np.searchsorted(ends, previous, side="right") + low).astype(np.float64)
    b = (np.searchsorted(ends, following, side="right") + low).astype(np.float64)
    diff = b - a
    result = a + diff * gamma
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), result)


def _sample_windows(width, height, max_pixels, size=256):
    if width * height <= max_pixels:
        return [Window(0, 0, width, height)]
    per_axis = max(1, int(np.sqrt(max_pixels / size ** 2)))
    cols = np.linspace(0, max(width - size, 0), per_axis).astype(int)
    rows = np.linspace(0, max(height - size, 0), per_axis).astype(int)
    return [Window(int(c), int(r), min(size, width), min(size, height)) for r in rows for c in cols]


def scene_scaling(percentiles, joint=False) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` per band mapping a scene's low percentile to 0 and its high to 1.

    ``x * scale + offset`` is the scene-normalised value; a band without spread keeps scale 1.
    ``joint``: one scale and offset for every band, from the lowest low and the highest
    high percentile (``normalize="scene_joint"``).
    """
    p = np.asarray(percentiles, np.float64)
    low, high = p[:, 0], p[:, -1]
    if joint:
        low, high = np.full_like(low, low.min()), np.full_like(high, high.max())
    span = np.where(high > low, high - low, 1.0)
    return (1.0 / span).astype(np.float32), (-low / span).astype(np.float32)


def check_normalize(normalize):
    """``normalize`` must be one of :data:`NORMALIZE`."""
    if not isinstance(normalize, str) or normalize not in NORMALIZE:
        raise InputError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")


def scene_record(normalize) -> dict | None:
    """What a model trained with ``normalize`` records so prediction scales each scene as
    its patches were: ``{"q": [2, 98]}`` for ``"scene"`` and ``"both"``, ``{"q": [2, 98],
    "joint": True}`` for ``"scene_joint"``, None for ``"dataset"``."""
    check_normalize(normalize)
    if normalize == "dataset":
        return None
    record = dict(q=list(SCENE_PERCENTILES))
    return dict(record, joint=True) if normalize == "scene_joint" else record


def input_channels(bands, normalize) -> int:
    """The channels a network trained with ``normalize`` takes for a ``bands``-band image."""
    check_normalize(normalize)
    return 2 * int(bands) if normalize == "both" else int(bands)


def model_input(pixels, scale, offset, normalize, concat=None):
    """Raw pixels ``(..., bands)`` -> what a model trained with ``normalize`` standardises.

    ``"dataset"``: the pixels; ``"scene"`` and ``"scene_joint"``: ``pixels * scale + offset``
    (a scene's :func:`scene_scaling`); ``"both"``: the two side by side, ``(..., 2 * bands)``, raw
    bands first. ``scale`` and ``offset`` broadcast against ``pixels``; ``concat`` joins a
    list along the last axis (numpy's by default; training passes TensorFlow's).
    """
    if normalize == "dataset":
        return pixels
    scaled = pixels * scale + offset
    if normalize in SCALED_ALONE:
        return scaled
    concat = concat or (lambda parts: np.concatenate(parts, axis=-1))
    return concat([pixels, scaled])


def band_stats(chunks):
    """Per-channel mean and standard deviation over valid pixels (float64 sums).

    ``chunks`` yields ``(x (n, rows, cols, channels), valid (n, rows, cols))``, ``x`` what
    the model standardises (:func:`model_input`). A chunk at a time, so that a patch set
    larger than memory is read once and never held."""
    total, sq, n = 0.0, 0.0, 0
    for x, valid in chunks:
        v = x[valid].astype(np.float64)
        total = total + v.sum(axis=0)
        sq = sq + (v * v).sum(axis=0)
        n += len(v)
    if n == 0:
        raise InputError("the training patches hold no valid pixel")
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def normalization_record(mean, std, normalize) -> dict:
    """What a U-Net's ``rsunet.json`` records of its input scaling: ``normalize``, the
    ``mean`` and ``std`` of each input channel over the training pixels (for ``"both"``:
    2 x bands, the raw bands' then the scene-scaled bands'), and for ``"scene"`` and
    ``"both"`` the scene percentiles (``"scene": {"q": [2, 98]}``)."""
    norm, scene = dict(normalize=normalize, mean=mean.tolist(), std=std.tolist()), scene_record(normalize)
    return norm if scene is None else dict(norm, scene=scene)


def normalize_of(record) -> str | None:
    """The ``normalize`` a model's normalisation record says (None: no record, raw pixels).

    Records written before ``"both"`` existed do not name it: one with ``"scene"`` is
    ``"scene"``, any other ``"dataset"``."""
    if not record:
        return None
    if record.get("normalize"):
        return record["normalize"]
    return "scene" if record.get("scene") else "dataset"
