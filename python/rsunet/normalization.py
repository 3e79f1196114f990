"""Normalisation: how raw pixel values become a model's input, in one place.

Two ways, chosen by ``normalize`` (:data:`NORMALIZE`) when a model is trained:

* ``"dataset"``: raw values, standardised with the band means and deviations of the
  training pixels (:func:`band_stats`), the same for every scene;
* ``"scene"``: each scene's 2 and 98 % band percentiles (:func:`band_percentiles`,
  recorded per scene in a patch set) are first mapped to 0 and 1 (:func:`scene_scaling`),
  then standardised as above. A model records which (:func:`normalization_record`);
  :func:`rsunet.artefact.for_scene` binds such a model to a scene's percentiles, and
  the figures' display stretch (:func:`rsunet.plotting.stretch`) uses the same scaling.
"""

from __future__ import annotations

import os

import numpy as np
from rasterio.windows import Window

from rsunet.errors import InputError
from rsunet.io import open_raster, read_padded

__all__ = ["NORMALIZE", "SCENE_PERCENTILES", "check_normalize", "scene_record", "band_percentiles",
           "reads_whole", "BandValues", "scene_scaling", "band_stats", "normalization_record"]

NORMALIZE = ("dataset", "scene")
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


def scene_scaling(percentiles) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` per band mapping a scene's low percentile to 0 and its high to 1.

    ``x * scale + offset`` is the scene-normalised value; a band without spread keeps scale 1.
    """
    p = np.asarray(percentiles, np.float64)
    low, high = p[:, 0], p[:, -1]
    span = np.where(high > low, high - low, 1.0)
    return (1.0 / span).astype(np.float32), (-low / span).astype(np.float32)


def check_normalize(normalize):
    """``normalize`` must be one of :data:`NORMALIZE`."""
    if normalize not in NORMALIZE:
        raise InputError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")


def scene_record(normalize) -> dict | None:
    """What a model trained with ``normalize`` records so prediction scales each scene as
    its patches were: ``{"q": [2, 98]}`` for ``"scene"``, None for ``"dataset"``."""
    check_normalize(normalize)
    return dict(q=list(SCENE_PERCENTILES)) if normalize == "scene" else None


def band_stats(chunks):
    """Per-band mean and standard deviation over valid pixels (float64 sums).

    ``chunks`` yields ``(x (n, rows, cols, bands), valid (n, rows, cols), (scale, offset)
    (n, bands))``: each patch is first scaled by its ``(scale, offset)``. A chunk at a time,
    so that a patch set larger than memory is read once and never held."""
    total, sq, n = 0.0, 0.0, 0
    for x, valid, (scale, offset) in chunks:
        v = (x * scale[:, None, None, :] + offset[:, None, None, :])[valid].astype(np.float64)
        total = total + v.sum(axis=0)
        sq = sq + (v * v).sum(axis=0)
        n += len(v)
    if n == 0:
        raise InputError("the training patches hold no valid pixel")
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def normalization_record(mean, std, normalize) -> dict:
    """What a U-Net's ``rsunet.json`` records of its input scaling: the band ``mean`` and
    ``std`` of the training pixels, and for ``normalize="scene"`` the scene percentiles."""
    norm, scene = dict(mean=mean.tolist(), std=std.tolist()), scene_record(normalize)
    return norm if scene is None else dict(norm, scene=scene)
