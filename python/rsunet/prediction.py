"""Prediction at any scale: sliding windows, blending and a streaming, resumable mosaic.

The course cropped a scene into tiles, predicted each tile, wrote one GeoTIFF per tile
and mosaicked them with GDAL. :func:`predict_raster` does the same in one pass without
the tile files: it slides a square window over the scene (every pixel, edges included;
scenes smaller than a window are padded), predicts the windows in batches (optionally
with the 8 flips and rotations of test-time augmentation), blends overlapping
predictions and writes one georeferenced GeoTIFF.

Memory stays flat in the scene's height and width: the scene is cut into blocks of whole
windows (column blocks of at most ``BLOCK_COLUMNS`` pixels, and row blocks if set), each
computed from every window touching it, the neighbours' overlapping windows included, so
that each of its pixels gets exactly the bits a single pass over the whole scene gives.
Within a block only the rows of the windows in flight are held (an accumulator ``window``
rows high and as wide as the block's windows, and one batch of windows). Each finished
band of a block is kept in a hidden folder beside the output, with a small state file per
block; a killed run, called again the same way, continues from each block's last finished
band and writes the same bytes an uninterrupted run would. Blocks are independent, the
unit of work for many processes. The output's own name appears only once it is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import zlib
from itertools import groupby
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from rsunet import __version__
from rsunet.artefact import as_model, fill_values, for_raster, for_scene
from rsunet.errors import BandMismatchError, InputError, OutputExistsError, PatchSizeError, RsunetError
from rsunet.io import (atomic_path, check_not_input, geotiff_profile, open_raster, read_padded,
                       window_intersection, window_offsets, writing)
from rsunet.normalization import SCALED_ALONE, normalize_of
from rsunet.quiet import new_models_expected

__all__ = ["predict_raster", "for_scene", "BLENDS", "OUTPUTS", "UNCERTAINTIES"]

BLENDS = ("hann", "centre", "average")
OUTPUTS = ("classes", "probabilities", "both")
UNCERTAINTIES = (None, "entropy", "margin", "tta", "mc_dropout")
SPREADS = ("tta", "mc_dropout")  # uncertainties blended as one more channel beside the classes
PROB_DTYPES = ("float32", "uint8")
CLASS_NODATA = 255
PROB_SCALE = 254  # uint8 probabilities: round(p * 254); 255 is nodata
COLUMN_CHUNK = 2048  # columns blended and encoded at a time
# Blocks of whole windows (see _Layout), in pixels of core: at most this many columns
# (memory flat in width: the accumulator spans a block and its halo, not the scene) and,
# when set, rows. Each block's halo windows are predicted again, about window/BLOCK_COLUMNS
# more model work on scenes wider than a block.
BLOCK_COLUMNS = 2048
BLOCK_ROWS = None
GDAL_CACHE_MB = 128  # GDAL's block cache during a run (its default, 5 % of RAM, grows with the scene)
EPSILON = 1e-3  # weight floor: pixels at a window's edge still count where nothing else covers them
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")

# Test seam: called as _after_band(band_index) once a band is safely on disk.
_after_band = None


def predict_raster(model, image, out, window=512, overlap=64, blend="hann", tta=False,
                   output="classes", prob_dtype="float32", batch_size="auto", precision="auto",
                   uncertainty=None, mc_passes=8, cog=False, overwrite=False, resume=True,
                   progress=True, cluster=None):
    """Predict a whole scene (or many) with sliding windows and write a blended GeoTIFF.

    Args:
        model: a trained model: a ``.keras`` path (rsunet's, with its normalisation and
            classes, or a plain Keras model), a ``.joblib`` baseline, an
            :class:`~rsunet.artefact.RsunetModel`, a Keras model, or any object with
            ``predict_probabilities``, ``bands`` and ``classes``. A model trained with
            ``normalize="scene"`` (or ``"both"``) sees each scene scaled by that scene's own
            band percentiles (from at most 4 Mpixels of it, see :func:`for_scene`).
        image: a raster path, a list of paths, or a folder of GeoTIFFs.
        out: the output GeoTIFF; a folder when ``image`` is a list or a folder (one
            ``<image name>.tif`` per scene).
        window: window edge in pixels; a multiple of the model's ``multiple``.
        overlap: pixels shared by neighbouring windows (``0 <= overlap < window``).
        blend: how overlapping predictions combine: ``"hann"`` (weighted average with a
            Hann window, smooth, no seams), ``"centre"`` (each pixel from the window in
            which it lies furthest from an edge: the course's crop-the-margin method) or
            ``"average"`` (plain mean).
        tta: test-time augmentation: average the predictions of the 8 flips and
            rotations of each window (8 times the model cost).
        output: ``"classes"`` (uint8 class ids, nodata 255), ``"probabilities"`` (one
            band per class) or ``"both"`` (probabilities go to ``<out stem>_probabilities.tif``).
        prob_dtype: ``"float32"`` (nodata NaN) or ``"uint8"`` (``round(p * 254)``, nodata 255).
            Uncertainty layers are written in the same type and scale.
        batch_size: windows per model call, or ``"auto"``: as many as make about
            ``2**17`` pixels on a CPU (two 256 x 256 windows, one of 512 x 512), where a
            call whose feature maps fit the processor's caches runs fastest (a 512 x 512
            window four to a call is about 20 % slower per pixel than one to a call, on
            an AVX2 CPU), and ``2**20`` pixels on a GPU.
        precision: what a Keras model computes in: ``"float32"``, ``"bfloat16"`` or
            ``"auto"``: bfloat16 on a CPU with native bfloat16 arithmetic (AVX512_BF16,
            AMX; about 1.7x faster, labels 99.97 % identical or more), float32 elsewhere
            (see :func:`rsunet.model.resolve_precision`). With ``"auto"`` and
            ``"bfloat16"`` the batch normalisations are folded into the convolutions
            before them (:func:`rsunet.model.with_batch_norm_folded`: about 10 % faster,
            probabilities within about 1e-6). Pass ``"float32"`` for maps that match the
            model's own ``predict`` bit for bit. Other models ignore it.
        uncertainty: also write ``<out stem>_uncertainty.tif``, one band in 0..1 (0 = sure)
            from the same pass: ``"entropy"`` (entropy of the blended class probabilities
            divided by log K: 1 when every class is equally likely), ``"margin"``
            (``1 - (p1 - p2)``, the two most likely classes: 1 where they tie) or, with
            ``tta=True``, ``"tta"`` (how much the 8 flips and rotations disagree: the
            variance of each class's probability over the views, averaged over the
            classes and scaled by 4, its largest value, so views split evenly between 0
            and 1 give 1), or ``"mc_dropout"`` (Monte Carlo dropout: ``mc_passes``
            predictions with the model's dropout layers on, their disagreement measured
            as for ``"tta"``; the class map and probabilities are then the mean of the
            passes; ``mc_passes`` times the cost; for models trained with dropout > 0; the
            random masks depend only on the pixels, so a resumed run gives the same bytes).
            Entropy and margin cost a few percent of the run; ``"tta"`` needs the TTA run
            itself and adds little to it. None writes none.
        mc_passes: stochastic passes for ``uncertainty="mc_dropout"``.
        cog: write a Cloud-Optimized GeoTIFF (with overviews).
        overwrite: replace an existing output.
        resume: continue an interrupted run of the same call; False starts afresh.
        progress: show a progress bar over bands (of blocks); on a cluster, over blocks
            or scenes, and print the dashboard's address.
        cluster: where to compute: None (this process), ``"local"`` or ``"local:N"`` (N
            worker processes on this machine, one thread each), a dask scheduler's address
            (``"tcp://host:8786"``) or a ``distributed.Client``. Many scenes are one task
            each, one scene one task per block of windows; the output's bytes are the same
            as in one process's when every model call holds one window (``batch_size=1``);
            otherwise probabilities can differ by the model's float32 rounding, as a
            CPU's kernels can round a window differently in a call of another size (up
            to 5e-7 seen on an AVX2 CPU, even for a per-pixel Keras model). Workers read the model and
            images and write beside ``out`` under the same paths: a shared file system
            (see ``docs/scale-out.md``).

    Returns:
        The output path (:class:`pathlib.Path`); for ``output="both"`` or an ``uncertainty``
        a dict ``{"classes": path, "probabilities": path, "uncertainty": path}`` of the
        files written; for many scenes a list of those.

    Raises:
        BandMismatchError: an image's band count or dtype differs from the model's.
        PatchSizeError: ``window`` is not a positive multiple of the model's ``multiple``.
        OutputExistsError: an output exists and ``overwrite`` is False.
        InputError: another argument is out of range.
        ModelFormatError: ``model`` is not a model rsunet can use.
        WorkerPathError: a cluster worker cannot read an input or write beside ``out``.
        DependencyError: ``cluster`` is set but dask.distributed is not installed.
    """
    from rsunet.cluster import check_spec

    check_spec(cluster)
    scenes, many = _scenes(image, out, output, uncertainty)
    check_not_input([t for _, targets in scenes for t in targets.values()],
                    [model, image] + [p for p, _ in scenes])
    model_arg, model = model, as_model(model)
    params = PredictSettings(
        **_check_params(model, window, overlap, blend, output, prob_dtype, batch_size),
        tta=bool(tta), cog=bool(cog), precision=_resolved(precision, model),
        fold_batch_norm=precision != "float32" and _has_network(model),
        uncertainty=_check_uncertainty(uncertainty, tta, model),
        mc_passes=_check_count(mc_passes, "mc_passes") if uncertainty == "mc_dropout" else None)
    for _, targets in scenes:
        for target in targets.values():
            if target.exists() and not overwrite:
                raise OutputExistsError(f"{target} exists; pass overwrite=True to replace it")
    # the model as run (the workers prepare theirs alike): one fingerprint for the partial files
    loaded, model = model, prepared(model, params)
    if cluster is not None:
        from rsunet.cluster import predict_on_cluster

        source = model_arg if isinstance(model_arg, (str, os.PathLike)) else loaded
        done = predict_on_cluster(cluster, source, model, scenes, params, resume, progress)
    else:
        with new_models_expected():  # each call prepares its own copy of the network
            done = [predict_one(model, path, targets, params, resume, progress)
                    for path, targets in scenes]
    results = [targets if len(targets) > 1 else targets[output] for targets in done]
    return results if many else results[0]


def predict_one(model, path, targets, params, resume, progress, blocks=None):
    """Predict one scene into ``targets``; a bad input or a full disk leaves no debris."""
    try:
        with rasterio.Env(**gdal_options()), writing(next(iter(targets.values()))):
            _predict_scene(model, path, targets, params, resume, progress, blocks)
    except RsunetError:  # nothing to resume
        shutil.rmtree(_PartialStore.folder(targets), ignore_errors=True)
        raise
    return targets


# ---- arguments ---------------------------------------------------------------------

def _has_network(model):
    """Whether ``model`` is rsunet's wrapper of a Keras network (which can be copied with
    another precision or with dropout on)."""
    return getattr(model, "keras_model", None) is not None and dataclasses.is_dataclass(model)


def _resolved(precision, model):
    """float32 or bfloat16; float32 for a model without a Keras network of rsunet's."""
    if not _has_network(model):
        if precision not in ("auto", "float32", "bfloat16"):
            raise InputError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
        return "float32"
    from rsunet.model import resolve_precision

    return resolve_precision(precision)


