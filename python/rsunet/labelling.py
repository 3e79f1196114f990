"""Where to label next: the most uncertain places of a map, spread apart (active learning).

:func:`suggest_labels` reads any single-band uncertainty raster (higher = less sure:
normalised entropy, margin, disagreement between augmented views, or a layer of one's
own) in row blocks and proposes the ``n`` most uncertain places at least
``min_distance`` pixels apart, as points or patch-sized boxes in a GeoPackage to
digitise in QGIS; label them, add them to the training labels, retrain, map again: one
call per round.
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from rsunet.errors import EmptyResultError, InputError
from rsunet.io import open_raster, reading, write_vector

__all__ = ["suggest_labels", "SHAPES"]

SHAPES = ("point", "box")
BLOCK_PIXELS = 2 ** 19


def suggest_labels(uncertainty, out, n, min_distance, shape="point", size=None, band=1,
                   max_candidates=1_000_000, block_rows=None, overwrite=False):
    """Propose the ``n`` most uncertain places of a map, at least ``min_distance`` apart.

    Greedy on sorted uncertainty: the most uncertain valid pixel is taken, then the
    next most uncertain one that lies at least ``min_distance`` pixels from every
    place taken so far (a grid of cells ``min_distance`` wide finds the neighbours), and
    so on until ``n`` places are taken or no pixel is left. The raster is streamed in
    row blocks; each block keeps only the most uncertain pixel of every cell of
    ``min_distance / 2`` pixels (two pixels of such a cell can never both be taken),
    and at most ``max_candidates`` candidates are kept overall, the most uncertain ones.
    So when fewer than ``n`` places fit, every valid pixel lies within
    ``min_distance * 1.71`` of a proposal (within ``min_distance`` for an exhaustive greedy).

    Args:
        uncertainty: a single-band raster (any numeric dtype) where higher values mean
            less certain (e.g. ``predict_raster``'s entropy or margin layer). Nodata,
            NaN and infinite pixels are never proposed.
        out: the GeoPackage to write (``.gpkg``).
        n: how many places to propose.
        min_distance: the least distance between two proposals, in **pixels** of the
            raster (Euclidean, between pixel centres); for boxes, ``size`` keeps them
            from overlapping.
        shape: ``"point"`` (the pixel's centre) or ``"box"`` (a ``size`` x ``size``
            pixel square around it, moved inside the scene where it would cross the
            edge: a patch ready to label).
        size: the box side in pixels (e.g. the model's patch size); needed for boxes.
        band: the band to read, for a multi-band raster.
        max_candidates: the most candidate pixels kept in memory.
        block_rows: rows read per block; None reads about 2**19 pixels per block.
        overwrite: replace an existing ``out``.

    Returns:
        The GeoDataFrame written, ranked: ``rank`` (1 = most uncertain),
        ``uncertainty``, ``row``, ``col`` (the pixel), geometry in the raster's CRS.

    Raises:
        InputError: an argument is out of range, or the raster's ``band`` is missing.
        EmptyResultError: the raster has no valid pixel.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    import geopandas as gpd
    from shapely.geometry import Point, box

    from rsunet.assessment import check_outputs
    from rsunet.estimation import whole_number

    n = whole_number(n, "n")
    if n < 1:
        raise InputError(f"n must be a positive number of places, got {n}")
    try:
        min_distance = float(min_distance)
    except (TypeError, ValueError):
        raise InputError(f"min_distance must be a number of pixels, got {min_distance!r}") from None
    if not min_distance >= 0:
        raise InputError(f"min_distance must be a number of pixels >= 0, got {min_distance}")
    if shape not in SHAPES:
        raise InputError(f"shape must be one of {SHAPES}, got {shape!r}")
    if shape == "box":
        if size is None or whole_number(size, "size") < 1:
            raise InputError(f"shape='box' needs size, the box side in pixels (e.g. the patch size); got {size!r}")
        size = whole_number(size, "size")
    check_outputs(overwrite, [out], [uncertainty])
    with open_raster(uncertainty) as src:
        band = whole_number(band, "band")
        if not 1 <= band <= src.count:
            raise InputError(f"{uncertainty} has {src.count} band(s); band {band} does not exist")
        values, rows, cols = _candidates(src, band, min_distance, int(max_candidates), block_rows)
        if not values.size:
            raise EmptyResultError(f"{uncertainty} has no valid pixel (all are nodata, NaN or infinite)")
        picked = _greedy(values, rows, cols, n, min_distance)
        rows, cols, values = rows[picked], cols[picked], values[picked]
        t = src.transform
        if shape == "point":
            geoms = [Point(t * (c + 0.5, r + 0.5)) for r, c in zip(rows, cols)]
        else:
            geoms = [box(*_box_bounds(t, r, c, size, src.height, src.width)) for r, c in zip(rows, cols)]
        gdf = gpd.GeoDataFrame({"rank": np.arange(1, rows.size + 1, dtype=np.int64),
                                "uncertainty": values.astype(np.float64), "row": rows, "col": cols},
                               geometry=geoms, crs=src.crs)
    write_vector(gdf, out, overwrite=overwrite)
    return gdf


def _candidates(src, band, min_distance, max_candidates, block_rows):
    """Uncertainty, row and column of the candidate pixels: per block, the most
    uncertain valid pixel of each cell of ``min_distance / 2`` pixels."""
    cell = max(1, int(min_distance // 2))
    rows_per_block = max(1, int(block_rows) if block_rows else BLOCK_PIXELS // max(1, src.width))
    rows_per_block = -(-rows_per_block // cell) * cell  # whole cells per block
    keep_v, keep_r, keep_c = [], [], []
    for r0 in range(0, src.height, rows_per_block):
        h = min(rows_per_block, src.height - r0)
        with reading(src):
            data = src.read(band, window=Window(0, r0, src.width, h)).astype(np.float64)
            valid = src.read_masks(band, window=Window(0, r0, src.width, h)) > 0
        valid &= np.isfinite(data)
        rr, cc = np.nonzero(valid)
        if not rr.size:
            continue
        v = data[rr, cc]
        cell_id = (rr // cell) * (-(-src.width // cell)) + cc // cell
        order = np.lexsort((-v, cell_id))  # per cell, most uncertain first
        first = np.r_[True, cell_id[order][1:] != cell_id[order][:-1]]
        best = order[first]
        keep_v.append(v[best])
        keep_r.append(rr[best] + r0)
        keep_c.append(cc[best])
        if sum(x.size for x in keep_v) > 2 * max_candidates:
            v, r, c = _top(keep_v, keep_r, keep_c, max_candidates)
            keep_v, keep_r, keep_c = [v], [r], [c]
    if not keep_v:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return _top(keep_v, keep_r, keep_c, max_candidates)


def _top(vs, rs, cs, k):
    """The ``k`` most uncertain candidates, most uncertain first (ties: row, then column)."""
    v, r, c = np.concatenate(vs), np.concatenate(rs), np.concatenate(cs)
    order = np.lexsort((c, r, -v))[:k]
    return v[order], r[order].astype(np.int64), c[order].astype(np.int64)


def _greedy(values, rows, cols, n, min_distance) -> np.ndarray:
    """Indices of the greedy picks (candidates come sorted, most uncertain first)."""
    side = max(min_distance, 1.0)
    taken, grid = [], {}
    for i in range(values.size):
        r, c = rows[i], cols[i]
        gr, gc = int(r // side), int(c // side)
        near = (j for dr in (-1, 0, 1) for dc in (-1, 0, 1) for j in grid.get((gr + dr, gc + dc), ()))
        if min_distance > 0 and any((rows[j] - r) ** 2 + (cols[j] - c) ** 2 < min_distance ** 2 for j in near):
            continue
        taken.append(i)
        grid.setdefault((gr, gc), []).append(i)
        if len(taken) == n:
            break
    return np.asarray(taken, np.int64)


def _box_bounds(transform, row, col, size, height, width):
    """A ``size`` square of pixels around (row, col), moved inside the scene."""
    r0 = int(min(max(row - size // 2, 0), max(height - size, 0)))
    c0 = int(min(max(col - size // 2, 0), max(width - size, 0)))
    x0, y0 = transform * (c0, r0)
    x1, y1 = transform * (c0 + min(size, width), r0 + min(size, height))
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
