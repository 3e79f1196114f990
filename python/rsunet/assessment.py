"""Map assessment: confusion matrix and accuracy figures, object counts, polygons.

Stage 6 of the workflow. A class map is a single-band integer raster (uint8 as
:func:`rsunet.predict_raster` writes it) whose value 255 (``ignore``) marks unknown
pixels; pixels that are 255 or nodata in *either* the map or the reference count
nowhere.

* :func:`assess_map` streams one confusion matrix over the whole map (row blocks read
  with rasterio windows, one ``np.bincount`` per block, so memory does not grow with
  the map), or only inside given areas (``where``), or at ``sample`` random pixels per
  area as the course did; and derives overall accuracy, Cohen's kappa, per-class
  precision (user's accuracy), recall (producer's accuracy), F1 and IoU, and the
  quantity and allocation disagreement of Pontius & Millones (2011).
* :func:`count_objects` counts connected objects of a class (``scipy.ndimage.label``)
  with their areas and the density of objects per hectare.
* :func:`polygonize` writes the map as polygons to a GeoPackage.

The confusion matrix has the *reference* classes in rows and the *predicted* classes in
columns, as ``sklearn.metrics.confusion_matrix(y_true, y_pred)``.

Reference: Pontius, R. G. Jr. and Millones, M. (2011). Death to Kappa: birth of quantity
disagreement and allocation disagreement for accuracy assessment. International
Journal of Remote Sensing 32(15), 4407-4429.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from rsunet.errors import (ClassFieldError, GridMismatchError, InputError, NoOverlapError,
                           OutputExistsError, EmptyResultError, RsunetWarning)
from rsunet.io import atomic_path, check_not_input, open_raster, reading, write_vector
from rsunet.labels import (IGNORE, class_ids_of, georeferenced, is_vector, read_classes_tag,
                           read_vector, same_grid, to_image_crs)

__all__ = ["assess_map", "count_objects", "polygonize", "Assessment", "ObjectCount",
           "metrics_from_confusion", "IGNORE"]

N_VALUES = 256  # class ids are 0..254 (uint8 values); 255 is ignore
BLOCK_PIXELS = 2 ** 19  # pixels per block read by default (~50 bytes each at the peak)
UNLABELLED = ("background", "ignore")
DESIGNS = ("census", "stratified")


# ---- results --------------------------------------------------------------------------

@dataclass
class Assessment:
    """The accuracy of a class map against a reference.

    Attributes:
        confusion: DataFrame of pixel (or point) counts, one row per *reference* class
            and one column per *predicted* class, labelled with the class names.
        per_class: DataFrame, one row per class: ``class_id``, ``class``,
            ``precision`` (user's accuracy: correct / predicted), ``recall`` (producer's
            accuracy: correct / reference), ``f1``, ``iou`` (correct / (reference +
            predicted - correct)), ``support`` (reference count), ``predicted``
            (predicted count). A ratio whose denominator is 0 is NaN.
        overall: dict with ``n`` (pixels or points counted), ``overall_accuracy``,
            ``kappa`` (Cohen's), ``quantity_disagreement``,
            ``allocation_disagreement`` (Pontius & Millones 2011; their sum is
            ``1 - overall_accuracy``), ``macro_f1`` and ``mean_iou`` (means over the
            classes where they are defined).
        class_ids: the class ids in the order of the matrix.
        per_scene: DataFrame, one row per map assessed (``scene``: the map's file
            name without extension), with that map's ``overall`` figures: a pooled
            figure hides where a model wins and where it loses.
    """

    confusion: pd.DataFrame
    per_class: pd.DataFrame
    overall: dict
    class_ids: list = dc_field(default_factory=list)
    per_scene: pd.DataFrame | None = None

    @property
    def matrix(self) -> np.ndarray:
        """The confusion matrix as an int64 array (rows reference, columns predicted)."""
        return self.confusion.to_numpy(dtype=np.int64)

    def table(self) -> pd.DataFrame:
        """One table: the per-class rows, then one row per overall figure (``class`` =
        the figure's name, its value in column ``value``)."""
        overall = pd.DataFrame({"class": list(self.overall), "value": list(self.overall.values())})
        return pd.concat([self.per_class, overall], ignore_index=True)

    def as_dict(self) -> dict:
        """Plain lists and dicts (for R and JSON): ids, names, matrix, per-class columns,
        overall figures."""
        return dict(class_ids=[int(i) for i in self.class_ids],
                    classes=[str(c) for c in self.per_class["class"]],
                    confusion=self.matrix.tolist(),
                    per_class={c: self.per_class[c].tolist() for c in self.per_class.columns},
                    overall={k: float(v) for k, v in self.overall.items()},
                    per_scene=None if self.per_scene is None else
                    {c: self.per_scene[c].tolist() for c in self.per_scene.columns})

    def __repr__(self) -> str:
        o = self.overall
        return (f"Assessment(n={int(o['n'])}, overall_accuracy={o['overall_accuracy']:.4f}, "
                f"kappa={o['kappa']:.4f}, quantity={o['quantity_disagreement']:.4f}, "
                f"allocation={o['allocation_disagreement']:.4f}, classes={len(self.class_ids)})")


@dataclass
class ObjectCount:
    """Connected objects of one class in a map.

    Attributes:
        objects: DataFrame, one row per object: ``id`` (the label, 1..count), ``pixels``,
            ``area_m2``, ``area_ha``, ``x``, ``y`` (centroid in the map's CRS).
        summary: dict: ``class_id``, ``count``, ``connectivity``, ``min_pixels``,
            ``valid_area_ha`` (area of the pixels that are neither ignore nor nodata),
            ``objects_per_ha`` (count / valid area), ``object_area_ha`` (total),
            ``mean_object_area_m2``, ``area_method`` (``"planar"`` or ``"geodesic"``).
        labels: the ``(rows, cols)`` int32 label image (0 = no object), as
            ``scipy.ndimage.label`` made it, after small objects were dropped and the
            rest renumbered.
    """

    objects: pd.DataFrame
    summary: dict
    labels: np.ndarray | None = None

    def as_dict(self) -> dict:
        """Plain lists and dicts (for R and JSON): the object columns and the summary."""
        return dict(objects={c: self.objects[c].tolist() for c in self.objects.columns},
                    summary=dict(self.summary))

    def __repr__(self) -> str:
        s = self.summary
        return (f"ObjectCount(class_id={s['class_id']}, count={s['count']}, "
                f"objects_per_ha={s['objects_per_ha']:.4g}, valid_area_ha={s['valid_area_ha']:.4g})")


# ---- metrics ---------------------------------------------------------------------------

def metrics_from_confusion(matrix) -> tuple[dict, dict]:
    """Accuracy figures of a square confusion matrix (rows reference, columns predicted).

    Args:
        matrix: ``(k, k)`` counts.

    Returns:
        ``(overall, per_class)``: ``overall`` a dict (``n``, ``overall_accuracy``,
        ``kappa``, ``quantity_disagreement``, ``allocation_disagreement``, ``macro_f1``,
        ``mean_iou``); ``per_class`` a dict of arrays (``precision``, ``recall``,
        ``f1``, ``iou``, ``support``, ``predicted``), NaN where a denominator is 0.

    Raises:
        InputError: the matrix is not square or holds no count.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InputError(f"a confusion matrix must be square, got shape {m.shape}")
    n = m.sum()
    if n <= 0:
        raise EmptyResultError("the confusion matrix is empty: no pixel is valid in both maps")
    diag, ref, pred = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, diag / pred, np.nan)
        recall = np.where(ref > 0, diag / ref, np.nan)
        f1 = np.where(ref + pred > 0, 2 * diag / (ref + pred), np.nan)
        iou = np.where(ref + pred - diag > 0, diag / (ref + pred - diag), np.nan)
    p_ref, p_pred, p_diag = ref / n, pred / n, diag / n
    oa = p_diag.sum()
    expected = float(np.sum(p_ref * p_pred))
    kappa = (oa - expected) / (1 - expected) if expected < 1 else float("nan")
    # Pontius & Millones (2011), eqs. 2-5: q_g = |p_+g - p_g+|, a_g = 2 min(p_g+ - p_gg,
    # p_+g - p_gg); Q and A are half their sums, and Q + A = 1 - OA.
    quantity = 0.5 * np.abs(p_pred - p_ref).sum()
    allocation = 0.5 * (2 * np.minimum(p_ref - p_diag, p_pred - p_diag)).sum()
    overall = dict(n=float(n), overall_accuracy=float(oa), kappa=float(kappa),
                   quantity_disagreement=float(quantity),
                   allocation_disagreement=float(allocation),
                   macro_f1=_nanmean(f1), mean_iou=_nanmean(iou))
    per_class = dict(precision=precision, recall=recall, f1=f1, iou=iou,
                     support=ref.astype(np.int64), predicted=pred.astype(np.int64))
    return overall, per_class


def _nanmean(x) -> float:
    x = np.asarray(x, float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


# ---- assess_map ------------------------------------------------------------------------

def assess_map(prediction, reference, field=None, where=None, sample=None, seed=0,
               classes=None, unlabelled="background", ignore=IGNORE, use_nodata=True,
               block_rows=None, png=None, csv=None, overwrite=False, design="census",
               cluster=None):
    """Assess a class map against a reference: confusion matrix and accuracy figures.

    With ``design="stratified"`` the reference is a stratified random sample of points
    (strata = map classes, e.g. from :func:`rsunet.sample_points`, labelled) and the
    result is an :class:`rsunet.estimation.AreaEstimate`: user's, producer's and
    overall accuracy with 95 % confidence intervals, the error matrix in area
    proportions and each class's area in hectares with its 95 % interval, by the
    estimators of Olofsson et al. (2014) (:mod:`rsunet.estimation`).

    Args:
        prediction: the class map (a single-band integer GeoTIFF, e.g. from
            :func:`rsunet.predict_raster`), or a list of maps (several held-aside
            scenes) pooled into one confusion matrix; ``reference`` is then a list of
            as many references, pair by pair, and ``where`` applies to each map.
        reference: the truth, as
            a label raster on the map's grid; or a georeferenced label raster on another
            grid (resampled to the map's by nearest neighbour); or a plain image without
            georeferencing of the map's size (taken to lie on the map's grid); or
            polygons (a vector file or a GeoDataFrame; any CRS: reprojected to the
            map's, then burnt on its grid with ``rasterio.features.rasterize``, a pixel
            belonging to the polygon that holds its centre, a later polygon winning).
        field: for polygons, the attribute holding the class: ids (numbers or numeric
            strings) or class names found in the map's class table (tag
            ``RSUNET_CLASSES``); None burns every polygon as class 1.
        where: assess only inside these areas: polygons (a vector file or a
            GeoDataFrame), or boxes as a DataFrame or CSV with columns ``left``,
            ``bottom``, ``right``, ``top`` in the map's CRS (e.g. a patch index,
            ``PatchSet(folder).index.query("split == 'validation'")``). Areas off the map
            are dropped.
        sample: None to count every pixel; or a number ``n`` of random pixels drawn,
            without replacement, among the valid pixels of each area of ``where`` (of
            the whole map without ``where``), as the course's "4 random points per
            validation cell". An area with fewer valid pixels gives them all.
        seed: seed of the random points (one ``numpy.random.default_rng`` for all scenes).
        classes: optional ``{class id: name}``; by default the names come from the
            map's ``RSUNET_CLASSES`` tag, else the reference's, else ``class_<id>``.
            Every class listed appears in the tables, even with no pixel.
        unlabelled: for polygons: ``"background"`` (pixels no polygon covers are class
            0) or ``"ignore"`` (they are unknown and not assessed: sparse polygons).
        ignore: the value that marks unknown pixels in either map (255).
        use_nodata: also exclude the pixels the files mark as nodata (their nodata
            value, alpha or mask). Set False for label files that declare a real class
            as nodata (the NRCan tiles declare 0, their background, as nodata).
        block_rows: rows read per block; None chooses about 2**19 pixels per block
            whatever the map's width, so memory stays flat (some 50 bytes per pixel
            of a block, i.e. ~25 MB).
        png: optional path of a confusion-matrix figure (counts annotated, colours
            normalised per reference row).
        csv: optional path of the confusion matrix as CSV (reference classes in rows,
            predicted in columns, names as labels).
        overwrite: replace existing ``png`` / ``csv`` files.
        design: ``"census"`` (every pixel, or ``sample`` pixels, counted as they are)
            or ``"stratified"``: ``reference`` is then points with their reference
            class in column ``field`` (default ``"reference"``), ``where`` and
            ``sample`` do not apply, ``png`` is the area figure and ``csv`` the table.
        cluster: assess many maps on a dask cluster, one task per map (see
            :func:`rsunet.predict_raster`; same confusion matrix, exactly: integer counts).
            With ``sample`` the maps are assessed here, in order, as the random points
            come from one generator. Files must be on a file system every worker reaches.

    Returns:
        An :class:`Assessment` (``.confusion``, ``.per_class``, ``.overall``,
        ``.per_scene``, ``.table()``); with ``design="stratified"`` an
        :class:`rsunet.estimation.AreaEstimate`.

    Raises:
        GridMismatchError: the reference cannot be placed on the map's grid (CRS or
            extent do not overlap, or a plain image of another size).
        NoOverlapError: ``where`` misses the map.
        ClassFieldError: ``field`` is missing or holds values that are not classes.
        InputError: the maps hold values that are not class ids (0..254), no pixel is
            valid in both, or an argument is out of range.
        OutputExistsError: ``png`` or ``csv`` exists and ``overwrite`` is False.
    """
    from rsunet.cluster import check_spec

    check_spec(cluster)
    if design not in DESIGNS:
        raise InputError(f"design must be one of {DESIGNS}, got {design!r}")
    if design == "stratified":
        if where is not None or sample is not None:
            raise InputError("design='stratified' takes its sample from the reference points: "
                             "leave where and sample unset")
        from rsunet.estimation import stratified_assessment

        return stratified_assessment(prediction, reference, field=field, classes=classes,
                                     ignore=ignore, use_nodata=use_nodata, block_rows=block_rows,
                                     png=png, csv=csv, overwrite=overwrite)
    check_outputs(overwrite, [png, csv], [prediction, reference, where])
    if unlabelled not in UNLABELLED:
        raise InputError(f"unlabelled must be one of {UNLABELLED}, got {unlabelled!r}")
    if sample is not None and int(sample) < 1:
        raise InputError(f"sample must be a positive number of points per area, got {sample!r}")
    rng = np.random.default_rng(seed)
    pairs = _scene_pairs(prediction, reference)
    args = (field, where, sample, unlabelled, ignore, use_nodata, block_rows, classes)
    if cluster is not None and sample is None and len(pairs) > 1:
        from rsunet.cluster import map_tasks

        done = map_tasks(cluster, _assess_scene, pairs, args, "maps", reads=[
            p for pair in pairs for p in pair if isinstance(p, (str, os.PathLike))])
    else:  # random points come from one generator, scene after scene: here, in order
        done = [_assess_scene(*pair, *args, rng=rng) for pair in pairs]
    counts, names, scenes = np.zeros((N_VALUES, N_VALUES), np.int64), {}, []
    for name, scene, scene_names in done:
        counts += scene
        scenes.append((name, scene))
        for k, v in scene_names.items():
            names.setdefault(k, v)
    result = _assessment(counts, names, classes)
    result.per_scene = pd.DataFrame([_scene_row(name, c, names, classes) for name, c in scenes])
    if png is not None:
        plot_confusion(result, png, overwrite=overwrite)
    if csv is not None:
        with atomic_path(csv, overwrite) as tmp:
            result.confusion.to_csv(tmp, index_label="reference")
    return result


def _assess_scene(pred_path, ref_input, field, where, sample, unlabelled, ignore, use_nodata,
                  block_rows, classes, rng=None):
    """One map against its reference: ``(name, counts, class names)``."""
    with open_raster(pred_path) as src, \
            ReferenceReader(ref_input, src, field, unlabelled, ignore, use_nodata) as ref:
        areas = _areas(where, src) if where is not None else None
        grid = _Grid(src, ref, ignore, use_nodata)
        rows = max(1, int(block_rows) if block_rows else BLOCK_PIXELS // src.width)
        if sample is None:
            scene = _count_blocks(grid, areas, rows)
        else:
            scene = _count_sampled(grid, areas, int(sample), rng, rows)
        return Path(pred_path).stem, scene, _class_names(classes, src, ref.tags)


def _scene_pairs(prediction, reference) -> list:
    """``[(map, reference), ...]``: one pair, or several scenes pooled into one matrix."""
    many = isinstance(prediction, (list, tuple))
    if not many:
        return [(prediction, reference)]
    if not isinstance(reference, (list, tuple)) or len(reference) != len(prediction):
        raise InputError(f"{len(prediction)} maps need as many references (a list), got "
                         f"{len(reference) if isinstance(reference, (list, tuple)) else 'one'}")
    if not prediction:
        raise InputError("no map to assess: prediction is an empty list")
    return list(zip(prediction, reference))


def check_outputs(overwrite, paths, inputs):
    """Refuse outputs that are inputs (:func:`rsunet.io.check_not_input`) or exist unasked."""
    check_not_input(paths, inputs)
    for path in paths:
        if path is not None and Path(path).exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")


class ReferenceReader:
    """Reference class ids and validity for any window of the map's grid."""

    def __init__(self, reference, src, field, unlabelled, ignore, use_nodata):
        self.src, self.ignore, self.use_nodata = src, ignore, use_nodata
        self.tags = {}
        self._stack = []
        self.gdf = None
        if is_vector(reference):
            self._init_vector(reference, field, unlabelled)
        else:
            self._init_raster(reference)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in reversed(self._stack):
            handle.close()

    # polygons: reprojected once, burnt per window
    def _init_vector(self, reference, field, unlabelled):
        gdf = reference if hasattr(reference, "geometry") else read_vector(reference)
        if field is not None and field not in gdf.columns:
            raise ClassFieldError(f"reference polygons have no field {field!r}; fields: "
                                  f"{[c for c in gdf.columns if c != gdf.geometry.name]}")
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        gdf = to_image_crs(gdf, self.src.crs).reset_index(drop=True)
        values = (np.ones(len(gdf), np.int64) if field is None
                  else class_ids_of(gdf[field], read_classes_tag(self.src.tags())))
        self.gdf = gdf.assign(_cid=values)
        self.fill = 0 if unlabelled == "background" else IGNORE
        self.kind = "vector"

    def _init_raster(self, reference):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ref = _open(reference)
        self._stack.append(ref)
        if ref.count != 1:
            raise InputError(f"the reference raster {reference} has {ref.count} bands; it needs one")
        self.tags = ref.tags()
        self.reader, self.kind = ref, "raster"
        if same_grid(ref, self.src, plain_fits=True):
            return
        if not (georeferenced(ref) and georeferenced(self.src)):
            raise GridMismatchError(
                f"the reference {reference} is {ref.width}x{ref.height} pixels, the map "
                f"{self.src.width}x{self.src.height}, and "
                f"{'the map' if georeferenced(ref) else 'the reference'} has no georeferencing: "
                "give both a CRS and transform, or a reference of the map's size")
        _check_overlap(ref, self.src, reference)
        from rasterio.vrt import WarpedVRT

        # nearest neighbour onto the map's grid; the VRT's alpha band marks where the
        # reference has data. Without use_nodata only `ignore` is taken as missing.
        src_nodata = ref.nodata if self.use_nodata else self.ignore
        vrt = WarpedVRT(ref, crs=self.src.crs, transform=self.src.transform,
                        width=self.src.width, height=self.src.height,
                        resampling=rasterio.enums.Resampling.nearest,
                        src_nodata=src_nodata, add_alpha=True)
        self._stack.append(vrt)
        self.reader, self.kind = vrt, "warped"

    def read(self, window):
        """``(values int64, valid bool)`` of the reference on ``window`` of the map's grid."""
        if self.kind == "vector":
            return self._burn(window)
        with reading(self.reader):
            raw = self.reader.read(1, window=window)
            finite = np.isfinite(raw) if raw.dtype.kind == "f" else True  # NaN, inf: nodata
            values = np.where(finite, raw, self.ignore).astype(np.int64)
            valid = values != self.ignore
            if self.kind == "warped" or self.use_nodata:
                valid &= self.reader.read_masks(1, window=window) > 0
        return values, valid

    def _burn(self, window):
        from rasterio.features import rasterize
        from shapely.geometry import box

        h, w = int(window.height), int(window.width)
        transform = self.src.window_transform(window)
        bounds = rasterio.transform.array_bounds(h, w, transform)
        hits = np.sort(self.gdf.sindex.query(box(*bounds)))  # keep feature order
        shapes = [(g, int(v)) for g, v in zip(self.gdf.geometry.iloc[hits], self.gdf["_cid"].iloc[hits])]
        values = (rasterize(shapes, out_shape=(h, w), transform=transform, fill=self.fill,
                            all_touched=False, dtype="uint8")
                  if shapes else np.full((h, w), self.fill, np.uint8)).astype(np.int64)
        return values, values != IGNORE


