"""Design-based accuracy and area estimates, and the paired comparison of two maps.

A map's pixel counts are not the areas of its classes: omission and commission errors
move area between classes. The good practice of Olofsson et al. (2014) is a stratified
random sample (strata = map classes), labelled by a person, from which the error matrix
in *area proportions*, user's, producer's and overall accuracy and each class's area
are estimated with confidence intervals:

* :func:`sample_points` draws that sample from a class map (streamed in row blocks: one
  pass counts the pixels of each class, a second collects the drawn pixels) and writes it
  as a GeoPackage with an empty ``reference`` column to fill (in QGIS, or from a
  reference raster);
* :func:`estimate_stratified` computes the estimators from the sample's counts and the
  mapped area of each class; ``assess_map(map, points, design="stratified")`` reads both
  (the map classes at the points, the mapped areas in hectares, geodesic in a geographic
  CRS) and returns an :class:`AreaEstimate`;
* :func:`compare_maps` compares two maps of the same scene against one reference: the
  difference in overall accuracy, kappa and per-class F1 with a 95 % interval from a
  spatial block bootstrap (so neighbouring pixels, whose errors go together, are not
  counted as independent evidence), and McNemar's test on a spatially thinned sample.

Matrices follow :mod:`rsunet.assessment`: *reference* classes in rows, *map* (predicted)
classes in columns, i.e. the transpose of the tables printed in Olofsson et al.

Reference: Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E.,
Wulder, M. A. (2014). Good practices for estimating area and assessing accuracy of land
change. Remote Sensing of Environment 148, 42-57 (eqs. 2-10 and section 5).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from rsunet.errors import ClassFieldError, EmptyResultError, GridMismatchError, InputError, RsunetWarning
from rsunet.io import open_raster, reading, write_vector
from rsunet.labels import (IGNORE, class_ids_of, is_missing, is_vector, read_classes_tag,
                           read_vector, same_grid, to_image_crs)

__all__ = ["sample_points", "estimate_stratified", "stratified_assessment", "AreaEstimate",
           "class_areas", "compare_maps", "Comparison", "mcnemar_test", "plot_area_estimates",
           "plot_comparison", "Z95"]

Z95 = 1.96  # the half-width of a 95 % interval in standard errors, as Olofsson et al. print it
BLOCK_PIXELS = 2 ** 19
ALLOCATIONS = ("proportional", "equal")


# ---- reading a class map in row blocks ---------------------------------------------------

@contextlib.contextmanager
def _open_class_map(path):
    with open_raster(path) as src:
        if src.count != 1:
            raise InputError(f"the map {path} has {src.count} bands; a class map has one band of class ids")
        yield src


def _map_blocks(src, ignore, use_nodata, block_rows=None):
    """``(row_off, values int64 (rows, cols), valid bool)`` per row block of a class map."""
    rows = max(1, int(block_rows) if block_rows else BLOCK_PIXELS // max(1, src.width))
    for r in range(0, src.height, rows):
        window = Window(0, r, src.width, min(rows, src.height - r))
        with reading(src):
            raw = src.read(1, window=window)
            masks = src.read_masks(1, window=window) if use_nodata else None
        values, valid = _class_values(raw, src.name, ignore)
        if masks is not None:
            valid &= masks > 0
        yield r, values, valid


def _class_values(raw, name, ignore):
    """Class ids as int64 and their validity (not ``ignore``, finite); refuses non-class values."""
    if raw.dtype.kind == "f":
        finite = np.isfinite(raw)
        if not np.all(np.mod(raw[finite], 1) == 0):
            raise InputError(f"{name} holds non-integer values: a class map holds class ids "
                             "(for an uncertainty map use suggest_labels)")
        raw = np.where(finite, raw, ignore)
    values = raw.astype(np.int64)
    valid = values != ignore
    v = values[valid]
    if v.size and (v.min() < 0 or v.max() >= IGNORE):
        raise InputError(f"{name} holds values outside 0..254 ({int(v.min())}..{int(v.max())}) "
                         f"besides the ignore value {ignore}: a class map holds class ids")
    return values, valid


def class_areas(src, ignore=IGNORE, use_nodata=True, block_rows=None):
    """Pixel count and area (m²) of each class id of a map: two ``(255,)`` arrays.

    Areas are planar in a projected CRS and geodesic on the CRS's ellipsoid, row by row,
    in a geographic one (as :func:`rsunet.count_objects`); the third value says which.
    """
    from rsunet.assessment import row_areas

    row_area, method = row_areas(src.transform, src.crs, src.height)
    pixels, area = np.zeros(IGNORE, np.int64), np.zeros(IGNORE)
    for r, values, valid in _map_blocks(src, ignore, use_nodata, block_rows):
        weights = np.broadcast_to(row_area[r:r + values.shape[0], None], values.shape)
        pixels += np.bincount(values[valid], minlength=IGNORE)
        area += np.bincount(values[valid], weights=weights[valid], minlength=IGNORE)
    return pixels, area, method


def _class_names(classes, src) -> dict:
    names = {int(k): str(v) for k, v in dict(classes or {}).items()}
    for k, v in read_classes_tag(src.tags()).items():
        names.setdefault(k, v)
    return names


# ---- sample_points -----------------------------------------------------------------------

def sample_points(map, out, n=None, allocation="proportional", seed=0, reference=None,
                  classes=None, ignore=IGNORE, use_nodata=True, block_rows=None,
                  overwrite=False):
    """Draw a stratified random sample of a class map's pixels for accuracy assessment.

    The strata are the map's classes (Olofsson et al. 2014): within each class, pixels
    are drawn at random without replacement among its valid pixels (neither ``ignore``
    nor nodata). The map is read twice in row blocks (counts per class, then the drawn
    pixels), so memory does not grow with the map. Each point is the centre of its
    pixel. Label the points (column ``reference``) and pass the file to
    ``assess_map(map, points, design="stratified")``.

    Args:
        map: the class map (a single-band GeoTIFF of class ids, 255 unknown).
        out: the GeoPackage to write (``.gpkg``).
        n: the total sample size (needed unless ``allocation`` gives the counts).
        allocation: how ``n`` is shared among the classes: ``"proportional"`` (to each
            class's pixel count), ``"equal"`` (the same for every class), or the counts
            themselves as ``{class id: count}`` (classes left out get none). Shares are
            rounded by largest remainder, so they sum to ``n``. A class with fewer
            pixels than its share gives all of them (with a warning).
        seed: seed of the draw (``numpy.random.default_rng``).
        reference: optional label raster (any grid and CRS) whose class at each point
            fills ``reference`` (unknown where it is 255 or nodata); None leaves the
            column empty for a person to fill.
        classes: optional ``{class id: name}``; by default the map's ``RSUNET_CLASSES`` tag.
        ignore: the value marking unknown pixels (255).
        use_nodata: also leave out the pixels the map marks as nodata.
        block_rows: rows read per block; None reads about 2**19 pixels per block.
        overwrite: replace an existing ``out``.

    Returns:
        The GeoDataFrame written: ``point_id``, ``map_class`` (class id), ``map_class_name``,
        ``row``, ``col`` (the pixel), ``reference`` (nullable integer), point geometry in
        the map's CRS; sorted by class, then row and column.

    Raises:
        InputError: ``n`` or ``allocation`` is invalid, or the map has no valid pixel.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    import geopandas as gpd

    from rsunet.assessment import check_outputs

    check_outputs(overwrite, [out], [map, reference])
    rng = np.random.default_rng(seed)
    with _open_class_map(map) as src:
        pixels, _, _ = class_areas(src, ignore, use_nodata, block_rows)
        if not pixels.any():
            raise EmptyResultError(f"{map} has no valid pixel (all are {ignore} or nodata): nothing to sample")
        wanted = _allocate(pixels, n, allocation, map)
        ranks = {c: np.sort(rng.choice(pixels[c], size=k, replace=False))
                 for c, k in enumerate(wanted) if k > 0}
        rows, cols = _collect_ranked(src, ranks, ignore, use_nodata, block_rows)
        xs, ys = rasterio.transform.xy(src.transform, rows, cols, offset="center")
        names = _class_names(classes, src)
        map_class = np.repeat(sorted(ranks), [ranks[c].size for c in sorted(ranks)])
        gdf = gpd.GeoDataFrame(
            {"point_id": np.arange(1, rows.size + 1, dtype=np.int64),
             "map_class": map_class.astype(np.int64),
             "map_class_name": [names.get(int(c), f"class_{c}") for c in map_class],
             "row": rows, "col": cols,
             "reference": pd.array([pd.NA] * rows.size, dtype="Int64")},
            geometry=gpd.points_from_xy(np.atleast_1d(xs), np.atleast_1d(ys)), crs=src.crs)
        if reference is not None:
            gdf["reference"] = _reference_at(reference, gdf, src, ignore, use_nodata)
    write_vector(gdf, out, overwrite=overwrite)
    return gdf


def _allocate(pixels, n, allocation, name) -> np.ndarray:
    """Points per class id (a ``(255,)`` int array) for an allocation rule."""
    present = pixels > 0
    if isinstance(allocation, dict):
        wanted = np.zeros(IGNORE, np.int64)
        for key, count in allocation.items():
            cid, k = whole_number(key, "an allocation's class id"), whole_number(count, "an allocation's count")
            if not 0 <= cid < IGNORE or k < 0:
                raise InputError(f"allocation {{{key}: {count}}}: class ids are 0..254 and counts >= 0")
            if k and not present[cid]:
                raise InputError(f"allocation asks for {k} points of class {cid}, which {name} does "
                                 f"not map; its classes are {np.flatnonzero(present).tolist()}")
            wanted[cid] = k
        if n is not None and int(n) != wanted.sum():
            raise InputError(f"n = {n} but the allocation's counts sum to {wanted.sum()}: give one or the other")
    elif allocation in ALLOCATIONS:
        n = whole_number(n, "n (the sample size)")
        if n < 1:
            raise InputError(f"n must be a positive sample size, got {n}")
        share = pixels / pixels.sum() if allocation == "proportional" else present / present.sum()
        wanted = _largest_remainder(share * n, n)
    else:
        raise InputError(f"allocation must be one of {ALLOCATIONS} or {{class id: count}}, got {allocation!r}")
    short = np.flatnonzero(wanted > pixels)
    if short.size:
        warnings.warn(f"classes {short.tolist()} of {name} have fewer valid pixels than asked for "
                      f"({pixels[short].tolist()} < {wanted[short].tolist()}): all of them are taken",
                      RsunetWarning, stacklevel=3)
    return np.minimum(wanted, pixels)


def whole_number(value, what) -> int:
    """``value`` as an int if it is a whole number (``5``, ``5.0``, ``"5"``), else an
    :class:`InputError` naming ``what``."""
    if isinstance(value, bool) or value is None:
        raise InputError(f"{what} must be a whole number, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a whole number, got {value!r}") from None
    if not f.is_integer():
        raise InputError(f"{what} must be a whole number, got {value!r}")
    return int(f)


def _largest_remainder(quota, total) -> np.ndarray:
    base = np.floor(quota).astype(np.int64)
    extra = int(total - base.sum())
    order = np.argsort(-(quota - base), kind="stable")
    base[order[:extra]] += 1
    return base


def _collect_ranked(src, ranks, ignore, use_nodata, block_rows):
    """Rows and columns of the pixels whose rank within their class (in row-major order
    over the valid pixels) is drawn, class by class; one pass over the map."""
    seen = {c: 0 for c in ranks}
    found = {c: [] for c in ranks}
    for r, values, valid in _map_blocks(src, ignore, use_nodata, block_rows):
        flat, ok = values.ravel(), valid.ravel()
        for c, drawn in ranks.items():
            idx = np.flatnonzero(ok & (flat == c))
            lo, hi = np.searchsorted(drawn, [seen[c], seen[c] + idx.size])
            found[c].append(idx[drawn[lo:hi] - seen[c]] + r * src.width)
            seen[c] += idx.size
    flat = np.concatenate([np.concatenate(found[c]) for c in sorted(ranks)]) if ranks else np.zeros(0, np.int64)
    return flat // src.width, flat % src.width


def _reference_at(reference, gdf, src, ignore, use_nodata):
    """The class of a label raster at each point (nullable Int64; NA where unknown)."""
    from rasterio.warp import transform as warp_points

    with open_raster(reference) as ref:
        if ref.count != 1:
            raise InputError(f"the reference raster {reference} has {ref.count} bands; it needs one")
        xs, ys = gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()
        if ref.crs is not None and src.crs is not None and ref.crs != src.crs:
            xs, ys = warp_points(src.crs, ref.crs, xs, ys)
        rows, cols = rasterio.transform.rowcol(ref.transform, xs, ys)
        rows, cols = np.asarray(rows), np.asarray(cols)
        inside = (rows >= 0) & (rows < ref.height) & (cols >= 0) & (cols < ref.width)
        out = pd.array([pd.NA] * len(gdf), dtype="Int64")
        for i in np.flatnonzero(inside):
            window = Window(int(cols[i]), int(rows[i]), 1, 1)
            with reading(ref):
                value = ref.read(1, window=window)[0, 0]
                ok = not use_nodata or ref.read_masks(1, window=window)[0, 0] > 0
            if ok and np.isfinite(value) and value != ignore:
                out[i] = int(value)
    return out


# ---- the stratified estimators ------------------------------------------------------------

@dataclass
class AreaEstimate:
    """Accuracy and area estimated from a stratified random sample (Olofsson et al. 2014).

    Attributes:
        per_class: DataFrame, one row per class: ``class_id``, ``class``, ``mapped_ha``
            (the map's area of the class), ``weight`` (its share of the mapped area,
            W_i), ``n`` (sample points in its stratum), ``users_accuracy``,
            ``users_se``, ``users_ci``, ``producers_accuracy``, ``producers_se``,
            ``producers_ci``, ``area_proportion``, ``area_ha`` (the estimated area),
            ``area_se_ha``, ``area_ci_ha``. ``*_ci`` are half-widths of 95 % intervals
            (±1.96 standard errors); NaN where undefined (a stratum of one point).
        overall: dict: ``n``, ``overall_accuracy``, ``overall_accuracy_se``,
            ``overall_accuracy_ci``, ``total_area_ha``, and ``area_method``
            (``"planar"`` or ``"geodesic"``).
        error_matrix: DataFrame of estimated area proportions p_ij (reference classes
            in rows, map classes in columns; they sum to 1).
        confusion: DataFrame of sample counts (reference in rows, map in columns).
    """

    per_class: pd.DataFrame
    overall: dict
    error_matrix: pd.DataFrame
    confusion: pd.DataFrame

    @property
    def class_ids(self) -> list:
        return [int(i) for i in self.per_class["class_id"]]

    def table(self) -> pd.DataFrame:
        """The per-class rows, then one row per overall figure (its value in ``value``)."""
        overall = pd.DataFrame({"class": list(self.overall), "value": list(self.overall.values())})
        return pd.concat([self.per_class, overall], ignore_index=True)

    def as_dict(self) -> dict:
        """Plain lists and dicts (for R and JSON)."""
        return dict(per_class={c: self.per_class[c].tolist() for c in self.per_class.columns},
                    overall=dict(self.overall), classes=[str(c) for c in self.per_class["class"]],
                    error_matrix=self.error_matrix.to_numpy(float).tolist(),
                    confusion=self.confusion.to_numpy(np.int64).tolist())

    def __str__(self) -> str:
        cols = ["class", "mapped_ha", "n", "users_accuracy", "users_ci", "producers_accuracy",
                "producers_ci", "area_ha", "area_ci_ha"]
        return f"{self!r}\n{self.per_class[cols].to_string(index=False, float_format=lambda v: f'{v:.4g}')}"

    def __repr__(self) -> str:
        o = self.overall
        return (f"AreaEstimate(n={int(o['n'])}, overall_accuracy={o['overall_accuracy']:.4f} "
                f"± {o['overall_accuracy_ci']:.4f}, total_area_ha={o['total_area_ha']:.6g}, "
                f"classes={len(self.per_class)})")


def estimate_stratified(counts, mapped_area, classes=None, area_method="planar") -> AreaEstimate:
    """The estimators of Olofsson et al. (2014) from a stratified sample's counts.

    Args:
        counts: ``(k, k)`` sample counts, *reference* classes in rows and *map* classes
            (the strata) in columns.
        mapped_area: ``(k,)`` the mapped area of each class in hectares (the stratum
            sizes; a class the map never shows has 0).
        classes: optional ``(class_ids, names)`` for the tables; default ``0..k-1``.
        area_method: recorded in ``overall`` (``"planar"`` or ``"geodesic"``).

    Returns:
        An :class:`AreaEstimate`.

    Raises:
        InputError: shapes disagree, a mapped class has no sample point, or a sampled
            class has no mapped area.
    """
    n = np.asarray(counts, np.float64)
    area = np.asarray(mapped_area, np.float64)
    if n.ndim != 2 or n.shape[0] != n.shape[1] or area.shape != (n.shape[0],):
        raise InputError(f"counts must be (k, k) and mapped_area (k,); got {n.shape} and {area.shape}")
    ids, names = classes if classes is not None else (list(range(len(area))), None)
    names = names or [f"class_{i}" for i in ids]
    n_i = n.sum(axis=0)  # points per stratum (map class)
    if np.any((area > 0) & (n_i == 0)):
        bad = [names[i] for i in np.flatnonzero((area > 0) & (n_i == 0))]
        raise InputError(f"map classes {bad} have mapped area but no sample point: every stratum "
                         "needs points (two at least for a standard error); draw them with sample_points")
    if np.any((area <= 0) & (n_i > 0)):
        bad = [names[i] for i in np.flatnonzero((area <= 0) & (n_i > 0))]
        raise InputError(f"sample points fall in map classes {bad}, which have no mapped area")
    total = area.sum()
    w = area / total                                               # W_i
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n_i > 0, n / n_i, 0.0)                    # n_ij / n_i. (per column)
        p = share * w                                              # p_ij (eq. 4)
        var_share = np.where(n_i > 1, share * (1 - share) / (n_i - 1),
                             np.where(n_i == 1, np.nan, 0.0))      # its variance per stratum
        users = np.diag(share).copy()
        users[n_i == 0] = np.nan
        users_var = np.diag(var_share)                             # eq. 6
        oa = float(np.trace(p))                                    # eq. 1
        oa_var = float(np.sum((w ** 2 * users_var)[w > 0]))       # eq. 5 (NaN: a stratum of one)
        ref_share = p.sum(axis=1)                                  # p_.k, reference area proportion
        area_var = (w ** 2 * var_share).sum(axis=1)                # eq. 10 squared
        producers = np.diag(p) / ref_share                         # eq. 3
        producers_var = _producers_variance(n, area, share, var_share, producers, users)
    z = Z95
    per_class = pd.DataFrame({
        "class_id": ids, "class": names, "mapped_ha": area, "weight": w, "n": n_i.astype(np.int64),
        "users_accuracy": users, "users_se": np.sqrt(users_var), "users_ci": z * np.sqrt(users_var),
        "producers_accuracy": producers, "producers_se": np.sqrt(producers_var),
        "producers_ci": z * np.sqrt(producers_var),
        "area_proportion": ref_share, "area_ha": ref_share * total,
        "area_se_ha": np.sqrt(area_var) * total, "area_ci_ha": z * np.sqrt(area_var) * total})
    overall = dict(n=float(n.sum()), overall_accuracy=oa, overall_accuracy_se=math.sqrt(oa_var),
                   overall_accuracy_ci=z * math.sqrt(oa_var), total_area_ha=float(total),
                   area_method=area_method)
    labels = pd.Index(names, name="reference")
    return AreaEstimate(
        per_class=per_class, overall=overall,
        error_matrix=pd.DataFrame(p, index=labels, columns=pd.Index(names, name="map")),
        confusion=pd.DataFrame(n.astype(np.int64), index=labels, columns=pd.Index(names, name="map")))