def prepared(model, params):
    """The model as ``params`` run it: its network in their precision and, for
    ``uncertainty="mc_dropout"``, its passes with dropout on (a cluster's workers call
    this on the model they load)."""
    model = _for_prediction(model, params.precision, params.fold_batch_norm)
    if params.uncertainty == "mc_dropout":
        model = _MonteCarloModel(model, params.mc_passes)
    return model


def _for_prediction(model, precision, fold_batch_norm):
    """The model with its Keras network as predict_raster runs it: its batch
    normalisations folded into the convolutions if asked, computing in ``precision``
    (models without a network unchanged)."""
    if not _has_network(model) or (precision == "float32" and not fold_batch_norm):
        return model
    from rsunet.model import with_batch_norm_folded, with_precision

    net = with_batch_norm_folded(model.keras_model) if fold_batch_norm else model.keras_model
    return dataclasses.replace(model, keras_model=with_precision(net, precision))


@dataclasses.dataclass(frozen=True)
class PredictSettings:
    """How :func:`predict_raster` maps every scene of a call: its checked arguments.

    Attributes:
        window: window edge, pixels.
        overlap: pixels shared by neighbouring windows.
        blend: ``"hann"``, ``"centre"`` or ``"average"``.
        output: ``"classes"``, ``"probabilities"`` or ``"both"``.
        prob_dtype: ``"float32"`` or ``"uint8"`` (probabilities and uncertainty).
        batch_size: windows per model call (resolved, never ``"auto"``).
        tta: average the 8 flips and rotations of each window.
        cog: write Cloud-Optimized GeoTIFFs.
        precision: ``"float32"`` or ``"bfloat16"`` (resolved, never ``"auto"``).
        fold_batch_norm: the Keras network runs with its batch normalisations folded
            into its convolutions (``precision`` asked as ``"auto"`` or ``"bfloat16"``).
        uncertainty: None or one of :data:`UNCERTAINTIES`.
        mc_passes: passes of Monte Carlo dropout (None unless ``uncertainty="mc_dropout"``).
    """

    window: int
    overlap: int
    blend: str
    output: str
    prob_dtype: str
    batch_size: int
    tta: bool = False
    cog: bool = False
    precision: str = "float32"
    fold_batch_norm: bool = False
    uncertainty: str | None = None
    mc_passes: int | None = None