def _open(path):
    if not Path(os.fspath(path)).exists():
        raise InputError(f"reference not found: {path}")
    try:
        return rasterio.open(os.fspath(path))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read {path} as a raster: {exc}") from exc


def _check_overlap(ref, src, name):
    from rasterio.warp import transform_bounds

    if ref.crs is None or src.crs is None:
        raise GridMismatchError(f"{name} and the map are on different grids and "
                                f"{'the reference' if ref.crs is None else 'the map'} has no CRS")
    left, bottom, right, top = transform_bounds(ref.crs, src.crs, *ref.bounds)
    b = src.bounds
    if left >= b.right or right <= b.left or bottom >= b.top or top <= b.bottom:
        raise GridMismatchError(
            f"the reference {name} (bounds {[round(v, 3) for v in (left, bottom, right, top)]} in "
            f"the map's CRS) does not overlap the map (bounds {[round(v, 3) for v in b]}): "
            "is it the reference of this scene?")


class _Grid:
    """Pairs of (reference, predicted) class ids on windows of the map's grid."""

    def __init__(self, src, ref, ignore, use_nodata):
        self.src, self.ref, self.ignore, self.use_nodata = src, ref, ignore, use_nodata
        if src.count != 1:
            raise InputError(f"the map {src.name} has {src.count} bands; a class map has one")

    def pairs(self, window, inside=None):
        """Flat int64 arrays ``(reference, predicted)`` of the valid pixels of ``window``
        (and of ``inside``, a boolean array of the window's shape, if given)."""
        with reading(self.src):
            pred = self.src.read(1, window=window)
            masks = self.src.read_masks(1, window=window) if self.use_nodata else None
        if pred.dtype.kind not in "iu":
            if not np.all(np.mod(pred[np.isfinite(pred)], 1) == 0):
                raise InputError(f"{self.src.name} holds non-integer values: a class map holds class ids")
            pred = np.where(np.isfinite(pred), pred, self.ignore)  # NaN, inf: nodata
        pred = pred.astype(np.int64)
        valid = pred != self.ignore
        if masks is not None:
            valid &= masks > 0
        ref, ref_valid = self.ref.read(window)
        valid &= ref_valid
        if inside is not None:
            valid &= inside
        r, p = ref[valid], pred[valid]
        for name, v in (("reference", r), ("map", p)):
            if v.size and (v.min() < 0 or v.max() >= IGNORE):
                raise InputError(f"the {name} holds values outside 0..254 ({int(v.min())}..{int(v.max())}) "
                                 f"besides the ignore value {self.ignore}: class maps hold class ids")
        return r, p

    def blocks(self, window, block_rows):
        """Row blocks of ``window`` (a Window on the map's grid)."""
        c0, r0 = int(window.col_off), int(window.row_off)
        w, h = int(window.width), int(window.height)
        for r in range(r0, r0 + h, block_rows):
            yield Window(c0, r, w, min(block_rows, r0 + h - r))

    @property
    def full(self) -> Window:
        return Window(0, 0, self.src.width, self.src.height)