def _producers_variance(n, area, share, var_share, producers, users):
    """Eq. 7 of Olofsson et al. (2014): the variance of each class's producer's accuracy.

    With N_i. the mapped size of stratum i and N^_.j = sum_i N_i. n_ij / n_i. the
    estimated reference size of class j:
    V(P_j) = [N_j.^2 (1 - P_j)^2 V(U_j) + P_j^2 sum_{i != j} N_i.^2 V(n_ij / n_i.)] / N^_.j^2.
    """
    k = len(area)
    ref_size = (area[None, :] * share).sum(axis=1)  # N^_.j (rows: reference class j)
    out = np.empty(k)
    for j in range(k):
        others = [i for i in range(k) if i != j and area[i] > 0]
        own = area[j] ** 2 * (1 - producers[j]) ** 2 * var_share[j, j] if area[j] > 0 else 0.0
        rest = producers[j] ** 2 * sum(area[i] ** 2 * var_share[j, i] for i in others)
        out[j] = (own + rest) / ref_size[j] ** 2 if ref_size[j] > 0 else np.nan
    return out


def stratified_assessment(prediction, reference, field=None, classes=None, ignore=IGNORE,
                          use_nodata=True, block_rows=None, png=None, csv=None,
                          overwrite=False) -> AreaEstimate:
    """``assess_map(..., design="stratified")``: accuracy and areas from labelled points.

    The map class of each point is read from the map (not from a column of the
    points); points on unknown or nodata pixels, off the map, or without a reference
    class are left out (with a warning). The mapped area of each class is summed over
    the whole map in row blocks. See :func:`rsunet.assess_map` for the arguments
    (``field`` defaults to ``"reference"``, the column :func:`sample_points` writes;
    ``csv`` receives :meth:`AreaEstimate.table`, ``png`` :func:`plot_area_estimates`).
    """
    from rsunet.assessment import check_outputs

    if isinstance(prediction, (list, tuple)):
        raise InputError("design='stratified' assesses one map: its strata are that map's classes")
    check_outputs(overwrite, [png, csv], [prediction, reference])
    field = field or "reference"
    with _open_class_map(prediction) as src:
        points = _reference_points(reference, field, src)
        map_class, ref_class = _classes_at_points(points, field, src, ignore, use_nodata, reference)
        _, area_m2, method = class_areas(src, ignore, use_nodata, block_rows)
        names = _class_names(classes, src)
    ids = sorted(set(np.flatnonzero(area_m2 > 0).tolist()) | set(ref_class.tolist())
                 | {int(k) for k in dict(classes or {})} - {IGNORE})
    pos = {c: i for i, c in enumerate(ids)}
    counts = np.zeros((len(ids), len(ids)), np.int64)
    np.add.at(counts, ([pos[c] for c in ref_class], [pos[c] for c in map_class]), 1)
    result = estimate_stratified(counts, area_m2[ids] / 1e4,
                                 classes=(ids, [names.get(i, f"class_{i}") for i in ids]),
                                 area_method=method)
    if png is not None:
        plot_area_estimates(result, png, overwrite=overwrite)
    if csv is not None:
        from rsunet.io import atomic_path

        with atomic_path(csv, overwrite) as tmp:
            result.table().to_csv(tmp, index=False)
    return result