def _check_params(model, window, overlap, blend, output, prob_dtype, batch_size):
    multiple = int(model.multiple)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window <= 0 \
            or window % multiple:
        raise PatchSizeError(
            f"window must be a positive multiple of {multiple} (the model pools "
            f"{multiple.bit_length() - 1} times), got {window!r}")
    if not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < window:
        raise InputError(f"overlap must be an integer in [0, window), got {overlap!r}")
    if blend not in BLENDS:
        raise InputError(f"blend must be one of {BLENDS}, got {blend!r}")
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
    if prob_dtype not in PROB_DTYPES:
        raise InputError(f"prob_dtype must be one of {PROB_DTYPES}, got {prob_dtype!r}")
    return dict(window=int(window), overlap=int(overlap), blend=blend, output=output,
                prob_dtype=prob_dtype, batch_size=_windows_per_call(batch_size, int(window), model))


# pixels per model call for batch_size="auto": on a CPU the fastest calls hold about 2**17
# pixels (measured for 16 and 24 filter U-Nets, 128-512 pixel windows, on an AVX2 CPU:
# 5-20 % slower per pixel at 2**18 and beyond, as the feature maps spill out of the caches)
PIXELS_PER_CALL = {"cpu": 2 ** 17, "gpu": 2 ** 20}