def _count_blocks(grid, areas, block_rows) -> np.ndarray:
    """The full ``(256, 256)`` confusion counts, streamed over row blocks."""
    counts = np.zeros(N_VALUES * N_VALUES, np.int64)
    for window in grid.blocks(grid.full, block_rows):
        inside = _burn_areas(areas, grid.src, window) > 0 if areas is not None else None
        if inside is not None and not inside.any():
            continue
        r, p = grid.pairs(window, inside)
        counts += np.bincount(r * N_VALUES + p, minlength=N_VALUES * N_VALUES)
    return counts.reshape(N_VALUES, N_VALUES)


def _count_sampled(grid, areas, n, rng, block_rows) -> np.ndarray:
    """Confusion counts of ``n`` random valid pixels per area (the whole map without areas)."""
    counts = np.zeros((N_VALUES, N_VALUES), np.int64)
    cells = [(grid.full, None)] if areas is None else [
        (_bounds_window(geom.bounds, grid.src), geom) for geom in areas.geometry]
    for window, geom in cells:
        if window is None:
            continue
        blocks = list(grid.blocks(window, block_rows))

        def pairs(block):
            inside = None if geom is None else _burn_areas(geom, grid.src, block) > 0
            return grid.pairs(block, inside)

        # two passes over the cell keep memory flat: count valid pixels, then draw ranks
        sizes = np.array([pairs(b)[0].size for b in blocks], np.int64)
        total = int(sizes.sum())
        if total == 0:
            continue
        ranks = np.sort(rng.choice(total, size=min(n, total), replace=False))
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for i, block in enumerate(blocks):
            mine = ranks[(ranks >= starts[i]) & (ranks < starts[i + 1])] - starts[i]
            if mine.size:
                r, p = pairs(block)
                np.add.at(counts, (r[mine], p[mine]), 1)
    return counts