def _reference_points(reference, field, src):
    if not is_vector(reference):
        raise InputError(f"design='stratified' needs reference points (a GeoPackage or GeoDataFrame "
                         f"with a class column, e.g. from sample_points), got {reference!r}; "
                         "a full-coverage reference raster is a census: use design='census'")
    gdf = reference if hasattr(reference, "geometry") else read_vector(reference)
    if field not in gdf.columns:
        raise ClassFieldError(f"the reference points {_label(reference)} have no column {field!r} "
                              f"(columns: {[c for c in gdf.columns if c != gdf.geometry.name]}); "
                              "pass field= the column holding each point's reference class")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if len(gdf) and not (gdf.geom_type == "Point").all():
        raise InputError(f"the reference {_label(reference)} holds {sorted(set(gdf.geom_type))} "
                         "geometries; design='stratified' needs points (one per sampled pixel)")
    return to_image_crs(gdf, src.crs, _label(reference)).reset_index(drop=True)


def _label(x) -> str:
    return "(a GeoDataFrame)" if hasattr(x, "geometry") else str(x)


def _classes_at_points(points, field, src, ignore, use_nodata, name):
    """Map and reference class ids of the usable points (two int64 arrays)."""
    missing = np.array([is_missing(v) or v is pd.NA for v in points[field]], bool)
    ref = np.full(len(points), IGNORE, np.int64)
    if (~missing).any():
        ref[~missing] = class_ids_of(points[field][~missing], _class_names(None, src))
    rows, cols = rasterio.transform.rowcol(src.transform, points.geometry.x.to_numpy(),
                                           points.geometry.y.to_numpy())
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
    mapped = np.full(len(points), IGNORE, np.int64)
    for i in np.flatnonzero(inside):
        window = Window(int(cols[i]), int(rows[i]), 1, 1)
        with reading(src):
            raw = src.read(1, window=window)
            ok = not use_nodata or src.read_masks(1, window=window)[0, 0] > 0
        values, valid = _class_values(raw, src.name, ignore)
        if ok and valid[0, 0]:
            mapped[i] = values[0, 0]
    usable = (ref != IGNORE) & (mapped != IGNORE)
    dropped = {"without a reference class": int(missing.sum()),
               "off the map or on unknown/nodata pixels": int(((mapped == IGNORE) & ~missing).sum()),
               f"with reference {ignore} (unknown)": int(((ref == IGNORE) & ~missing).sum())}
    dropped = {k: v for k, v in dropped.items() if v}
    if dropped:
        warnings.warn(f"{_label(name)}: points left out: " +
                      ", ".join(f"{v} {k}" for k, v in dropped.items()), RsunetWarning, stacklevel=4)
    if not usable.any():
        raise EmptyResultError(f"no point of {_label(name)} has both a reference class (column "
                               f"{field!r}) and a map class: label the points first")
    return mapped[usable], ref[usable]