def _windows_per_call(batch_size, window, model):
    if isinstance(batch_size, str) and batch_size == "auto":
        device = "gpu" if _has_network(model) and _gpu_present() else "cpu"
        return max(1, PIXELS_PER_CALL[device] // window ** 2)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return int(batch_size)


def _gpu_present():
    from rsunet.model import gpu_present

    return gpu_present()


def _check_uncertainty(uncertainty, tta, model):
    if uncertainty not in UNCERTAINTIES:
        raise InputError(f"uncertainty must be one of {UNCERTAINTIES}, got {uncertainty!r}")
    if uncertainty == "tta" and not tta:
        raise InputError("uncertainty='tta' measures how the test-time augmentation views "
                         "disagree: pass tta=True too, or use 'entropy' or 'margin'")
    if uncertainty == "mc_dropout" and not _has_network(model):
        raise InputError("uncertainty='mc_dropout' needs a Keras model with dropout layers "
                         f"(a U-Net trained with dropout > 0), not a {type(model).__name__}")
    return uncertainty


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _MonteCarloModel:
    """``passes`` predictions with dropout on: their mean, and their disagreement as one
    more channel (as for TTA). The masks are seeded from the batch's own pixels."""

    def __init__(self, model, passes):
        from rsunet.model import with_dropout_at_inference

        net, self.states = with_dropout_at_inference(model.keras_model)
        self.model, self.passes = dataclasses.replace(model, keras_model=net), passes

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict_probabilities(self, batch):
        key = zlib.crc32(np.ascontiguousarray(batch, np.float32).data)  # same pixels, same masks
        return _mean_and_spread(self._pass(batch, key, p) for p in range(self.passes))

    def _pass(self, batch, key, p):
        for state in self.states:
            state.assign(np.array([key, p], np.int64))
        return np.asarray(self.model.predict_probabilities(batch), np.float32)


def _scenes(image, out, output, uncertainty=None):
    """[(image path, {kind: output path})], and whether many scenes were given."""
    many = not isinstance(image, (str, os.PathLike)) or Path(image).is_dir()
    if not many:
        return [(Path(image), _targets(Path(out), output, uncertainty))], False
    if isinstance(image, (str, os.PathLike)):
        images = sorted(p for p in Path(image).iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        if not images:
            raise InputError(f"no rasters ({', '.join(RASTER_SUFFIXES)}) in folder {image}")
    else:
        images = [Path(p) for p in image]
        if not images:
            raise InputError("image is an empty list")
    out = Path(out)
    if out.suffix.lower() in RASTER_SUFFIXES:
        raise InputError(f"with many scenes, out must be a folder, got {out}")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise InputError("two images share a file name; their outputs would collide")
    return [(p, _targets(out / f"{p.stem}.tif", output, uncertainty)) for p in images], True


def _targets(out, output, uncertainty=None):
    def beside(kind):
        return out.with_name(f"{out.stem}_{kind}{out.suffix or '.tif'}")

    targets = {"classes": out, "probabilities": beside("probabilities")} if output == "both" \
        else {output: out}
    if uncertainty:
        targets["uncertainty"] = beside("uncertainty")
    return targets


def _check_bands(model, src, path):
    bands = int(model.bands)
    if src.count != bands:
        raise BandMismatchError(
            f"{path} has {src.count} bands but the model takes {bands}; "
            "stack or select the bands the model was trained on")
    meta = getattr(model, "meta", None) or {}
    want = meta.get("dtype") or meta.get("input_dtype")
    if want and src.dtypes[0] != want and normalize_of(model.normalization) not in SCALED_ALONE:  # scale-free
        raise BandMismatchError(
            f"{path} is {src.dtypes[0]} but the model was trained on {want} pixels; "
            "convert the image to the same data type and scale")


def gdal_options():
    """A bounded block cache, unless the user set GDAL_CACHEMAX."""
    return {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_MB}


# ---- one scene ---------------------------------------------------------------------

def _predict_scene(model, path, targets, params, resume, progress, blocks=None):
    """Predict one scene block by block; ``blocks`` (a cluster's runner) computes the
    unfinished blocks elsewhere instead of here, one after another."""
    from tqdm.auto import tqdm

    with open_raster(path) as src:
        _check_bands(model, src, path)
        model = for_raster(model, src)
        layout = _Layout.of(src.height, src.width, params.window, params.overlap,
                            BLOCK_ROWS or getattr(blocks, "block_rows", None), BLOCK_COLUMNS)
        fill = fill_values(model, src.count)
        k = _n_outputs(model, src.count, fill)
        store = _PartialStore(targets, _fingerprint(model, src, path, params, layout), resume)
        done = [store.block_done(b) for b in range(len(layout.blocks))]
        todo = [b for b, n in enumerate(done) if n < len(layout.window_rows(b))]
        if blocks is not None:
            blocks.run(path, layout, store, fill, k, params, todo)
        else:
            bar = tqdm(total=layout.total_rows(), initial=sum(done), unit="band",
                       desc=Path(path).name, disable=not progress, leave=False)
            with bar:
                for b in todo:
                    predict_block(src, model, layout, b, store, fill, k, params,
                                   lambda j: bar.update(1))
        profile = dict(height=src.height, width=src.width, transform=src.transform, crs=src.crs)
    _assemble(store, targets, profile, model, k, params, layout)


class _Layout:
    """The scene's global window grid and its blocks of whole windows.

    Window row ``i`` finishes pixel band ``i``: rows ``[row_offs[i], row_offs[i + 1])``
    (the last band runs to the scene's edge); columns likewise. A block is a rectangle of
    such bands, its *core*; it is computed from every window that touches its core, in
    the scene's row-major order, with the weights of the global grid, so each core pixel
    sums the same operands in the same order as a single pass over the whole scene and
    gets the same bits. Windows in the halo (touching two cores) are predicted twice.
    """

    def __init__(self, height, width, window, row_offs, col_offs, row_groups, col_groups):
        self.height, self.width, self.window = height, width, window
        self.row_offs, self.col_offs = row_offs, col_offs
        self.row_groups, self.col_groups = row_groups, col_groups
        self.blocks = [(rg, cg) for rg in row_groups for cg in col_groups]

    @classmethod
    def of(cls, height, width, window, overlap, block_rows=None, block_cols=None):
        stride = window - overlap
        row_offs, col_offs = window_offsets(height, window, stride), window_offsets(width, window, stride)
        return cls(height, width, window, row_offs, col_offs,
                   _band_groups(row_offs, height, block_rows),
                   _band_groups(col_offs, width, block_cols))

    def describe(self):
        """What decides the partial files: a different layout never resumes."""
        return dict(row_groups=self.row_groups, col_groups=self.col_groups)

    def edge(self, offs, length, j):
        """Where band ``j`` ends: the next window's offset, or the scene's edge."""
        return offs[j + 1] if j + 1 < len(offs) else length

    def window_rows(self, b):
        """The window rows (a range) that touch block ``b``'s core."""
        (ja, jb), _ = self.blocks[b]
        return _touching(self.row_offs, self.window, ja, jb)

    def window_cols(self, b):
        _, (ma, mb) = self.blocks[b]
        return _touching(self.col_offs, self.window, ma, mb)

    def core_cols(self, b):
        """Block ``b``'s core columns in scene coordinates: ``(start, stop)``."""
        _, (ma, mb) = self.blocks[b]
        return self.col_offs[ma], self.edge(self.col_offs, self.width, mb - 1)

    def total_rows(self):
        return sum(len(self.window_rows(b)) for b in range(len(self.blocks)))


def _band_groups(offs, length, target):
    """Consecutive bands grouped into ``[(first, stop)]`` spans of at most ``target`` pixels
    (at least one band each); ``target=None``: one span."""
    groups, first = [], 0
    for j in range(len(offs)):
        end = offs[j + 1] if j + 1 < len(offs) else length
        if target is not None and j > first and end - offs[first] > target:
            groups.append((first, j))
            first = j
    groups.append((first, len(offs)))
    return groups


def _touching(offs, window, first, stop):
    """Indexes of the windows that overlap bands ``first .. stop - 1``: the core's windows
    and the halo's (windows starting up to a window before the core)."""
    start = first
    while start > 0 and offs[start - 1] + window > offs[first]:
        start -= 1
    return range(start, stop)


def predict_block(src, model, layout, b, store, fill, k, params, on_band=None):
    """Predict block ``b`` of the scene into ``store``, continuing where it stopped.

    The block is a small scene of its own: the windows touching its core stream row by
    row through an accumulator ``window`` rows high and as wide as those windows; each
    finished band's core columns are saved with the accumulator's carried rows, so a
    killed run continues from the block's last finished band.
    """
    w, blend = params.window, params.blend
    rows, cols = layout.window_rows(b), layout.window_cols(b)
    row_offs = [layout.row_offs[i] for i in rows]
    col_offs = [layout.col_offs[c] for c in cols]
    x0 = col_offs[0]
    core = tuple(c - x0 for c in layout.core_cols(b))
    first_core = layout.blocks[b][0][0]
    done = store.block_done(b)
    if done == len(rows):
        return
    # with uncertainty="tta" or "mc_dropout" the views' disagreement is one more channel
    acc = _Accumulator(k + (params.uncertainty in SPREADS), w, col_offs[-1] + w - x0, blend)
    if done:
        acc.load(store.carry(b, done))
    windows = _predicted_windows(src, model.predict_probabilities, row_offs, col_offs, done,
                                 fill, params)
    for li, c, probs, valid in windows:
        j, r = rows[li], row_offs[li]
        acc.add(probs, _weights(blend, w, r, c, layout.height, layout.width) * valid, c - x0)
        if c != col_offs[-1]:
            continue
        # the row's last window: every window touching band j is in, so it is final
        height = layout.edge(layout.row_offs, layout.height, j) - r
        band = acc.pop(height, core if j >= first_core else None,
                       lambda p, ok: _encode(p, ok, params))
        store.save_band(b, j, li, band, acc.carry())
        if on_band is not None:
            on_band(j)
        if _after_band is not None:
            _after_band(j)


def _n_outputs(model, bands, fill):
    """Number of probability bands the model gives (a sigmoid output gives 2)."""
    keras_model = getattr(model, "keras_model", None)
    if keras_model is not None:
        k = int(keras_model.output_shape[-1])
        return 2 if k == 1 else k
    m = int(model.multiple)
    probe = np.broadcast_to(fill, (1, m, m, bands)).astype(np.float32)
    return int(np.asarray(model.predict_probabilities(probe)).shape[-1])


def _predicted_windows(src, predict, row_offs, col_offs, first_row, fill, params):
    """Yield ``(row index, column offset, probabilities, validity)`` per window, row-major.

    Starts at row of windows ``first_row``. Batches are cut from the scene's whole
    row-major sequence of windows, not row by row, so model calls stay full (a row of
    9 windows in batches of 4 no longer ends in a call of 1). A resumed run starts at the
    batch boundary before its first window and drops the windows before it: each window
    is predicted in the same batch as in an uninterrupted run, so the bytes are the same
    even for a model whose output depends on its batch. One batch is in flight: the
    caller finishes a row band before the next batch is read.
    """
    n_cols, size, w = len(col_offs), params.batch_size, params.window
    first, total = first_row * n_cols, len(row_offs) * n_cols
    indexes = list(range(1, src.count + 1))
    for start in range(first - first % size, total, size):
        batch = range(start, min(start + size, total))
        x, valid = _read_batch(src, indexes, row_offs, col_offs, batch, w, fill)
        probs = _predict(predict, x, params.tta, spread=params.uncertainty == "tta")
        del x  # not held while the next batch is read
        for i, p, v in zip(batch, probs, valid):
            if i >= first:
                yield i // n_cols, col_offs[i % n_cols], p, v


def _read_batch(src, indexes, row_offs, col_offs, batch, w, fill):
    """The windows numbered ``batch`` (row-major) and their validity, one read per row."""
    n_cols = len(col_offs)
    parts = [_read_windows(src, indexes, row_offs[j], [col_offs[i % n_cols] for i in group],
                           w, fill)
             for j, group in groupby(batch, key=lambda i: i // n_cols)]
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _read_windows(src, indexes, row, cols, w, fill):
    """``(n, w, w, bands)`` float32 windows of one row and their ``(n, w, w)`` validity.

    The batch's columns are read at once, padded beyond the scene; invalid pixels get
    ``fill`` so nodata values never reach the model.
    """
    span = Window(cols[0], row, cols[-1] + w - cols[0], w)
    inside = window_intersection(span, Window(0, 0, src.width, src.height))
    data, valid = read_padded(src, indexes, span, inside)
    data = np.moveaxis(data, 0, -1).astype(np.float32)
    data[~valid] = fill
    x = np.stack([data[:, c - cols[0]:c - cols[0] + w] for c in cols])
    v = np.stack([valid[:, c - cols[0]:c - cols[0] + w] for c in cols])
    return x, v


def _dihedral(x, t):
    """The t-th (0..7) flip/rotation of a ``(n, rows, cols, ...)`` batch."""
    if t >= 4:
        x = x[:, :, ::-1]
    return np.rot90(x, t % 4, axes=(1, 2))


def _undo_dihedral(y, t):
    y = np.rot90(y, -(t % 4), axes=(1, 2))
    return y[:, :, ::-1] if t >= 4 else y


def _predict(predict, x, tta, spread=False):
    """Class probabilities ``(n, rows, cols, K)``; with ``spread``, the TTA views'
    disagreement (see :func:`predict_raster`'s ``uncertainty="tta"``) as channel K+1."""
    if not tta:
        return np.asarray(predict(x), np.float32)
    raw = (np.asarray(predict(np.ascontiguousarray(_dihedral(x, t))), np.float32)
           for t in range(8))
    if spread:
        return _mean_and_spread(raw, align=_undo_dihedral)
    views = (_undo_dihedral(y, t) for t, y in enumerate(raw))
    total = next(views)
    for y in views:  # one view at a time: a batch's memory, not eight
        total = total + y
    return total / np.float32(8)


def _mean_and_spread(views, align=None):
    """The views' mean ``(..., K)`` and, as channel K+1, their variance averaged over the
    classes, times 4: 0 where they agree, 1 where two classes split them evenly.

    ``views`` may be a generator: one view is held at a time, with running sums of the
    values and of each pixel's squares summed over the classes (values in 0..1, so
    float32 loses nothing that matters). ``align(y, i)`` brings view ``i`` into the
    common frame (TTA's flips undone); the squares are summed before it, on the model's
    contiguous output, and aligned as one channel: a third of the work of aligning K.
    """
    align = align or (lambda y, i: y)
    total = squares = None
    n = 0
    for n, y in enumerate(views, start=1):
        square = align(np.einsum("...k,...k->...", y, y)[..., None], n - 1)
        y = align(y, n - 1)
        if total is None:
            total, squares = y.copy(), square.copy()
        else:
            total += y
            squares += square
    total /= np.float32(n)
    k = total.shape[-1]
    variance = squares[..., 0] / np.float32(n) - np.einsum("...k,...k->...", total, total)
    np.maximum(variance, 0, out=variance)
    return np.concatenate([total, (variance * np.float32(4 / k))[..., None]], axis=-1)


def _profile(length, window, offset, kind):
    """1-D weights of a window along one axis; sides on the scene's edge are not edges."""
    i = np.arange(window)
    at_start, at_end = offset == 0, offset + window >= length
    if kind == "average":
        return np.ones(window, np.float32)
    if kind == "centre":
        big = float(window)
        left = np.full(window, big) if at_start else i + 1.0
        right = np.full(window, big) if at_end else window - i + 0.0
        return np.minimum(left, right).astype(np.float32)
    p = np.sin(np.pi * (i + 0.5) / window) ** 2
    half = window // 2
    if at_start:
        p[:half] = 1.0
    if at_end:
        p[half:] = 1.0
    return p.astype(np.float32)


_WEIGHT_CACHE: dict = {}


def _weights(blend, w, row, col, height, width):
    """2-D blending weights of the window at (row, col): at most 9 kinds, cached."""
    key = (blend, w, row == 0, row + w >= height, col == 0, col + w >= width)
    if key not in _WEIGHT_CACHE:
        pr = _profile(height, w, row, blend)
        pc = _profile(width, w, col, blend)
        if blend == "centre":
            weight = np.minimum(pr[:, None], pc[None, :])
        else:
            weight = np.maximum(pr[:, None] * pc[None, :], np.float32(EPSILON))
        _WEIGHT_CACHE[key] = weight.astype(np.float32)
    return _WEIGHT_CACHE[key]


class _Accumulator:
    """Sums (or best picks) of class probabilities for the ``window`` rows in flight."""

    def __init__(self, k, window, width, blend):
        self.k, self.window, self.width, self.blend = k, window, width, blend
        self.values = np.zeros((k, window, width), np.float32)
        self.weight = np.zeros((window, width), np.float32)

    def add(self, probs, weight, col):
        cols = slice(col, col + self.window)
        p = np.moveaxis(probs, -1, 0)
        if self.blend == "centre":
            better = weight > self.weight[:, cols]
            self.values[:, :, cols][:, better] = p[:, better]
            self.weight[:, cols][better] = weight[better]
        else:
            self.values[:, :, cols] += p * weight
            self.weight[:, cols] += weight

    def pop(self, rows, cols, encode):
        """Encode the blended top ``rows`` of columns ``cols = (start, stop)`` (None: none).

        ``encode(p, ok)`` takes ``(K, rows, cols)`` chunks and returns
        ``{kind: (bands, rows, cols) array}``; returns those outputs joined. The remaining
        rows move up: the next row of windows starts ``rows`` lower. Chunks of columns
        keep temporaries small.
        """
        out = {}
        start, stop = cols or (0, 0)
        for c0 in range(start, stop, COLUMN_CHUNK):
            cols = slice(c0, min(c0 + COLUMN_CHUNK, stop))
            weight = self.weight[:rows, cols]
            ok = weight > 0
            p = self.values[:, :rows, cols]
            p = p / np.where(ok, weight, 1) if self.blend != "centre" else p.copy()
            for kind, array in encode(p, ok).items():
                if kind not in out:
                    out[kind] = np.empty(array.shape[:2] + (stop - start,), array.dtype)
                out[kind][:, :, cols.start - start:cols.stop - start] = array
        keep = self.window - rows
        self.values[:, :keep] = self.values[:, rows:].copy()
        self.values[:, keep:] = 0
        self.weight[:keep] = self.weight[rows:].copy()
        self.weight[keep:] = 0
        self._carried = keep
        return out

    def carry(self):
        """The rows that the next row of windows continues (saved for resuming)."""
        keep = self._carried
        return {"values": self.values[:, :keep], "weight": self.weight[:keep]}

    def load(self, carry):
        keep = carry["weight"].shape[0]
        self.values[:, :keep] = carry["values"]
        self.weight[:keep] = carry["weight"]


def _encode(p, ok, params):
    """The band's outputs, ready to write: {kind: (bands, rows, cols) array}."""
    out = {}
    if params.uncertainty:
        p, spread = (p[:-1], p[-1]) if params.uncertainty in SPREADS else (p, None)
        u = spread if spread is not None else _uncertainty(p, params.uncertainty)
        out["uncertainty"] = _as_probability(u[None], ok, params)
    if params.output in ("classes", "both"):
        classes = _first_max(p)
        classes[~ok] = CLASS_NODATA
        out["classes"] = classes[None]
    if params.output in ("probabilities", "both"):
        out["probabilities"] = _as_probability(p, ok, params)
    return out


def _first_max(p):
    """``np.argmax(p, axis=0)`` as uint8 for ``(K, rows, cols)``: a compare per class over
    contiguous planes, 2-3x faster than numpy's strided argmax across them for few
    classes (numpy's own where a pixel holds NaN, so the result is always argmax's)."""
    out = np.zeros(p.shape[1:], np.uint8)
    best = p[0]
    for k in range(1, len(p)):
        out[p[k] > best] = k
        best = np.maximum(best, p[k])
    if np.isnan(best).any():
        return np.argmax(p, axis=0).astype(np.uint8)
    return out


def _as_probability(p, ok, params):
    """``(bands, rows, cols)`` values in 0..1 as written: float32 (NaN) or uint8 x 254 (255)."""
    if params.prob_dtype == "uint8":
        q = np.rint(np.clip(p, 0, 1) * PROB_SCALE).astype(np.uint8)
        q[:, ~ok] = CLASS_NODATA
    else:
        q = p.astype(np.float32)
        q[:, ~ok] = np.nan
    return q


def _uncertainty(p, kind):
    """``(rows, cols)`` in 0..1 from blended class probabilities ``(K, rows, cols)``."""
    p = np.clip(p, 0, 1)
    if kind == "entropy":
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
        return (-plogp.sum(axis=0) / np.log(len(p))).astype(np.float32)
    top = np.partition(p, len(p) - 2, axis=0)[-2:]  # margin: the two most likely classes
    return (1 - (top[1] - top[0])).astype(np.float32)


# ---- resumable partial output --------------------------------------------------------

def _fingerprint(model, src, path, params, layout):
    """A hash of everything that decides the output and the partial files' layout: a
    different call never resumes."""
    h = hashlib.sha256()
    stat = os.stat(path)
    h.update(json.dumps(dict(
        rsunet=__version__, params=dataclasses.asdict(params), path=str(Path(path).resolve()), size=stat.st_size,
        mtime=stat.st_mtime_ns, shape=[src.count, src.height, src.width], dtypes=src.dtypes,
        transform=list(src.transform)[:6], normalization=model.normalization,
        classes={str(k): v for k, v in (model.classes or {}).items()},
        blocks=layout.describe(),
    ), sort_keys=True, default=str).encode())
    _hash_model(h, model)
    return h.hexdigest()


def _hash_model(h, model):
    digest = getattr(model, "file_digest", None)
    if digest:  # loaded from a file: its bytes (a forest pickles differently on every load)
        h.update(digest.encode())
        return
    keras_model = getattr(model, "keras_model", None)
    if keras_model is not None:
        h.update(json.dumps(keras_model.get_config(), sort_keys=True, default=str).encode())
        for weight in keras_model.get_weights():
            h.update(np.ascontiguousarray(weight).tobytes())
        return
    import pickle

    try:
        h.update(pickle.dumps(model, protocol=4))
    except Exception:  # an unpicklable model: never resume from an unknown partial
        h.update(os.urandom(16))


class _PartialStore:
    """Finished bands of each block and the state of unfinished blocks, in a hidden folder.

    ``state.json`` holds the call's fingerprint; each block has its own state file
    (window rows done), its finished bands' core columns and the accumulator rows it
    carries, so blocks can be computed in any order, by any process sharing the folder.
    Every file is written under a temporary name and renamed, a block's state last, so
    whatever moment a process dies at, the folder describes a consistent point.
    """

    def __init__(self, targets, fingerprint, resume):
        self.dir = self.folder(targets)
        self.fingerprint = fingerprint
        state = self._read_json(self.dir / "state.json") if resume else None
        if not state or state.get("fingerprint") != fingerprint:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_json(self.dir / "state.json", {"fingerprint": fingerprint})

    @staticmethod
    def folder(targets):
        first = next(iter(targets.values()))
        return first.with_name(f".{first.name}.rsunet-partial")

    @staticmethod
    def _read_json(path):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_json(path, value):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)

    def block_done(self, b):
        """Window rows of block ``b`` finished so far."""
        state = self._read_json(self._block_state(b))
        return int(state["done"]) if state else 0

    def _block_state(self, b):
        return self.dir / f"block_{b:05d}.json"

    def band_path(self, kind, j, b):
        return self.dir / f"{kind}_{j:06d}_{b:05d}.npy"

    def _carry_path(self, name, b, done):
        return self.dir / f"carry_{name}_{b:05d}_{done:06d}.npy"

    def _save_npy(self, path, array):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)

    def save_band(self, b, j, li, outputs, carry):
        """Block ``b``'s band ``j`` (its window row ``li``) is final: save it, then the state."""
        for kind, array in outputs.items():
            self._save_npy(self.band_path(kind, j, b), array)
        for name, array in carry.items():
            self._save_npy(self._carry_path(name, b, li + 1), array)
        self._write_json(self._block_state(b), {"done": li + 1})
        for name in carry:
            old = self._carry_path(name, b, li)
            if old.exists():
                old.unlink()

    def carry(self, b, done):
        return {name: np.load(self._carry_path(name, b, done)) for name in ("values", "weight")}

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _assemble(store, targets, profile, model, k, params, layout):
    """Write each output GeoTIFF from the finished bands, then drop the partial folder."""
    classes = {int(c): str(n) for c, n in (model.classes or {}).items()} or \
        {i: str(i) for i in range(k)}
    names = [classes.get(i, str(i)) for i in range(k)]
    tags = dict(RSUNET_CLASSES=json.dumps({str(c): n for c, n in classes.items()}),
                RSUNET_PREDICTION=json.dumps({key: getattr(params, key) for key in (
                    "window", "overlap", "blend", "tta")}))
    for kind, target in targets.items():
        if kind == "classes":
            dtype, nodata, count = "uint8", CLASS_NODATA, 1
            extra, bands = dict(RSUNET_IGNORE=str(CLASS_NODATA)), ["class"]
        else:
            dtype = params.prob_dtype
            nodata = CLASS_NODATA if dtype == "uint8" else float("nan")
            count, bands = k, [f"p_{n}" for n in names]
            extra = dict(RSUNET_PROB_SCALE=str(PROB_SCALE)) if dtype == "uint8" else {}
            if kind == "uncertainty":
                count, bands = 1, [f"uncertainty_{params.uncertainty}"]
                extra["RSUNET_UNCERTAINTY"] = params.uncertainty
        prof = geotiff_profile(count, profile["height"], profile["width"], dtype,
                               profile["transform"], profile["crs"], nodata)
        with atomic_path(target, overwrite=True) as tmp:
            plain = tmp.with_name(tmp.name + ".gtiff.tif") if params.cog else tmp
            with rasterio.open(plain, "w", **prof) as dst:
                for row, band in _bands_of(store, kind, layout):
                    dst.write(band, window=Window(0, row, band.shape[2], band.shape[1]))
                dst.update_tags(**tags, **extra)
                for i, name in enumerate(bands, start=1):
                    dst.set_band_description(i, name)
            if params.cog:
                _to_cog(plain, tmp, kind)
    store.remove()


def _bands_of(store, kind, layout):
    """Yield ``(first row, (bands, rows, width) array)`` top to bottom, every band whole.

    A band of one block is its memory-mapped file; a band split into column blocks is
    joined into a memory-mapped file of its own (disk, not memory, on wide scenes). Either
    way GDAL gets one write per band, as from a single pass: with a block cache smaller
    than the file, the tiles' order in the file depends on the writes, not just the pixels.
    """
    n_cols = len(layout.col_groups)
    joined = store.dir / f"joined_{kind}.npy"
    for g, (ja, jb) in enumerate(layout.row_groups):
        blocks = range(g * n_cols, (g + 1) * n_cols)
        for j in range(ja, jb):
            pieces = [np.load(store.band_path(kind, j, b), mmap_mode="r") for b in blocks]
            band = pieces[0]
            if len(pieces) > 1:
                band = np.lib.format.open_memmap(joined, mode="w+", dtype=band.dtype, shape=(
                    band.shape[0], band.shape[1], sum(p.shape[2] for p in pieces)))
                np.concatenate(pieces, axis=2, out=band)
            yield layout.row_offs[j], band
            del band, pieces
    joined.unlink(missing_ok=True)


def _to_cog(plain, target, kind):
    from rasterio.shutil import copy

    try:
        copy(plain, target, driver="COG", compress="DEFLATE",
             resampling="nearest" if kind == "classes" else "average")
    finally:
        if os.path.exists(plain):
            os.unlink(plain)