def _bounds_window(bounds, src) -> Window | None:
    """The window of pixels that a bounding box touches, clipped to the map (None if off)."""
    from rasterio.windows import from_bounds

    w = from_bounds(*bounds, transform=src.transform)
    c0, r0 = max(0, math.floor(w.col_off + 1e-9)), max(0, math.floor(w.row_off + 1e-9))
    c1 = min(src.width, math.ceil(w.col_off + w.width - 1e-9))
    r1 = min(src.height, math.ceil(w.row_off + w.height - 1e-9))
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _areas(where, src):
    """``where`` as a GeoDataFrame in the map's CRS, off-map areas dropped."""
    import geopandas as gpd
    from shapely.geometry import box

    if isinstance(where, (str, os.PathLike)) and Path(where).suffix.lower() == ".csv":
        where = pd.read_csv(where)
    if hasattr(where, "geometry"):
        gdf = to_image_crs(where, src.crs)
    elif isinstance(where, pd.DataFrame):
        missing = [c for c in ("left", "bottom", "right", "top") if c not in where.columns]
        if missing:
            raise InputError(f"where as a table needs columns left, bottom, right, top (a patch "
                             f"index); missing {missing}")
        geoms = [box(*row) for row in where[["left", "bottom", "right", "top"]].to_numpy(float)]
        gdf = gpd.GeoDataFrame(where.reset_index(drop=True), geometry=geoms, crs=src.crs)
    else:
        gdf = to_image_crs(read_vector(where), src.crs)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = gdf[gdf.intersects(box(*src.bounds))].reset_index(drop=True)
    if not len(gdf):
        raise NoOverlapError(f"no area of `where` overlaps the map (bounds {list(src.bounds)}): "
                             "are they in the map's CRS and of this scene?")
    return gdf