def plot_area_estimates(result: AreaEstimate, path=None, overwrite=False):
    """Mapped and estimated area of each class, the estimate with its 95 % interval.

    ``result`` is an :class:`AreaEstimate`; the figure is written as a PNG to ``path``
    when one is given (an existing file only with ``overwrite``) and returned as a
    :class:`matplotlib.figure.Figure` either way.
    """
    from rsunet.plotting import class_colormap, new_figure, save_figure

    pc = result.per_class
    k = len(pc)
    fig = new_figure(figsize=(2.5 + 1.1 * k, 3.8), dpi=100)
    ax = fig.subplots()
    x = np.arange(k)
    colours = class_colormap(int(max(pc["class_id"])) + 1)(pc["class_id"].to_numpy())
    ax.bar(x - 0.2, pc["mapped_ha"], width=0.4, color=colours, alpha=0.35)
    ax.bar(x + 0.2, pc["area_ha"], width=0.4, color=colours, yerr=pc["area_ci_ha"], capsize=4)
    from matplotlib.patches import Patch

    handles = [Patch(color="grey", alpha=0.35, label="mapped (pixels)"),
               Patch(color="grey", label="estimated, with 95 % interval")]
    ax.set_xticks(x, list(pc["class"]), rotation=30, ha="right")
    ax.set_ylabel("area (ha)")
    o = result.overall
    ax.set_title(f"overall accuracy {o['overall_accuracy']:.3f} ± {o['overall_accuracy_ci']:.3f} "
                 f"(n = {int(o['n'])})", fontsize=9)
    ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, overwrite)