def _burn_areas(areas, src, window) -> np.ndarray:
    """1 inside the areas (a GeoDataFrame or one geometry), 0 elsewhere, on ``window``."""
    from rasterio.features import rasterize
    from shapely.geometry import box

    h, w = int(window.height), int(window.width)
    transform = src.window_transform(window)
    if hasattr(areas, "geometry"):
        hits = areas.sindex.query(box(*rasterio.transform.array_bounds(h, w, transform)))
        geoms = list(areas.geometry.iloc[hits])
    else:
        geoms = [areas]
    if not geoms:
        return np.zeros((h, w), np.uint8)
    return rasterize([(g, 1) for g in geoms], out_shape=(h, w), transform=transform, fill=0,
                     dtype="uint8")


def _class_names(classes, src, ref_tags) -> dict:
    names = {}
    if classes:
        names.update({int(k): str(v) for k, v in dict(classes).items()})
    for table in (read_classes_tag(src.tags()), read_classes_tag(ref_tags)):
        for k, v in table.items():
            names.setdefault(k, v)
    return names


def _scene_row(name, counts, names, classes) -> dict:
    """One map's overall figures; a map with no valid pixel (e.g. off ``where``) counts 0."""
    if not counts.any():
        return dict(scene=name, n=0.0)
    return dict(scene=name, **_assessment(counts, names, classes).overall)


def _assessment(counts, names, classes) -> Assessment:
    present = np.flatnonzero((counts.sum(axis=0) + counts.sum(axis=1)) > 0)
    wanted = {int(k) for k in dict(classes or {})} - {IGNORE}
    ids = sorted(set(present.tolist()) | wanted)
    matrix = counts[np.ix_(ids, ids)]
    overall, per = metrics_from_confusion(matrix)
    labels = [names.get(i, f"class_{i}") for i in ids]
    confusion = pd.DataFrame(matrix, index=pd.Index(labels, name="reference"),
                             columns=pd.Index(labels, name="predicted"))
    per_class = pd.DataFrame({"class_id": ids, "class": labels, **per})
    return Assessment(confusion=confusion, per_class=per_class, overall=overall, class_ids=ids)


def plot_confusion(result: Assessment, path=None, overwrite=False):
    """A confusion-matrix figure: counts annotated, colours row-normalised (a PNG when ``path`` is given).

    Args:
        result: an :class:`Assessment`.
        path: the PNG to write (None: write nothing).
        overwrite: replace an existing file.

    Returns:
        The :class:`matplotlib.figure.Figure` (the global matplotlib backend is untouched).
    """
    from rsunet.plotting import new_figure, save_figure

    m = result.matrix
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape, float), where=rows > 0)
    labels = list(result.confusion.index)
    k = len(labels)
    fig = new_figure(figsize=(2 + 0.9 * k, 1.6 + 0.8 * k), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{m[i, j]:,}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    o = result.overall
    ax.set_title(f"OA {o['overall_accuracy']:.3f}  kappa {o['kappa']:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of reference row")
    fig.tight_layout()
    return save_figure(fig, path, overwrite)


# ---- count_objects ----------------------------------------------------------------------

def count_objects(map, cls, connectivity=8, min_pixels=1, ignore=IGNORE, use_nodata=True,
                  keep_labels=False) -> ObjectCount:
    """Count the connected objects of a class, with their areas and density per hectare.

    The map is read whole (objects cross any block border); a uint8 map costs about
    5 bytes per pixel here.

    Areas: in a projected CRS, pixel area from the transform (times the CRS's linear
    unit in metres, squared). In a geographic CRS, each pixel row's area is the geodesic
    area of one pixel on the CRS's ellipsoid (``pyproj.Geod``), so areas are exact on
    the ellipsoid for north-up grids. Without a CRS the transform's units are taken as
    metres (with a warning).

    Args:
        map: the class map (path).
        cls: the class id whose objects are counted.
        connectivity: 4 (edge neighbours) or 8 (edge and corner neighbours).
        min_pixels: objects smaller than this are dropped (not counted).
        ignore: the unknown value (255), excluded from the valid area.
        use_nodata: also exclude the file's nodata pixels from the valid area.
        keep_labels: return the label image too (``.labels``).

    Returns:
        An :class:`ObjectCount`: ``.objects`` (one row per object: ``id``, ``pixels``,
        ``area_m2``, ``area_ha``, ``x``, ``y``) and ``.summary`` (``count``,
        ``objects_per_ha`` over the valid area, ...).

    Raises:
        InputError: ``connectivity`` is not 4 or 8, ``min_pixels`` < 1, ``cls`` is not a
            class id, or the map has no valid pixel.
    """
    from scipy import ndimage

    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if int(min_pixels) < 1:
        raise InputError(f"min_pixels must be at least 1, got {min_pixels!r}")
    cls = int(cls)
    if not 0 <= cls < IGNORE:
        raise InputError(f"cls must be a class id 0..254, got {cls}")
    values, valid, transform, crs, _ = _read_class_map(map, ignore, use_nodata)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, n = ndimage.label((values == cls) & valid, structure=structure)
    del values
    pixels = np.bincount(labels.ravel(), minlength=n + 1)
    keep = np.flatnonzero(pixels >= int(min_pixels))
    keep = keep[keep > 0]
    # renumber the kept objects 1..count, in label order
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    labels = lut[labels]
    row_area, method = row_areas(transform, crs, labels.shape[0])
    area = np.bincount(labels.ravel(), weights=np.broadcast_to(row_area[:, None], labels.shape).ravel(),
                       minlength=keep.size + 1)
    ids = np.arange(1, keep.size + 1)
    if keep.size:
        centres = np.asarray(ndimage.center_of_mass(labels > 0, labels, ids), float).reshape(-1, 2)
    else:
        centres = np.zeros((0, 2))
    xs, ys = transform * (centres[:, 1] + 0.5, centres[:, 0] + 0.5)
    objects = pd.DataFrame({"id": ids, "pixels": pixels[keep].astype(np.int64),
                            "area_m2": area[1:], "area_ha": area[1:] / 1e4,
                            "x": np.asarray(xs, float), "y": np.asarray(ys, float)})
    valid_ha = float((valid.sum(axis=1) * row_area).sum() / 1e4)
    if valid_ha <= 0:
        raise InputError(f"{map} has no valid pixel (all are {ignore} or nodata)")
    summary = dict(class_id=cls, count=int(keep.size), connectivity=int(connectivity),
                   min_pixels=int(min_pixels), valid_area_ha=valid_ha,
                   objects_per_ha=keep.size / valid_ha,
                   object_area_ha=float(area[1:].sum() / 1e4),
                   mean_object_area_m2=float(area[1:].mean()) if keep.size else float("nan"),
                   area_method=method)
    return ObjectCount(objects=objects, summary=summary, labels=labels if keep_labels else None)


def row_areas(transform, crs, height) -> tuple[np.ndarray, str]:
    """Area in m² of one pixel in each row, and how it was computed."""
    planar = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        warnings.warn("the map has no CRS: its transform's units are taken as metres", RsunetWarning,
                      stacklevel=3)
        return np.full(height, planar), "planar"
    if not crs.is_geographic:
        unit = crs.linear_units_factor[1]
        return np.full(height, planar * unit * unit), "planar"
    from pyproj import CRS as PCRS, Geod

    geod = PCRS.from_wkt(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
    areas = np.empty(height)
    for r in range(height):
        pts = [transform * (c, rr) for c, rr in ((0, r), (1, r), (1, r + 1), (0, r + 1))]
        lons, lats = zip(*pts)
        area, _ = geod.polygon_area_perimeter(lons, lats)
        areas[r] = abs(area)
    return areas, "geodesic"


# ---- polygonize -------------------------------------------------------------------------

def _read_class_map(map, ignore, use_nodata, classes=None):
    """A whole class map: values, valid pixels, transform, CRS and class names."""
    with open_raster(map) as src, reading(src):
        values = src.read(1)
        valid = values != ignore
        if use_nodata:
            valid &= src.read_masks(1) > 0
        return values, valid, src.transform, src.crs, _class_names(classes, src, {})


def _polygon_areas(gdf) -> np.ndarray:
    """Areas in m2: planar in a projected CRS, geodesic on the ellipsoid in a geographic one."""
    if gdf.crs is None or not gdf.crs.is_geographic:
        return gdf.geometry.area.to_numpy()
    geod = gdf.crs.get_geod()
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in gdf.geometry])