# ---- compare_maps ----------------------------------------------------------------------------

@dataclass
class Comparison:
    """Two maps of one scene against one reference (map ``a`` minus map ``b``).

    Attributes:
        table: DataFrame, one row per figure (``metric``: ``overall_accuracy``,
            ``kappa``, ``f1_<class>``): ``a``, ``b``, ``difference`` (a - b), ``lower``
            and ``upper`` (the 2.5 and 97.5 % percentiles of the difference over the
            block bootstrap).
        mcnemar: dict: ``n`` (pixels of the thinned sample), ``both_right``, ``a_only``
            (a right, b wrong), ``b_only``, ``both_wrong``, ``statistic`` (McNemar's
            chi-square with continuity correction), ``p_value`` (the exact two-sided
            binomial test of ``a_only`` among ``a_only + b_only``).
        settings: dict: ``block``, ``n_blocks``, ``n_boot``, ``thin``, ``seed``,
            ``n`` (pixels valid in both maps and the reference), ``scenes``.
        disagreement: per scene, a decimated ``(rows, cols)`` uint8 image: 0 not
            assessed, 1 both right, 2 only a right, 3 only b right, 4 both wrong.
        scenes: the file names (without extension) of ``map_a``, scene by scene.
    """

    table: pd.DataFrame
    mcnemar: dict
    settings: dict
    disagreement: list | None = None
    scenes: list | None = None

    def as_dict(self) -> dict:
        """Plain lists and dicts (for R and JSON)."""
        return dict(table={c: self.table[c].tolist() for c in self.table.columns},
                    mcnemar=dict(self.mcnemar), settings=dict(self.settings))

    def __str__(self) -> str:
        m = self.mcnemar
        return (f"{self!r}\n{self.table.to_string(index=False, float_format=lambda v: f'{v:+.4f}')}\n"
                f"McNemar on {m['n']} thinned pixels: {m['a_only']} only a right, {m['b_only']} only b "
                f"right, chi2 = {m['statistic']:.3f}, exact p = {m['p_value']:.4g}")

    def __repr__(self) -> str:
        oa = self.table.set_index("metric").loc["overall_accuracy"]
        return (f"Comparison(OA a - b = {oa['difference']:+.4f} [{oa['lower']:+.4f}, {oa['upper']:+.4f}], "
                f"McNemar p = {self.mcnemar['p_value']:.3g}, blocks={self.settings['n_blocks']})")