def polygonize(map, out, classes=None, connectivity=4, ignore=IGNORE, use_nodata=True,
               overwrite=False):
    """Write a class map as polygons to a GeoPackage, one feature per connected region.

    The map is read whole and traced with ``rasterio.features.shapes``; unknown (255)
    and nodata pixels make no polygon. The file is written under a temporary name and
    renamed when complete.

    Args:
        map: the class map (path).
        out: the GeoPackage to write (``.gpkg``).
        classes: optional ``{class id: name}``; by default the map's ``RSUNET_CLASSES``
            tag, else ``class_<id>``.
        connectivity: 4 or 8, how pixels join into one polygon.
        ignore: the unknown value (255).
        use_nodata: also leave out the file's nodata pixels.
        overwrite: replace an existing ``out``.

    Returns:
        The GeoDataFrame written (columns ``class_id``, ``class``, ``area_m2``, geometry
        in the map's CRS; ``area_m2`` is planar in a projected CRS and geodesic, on the
        CRS's ellipsoid, in a geographic one).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
        InputError: ``connectivity`` is not 4 or 8.
    """
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity!r}")
    check_outputs(overwrite, [out], [map])
    values, valid, transform, crs, names = _read_class_map(map, ignore, use_nodata, classes)
    if values.dtype.name not in ("uint8", "int16", "uint16", "int32", "float32"):
        values = values.astype(np.int32)
    geoms, ids = [], []
    for geom, value in shapes(values, mask=valid, connectivity=connectivity, transform=transform):
        geoms.append(shape(geom))
        ids.append(int(value))
    gdf = gpd.GeoDataFrame({"class_id": np.asarray(ids, np.int32),
                            "class": [names.get(i, f"class_{i}") for i in ids]},
                           geometry=geoms, crs=crs)
    gdf["area_m2"] = _polygon_areas(gdf)
    write_vector(gdf, out, overwrite=overwrite)
    return gdf