def compare_maps(map_a, map_b, reference, block=64, n_boot=500, seed=0, thin=None, field=None,
                 unlabelled="background", classes=None, ignore=IGNORE, use_nodata=True,
                 png=None, overwrite=False) -> Comparison:
    """Is map ``a`` more accurate than map ``b``? A paired comparison that respects
    spatial autocorrelation.

    Both maps are scored on the same pixels (valid in both maps and the reference). The
    difference in overall accuracy, Cohen's kappa and each class's F1 (a - b) gets a
    95 % interval from a spatial block bootstrap: the map is cut into ``block`` x
    ``block`` pixel squares, and ``n_boot`` times as many squares as there are are
    drawn with replacement and their confusion matrices summed (errors of neighbouring
    pixels go together; resampling pixels would make the interval far too narrow).
    Choose ``block`` larger than the size of the maps' error patches. McNemar's test is
    computed on a sample thinned to one pixel every ``thin`` rows and columns, which
    are then roughly independent. The maps are streamed in strips of ``block`` rows.

    Args:
        map_a: the first class map (e.g. the U-Net's), or a list of maps of several
            scenes, whose blocks are pooled (``map_b`` and ``reference`` are then lists
            of as many, scene by scene).
        map_b: the second class map (e.g. the Random Forest's), on the grid of ``map_a``.
        reference: the truth, as for :func:`rsunet.assess_map` (a label raster on any
            grid, or polygons with ``field``).
        block: the side of the bootstrap's spatial blocks, in pixels.
        n_boot: the number of bootstrap replicates.
        seed: seed of the bootstrap.
        thin: the spacing of McNemar's sample in pixels (None: ``block``).
        field: for polygon references, the class attribute (as in ``assess_map``).
        unlabelled: for polygon references, ``"background"`` or ``"ignore"``.
        classes: optional ``{class id: name}`` (default: the map's class table).
        ignore: the unknown value (255).
        use_nodata: also leave out the pixels the files mark as nodata.
        png: optional path of a figure: where the maps disagree, and the differences
            with their intervals.
        overwrite: replace an existing ``png``.

    Returns:
        A :class:`Comparison` (``.table``, ``.mcnemar``, ``.settings``).

    Raises:
        GridMismatchError: the two maps are not on one grid.
        InputError: an argument is out of range, or no pixel is valid in all three.
    """
    from rsunet.assessment import check_outputs

    block, n_boot = whole_number(block, "block"), whole_number(n_boot, "n_boot")
    thin = block if thin is None else whole_number(thin, "thin")
    if block < 1 or n_boot < 1 or thin < 1:
        raise InputError(f"block, n_boot and thin must be positive; got {block}, {n_boot}, {thin}")
    scenes = _scene_triples(map_a, map_b, reference)
    check_outputs(overwrite, [png], [map_a, map_b, reference])
    scans, names = [], {}
    for a_path, b_path, ref_input in scenes:
        scans.append(_scan_pair(a_path, b_path, ref_input, block, thin, field, unlabelled,
                                ignore, use_nodata))
        names = {**scans[-1]["names"], **names}
    names.update({int(k): str(v) for k, v in dict(classes or {}).items()})
    ids, mats = _block_matrices(scans)
    if not mats.size or not mats.sum():
        raise EmptyResultError(f"no pixel is valid in {map_a}, {map_b} and the reference together")
    labels = [names.get(i, f"class_{i}") for i in ids]
    point = _figures(mats.sum(axis=0))
    boots = _block_bootstrap(mats, n_boot, np.random.default_rng(seed))
    thinned = np.sum([s["thinned"] for s in scans], axis=0)
    result = Comparison(table=_comparison_table(point, boots, labels),
                        mcnemar=mcnemar_test(thinned[1], thinned[2], thinned[0], thinned[3]),
                        settings=dict(block=block, n_blocks=int(mats.shape[0]), n_boot=n_boot,
                                      thin=thin, seed=seed, n=float(mats[:, 0].sum()),
                                      scenes=len(scenes)),
                        disagreement=[s["picture"] for s in scans],
                        scenes=[Path(os.fspath(a)).stem for a, _, _ in scenes])
    if png is not None:
        plot_comparison(result, png, overwrite=overwrite)
    return result


def _scene_triples(map_a, map_b, reference) -> list:
    """``[(a, b, reference), ...]``: one scene, or several whose blocks are pooled."""
    if not isinstance(map_a, (list, tuple)):
        return [(map_a, map_b, reference)]
    lists = [x for x in (map_b, reference) if isinstance(x, (list, tuple))]
    if len(lists) != 2 or not len(map_a) == len(map_b) == len(reference) or not map_a:
        raise InputError("several scenes need three lists of as many maps: map_a, map_b and reference")
    return list(zip(map_a, map_b, reference))


def _scan_pair(map_a, map_b, reference, block, thin, field, unlabelled, ignore, use_nodata):
    """One scene in strips of ``block`` rows: the pixel counts per (spatial block, map,
    reference class, map class), McNemar's thinned counts, a decimated disagreement image."""
    from rsunet.assessment import ReferenceReader

    with _open_class_map(map_a) as a, _open_class_map(map_b) as b, \
            ReferenceReader(reference, a, field, unlabelled, ignore, use_nodata) as ref:
        if not same_grid(a, b):
            raise GridMismatchError(f"{map_b} ({b.width}x{b.height}) is not on the grid of {map_a} "
                                    f"({a.width}x{a.height}): compare maps of one scene on one grid")
        nbx = -(-a.width // block)
        step = max(1, -(-max(a.height, a.width) // 800))  # decimation of the figure's image
        keys, counts, thinned, picture = [], [], np.zeros(4, np.int64), []
        strip = block * max(1, BLOCK_PIXELS // max(1, a.width * block))
        for (r0, va, ok_a), (_, vb, ok_b) in zip(_map_blocks(a, ignore, use_nodata, strip),
                                                _map_blocks(b, ignore, use_nodata, strip)):
            vr, ok_r = ref.read(Window(0, r0, a.width, va.shape[0]))
            ok = ok_a & ok_b & ok_r
            if ok.any() and (vr[ok].min() < 0 or vr[ok].max() >= IGNORE):
                raise InputError(f"the reference {reference} holds values outside 0..254 besides {ignore}")
            rows, cols = np.indices(ok.shape)
            blk = ((rows + r0) // block) * nbx + cols // block
            for which, vm in ((0, va), (1, vb)):
                key = ((blk[ok] * 2 + which) * IGNORE + vr[ok]) * IGNORE + vm[ok]
                u, c = np.unique(key, return_counts=True)
                keys.append(u)
                counts.append(c)
            right_a, right_b = ok & (va == vr), ok & (vb == vr)
            grid = ok & (((rows + r0) % thin) == thin // 2) & ((cols % thin) == thin // 2)
            thinned += [int((grid & right_a & right_b).sum()), int((grid & right_a & ~right_b).sum()),
                        int((grid & ~right_a & right_b).sum()), int((grid & ~right_a & ~right_b).sum())]
            code = np.where(~ok, 0, np.where(right_a, np.where(right_b, 1, 2), np.where(right_b, 3, 4)))
            picture.append(code[(rows[:, 0] + r0) % step == 0][:, ::step].astype(np.uint8))
        names = _class_names(None, a)
    return dict(keys=np.concatenate(keys) if keys else np.zeros(0, np.int64),
                counts=np.concatenate(counts) if counts else np.zeros(0, np.int64),
                thinned=thinned, picture=np.concatenate(picture) if picture else None, names=names)


def _block_matrices(scans):
    """The class ids and ``(blocks, 2, k, k)`` confusion counts of every block holding a
    valid pixel, over all scenes (map 0 = a, 1 = b; rows reference)."""
    parts = []
    for scene, scan in enumerate(scans):
        key = scan["keys"]
        pred, rest = key % IGNORE, key // IGNORE
        refc, rest = rest % IGNORE, rest // IGNORE
        parts.append((np.full(key.size, scene), rest // 2, rest % 2, refc, pred, scan["counts"]))
    scene, blk, which, refc, pred, count = (np.concatenate(x) for x in zip(*parts))
    ids = np.union1d(pred, refc).astype(int).tolist()
    pos = np.searchsorted(ids, np.arange(IGNORE))
    _, slot = np.unique(np.stack([scene, blk]), axis=1, return_inverse=True)
    slot = slot.ravel()
    mats = np.zeros((slot.max() + 1 if slot.size else 0, 2, len(ids), len(ids)), np.int64)
    np.add.at(mats, (slot, which, pos[refc], pos[pred]), count)
    return ids, mats


def _figures(m) -> dict:
    """OA, kappa and per-class F1 of confusion matrices ``(..., k, k)`` (rows reference)."""
    m = np.asarray(m, np.float64)
    n = m.sum(axis=(-2, -1))
    diag = np.diagonal(m, axis1=-2, axis2=-1)
    ref, pred = m.sum(axis=-1), m.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        oa = diag.sum(axis=-1) / n
        pe = (ref * pred).sum(axis=-1) / n ** 2
        kappa = (oa - pe) / (1 - pe)
        f1 = np.where(ref + pred > 0, 2 * diag / (ref + pred), np.nan)
    return dict(overall_accuracy=oa, kappa=kappa, f1=f1)


def _block_bootstrap(mats, n_boot, rng, chunk=256) -> dict:
    """The figures of ``n_boot`` resamples of the blocks (with replacement), both maps."""
    nb = mats.shape[0]
    flat = mats.reshape(nb, -1).astype(np.float64)
    out = []
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        idx = rng.integers(0, nb, size=(c, nb)) + np.arange(c)[:, None] * nb
        weights = np.bincount(idx.ravel(), minlength=c * nb).reshape(c, nb)
        out.append((weights @ flat).reshape((c,) + mats.shape[1:]))
    return _figures(np.concatenate(out))


def _comparison_table(point, boots, labels) -> pd.DataFrame:
    rows = []
    metrics = [("overall_accuracy", lambda f: f["overall_accuracy"]), ("kappa", lambda f: f["kappa"])]
    metrics += [(f"f1_{name}", lambda f, k=k: f["f1"][..., k]) for k, name in enumerate(labels)]
    for name, get in metrics:
        a, b = get(point)
        diff = get(boots)[:, 0] - get(boots)[:, 1]
        diff = diff[np.isfinite(diff)]
        lower, upper = np.percentile(diff, [2.5, 97.5]) if diff.size else (np.nan, np.nan)
        rows.append(dict(metric=name, a=float(a), b=float(b), difference=float(a - b),
                         lower=float(lower), upper=float(upper)))
    return pd.DataFrame(rows)


def mcnemar_test(a_only, b_only, both_right=0, both_wrong=0) -> dict:
    """McNemar's test of two classifiers on the same (independent) pixels.

    Args:
        a_only: pixels that only ``a`` classifies correctly.
        b_only: pixels that only ``b`` classifies correctly.
        both_right, both_wrong: the concordant pixels (reported, not used by the test).

    Returns:
        dict: ``n``, the four counts, ``statistic`` ((|a_only - b_only| - 1)^2 /
        (a_only + b_only), chi-square with 1 degree of freedom, continuity corrected;
        NaN without discordant pixels) and ``p_value`` (exact two-sided binomial test,
        ``scipy.stats.binomtest``; 1 without discordant pixels).
    """
    from scipy.stats import binomtest

    a_only, b_only = int(a_only), int(b_only)
    discordant = a_only + b_only
    statistic = (abs(a_only - b_only) - 1) ** 2 / discordant if discordant else float("nan")
    p_value = binomtest(a_only, discordant, 0.5).pvalue if discordant else 1.0
    return dict(n=int(a_only + b_only + both_right + both_wrong), both_right=int(both_right),
                a_only=a_only, b_only=b_only, both_wrong=int(both_wrong),
                statistic=float(statistic), p_value=float(p_value))


def plot_comparison(result: Comparison, path=None, overwrite=False, labels=("a", "b"),
                    max_scenes=3):
    """Where two maps disagree, and the differences (a - b) with their 95 % intervals.

    Args:
        result: a :class:`Comparison`.
        path: the PNG to write (None: write nothing).
        overwrite: replace an existing file.
        labels: the names of the two maps in the figure.
        max_scenes: the most scenes whose disagreement is drawn.

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from rsunet.plotting import new_figure, save_figure

    pictures = [p for p in (result.disagreement or []) if p is not None][:max_scenes]
    k = max(1, len(pictures))
    fig = new_figure(figsize=(4 * k + 5, 4.2), dpi=100)
    axes = fig.subplots(1, k + 1, gridspec_kw=dict(width_ratios=[1.2] * k + [1.6]))
    ax_bar = axes[-1]
    colours = ["white", "#d9d9d9", "#1b9e77", "#d95f02", "#252525"]
    for ax, picture, name in zip(axes[:-1], pictures, result.scenes or [""] * len(pictures)):
        ax.imshow(picture, cmap=ListedColormap(colours), vmin=0, vmax=4, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes[:-1]:
        ax.set_axis_off()
    axes[0].legend(handles=[Patch(color=c, label=t) for c, t in zip(colours[1:], [
        "both right", f"only {labels[0]} right", f"only {labels[1]} right", "both wrong"])],
        loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8)
    t = result.table
    y = np.arange(len(t))[::-1]
    ax_bar.errorbar(t["difference"], y, xerr=[t["difference"] - t["lower"], t["upper"] - t["difference"]],
                    fmt="o", capsize=4, color="black")
    ax_bar.axvline(0, color="grey", lw=0.8)
    ax_bar.set_yticks(y, list(t["metric"]))
    ax_bar.set_xlabel(f"{labels[0]} - {labels[1]} (95 % block-bootstrap interval)")
    m = result.mcnemar
    ax_bar.set_title(f"McNemar p = {m['p_value']:.3g}\n({m['a_only']} vs {m['b_only']} discordant "
                     f"of {m['n']} thinned pixels)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, overwrite)
