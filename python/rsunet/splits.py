"""Splitting a patch set: every patch to train, validation or test, randomly or by spatial blocks.

:func:`split_patches` adds the columns ``split`` and ``block`` to a patch index (and
rewrites a patch folder's ``index.csv``); the purge marks ``"excluded"`` the patches that
share pixels with a patch of a later split. :mod:`rsunet.patches` re-exports the public
names, so the stage keeps one home for its users (``rsunet.split_patches``, R
``split_patches()``).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from rsunet.errors import InputError, RsunetWarning
from rsunet.io import atomic_path

__all__ = ["split_patches", "block_ids", "SPLITS", "EXCLUDED"]

SPLITS = ("train", "validation", "test")
EXCLUDED = "excluded"  # split of patches purged for sharing pixels with a later split


def split_patches(index, fractions=(0.8, 0.2), method="blocks", block=4, seed=0, purge=None):
    """Assign every patch to train / validation (/ test), randomly or by spatial blocks.

    Overlapping or neighbouring patches share pixels (or look alike): split at random,
    they leak between training and validation and inflate the scores. ``"blocks"``
    groups each scene's patches into blocks of ``block`` x ``block`` patch cells (a
    patch belongs to the cell holding its centre; cells are ``size`` pixels) and assigns
    whole blocks. Overlapping patches (``stride < size``) on either side of a block
    border still share a strip of pixels; ``purge`` removes that leak: a patch whose
    window shares a pixel with a patch of a later split in the same scene (train before
    validation before test) gets split ``"excluded"`` and is used for nothing. Without
    overlap (``stride == size`` and ``edge`` ``"pad"`` or ``"drop"``) nothing is excluded;
    with ``edge="shift"`` the last, shifted windows overlap their neighbours and may be.

    Args:
        index: a patch folder (its ``index.csv`` is rewritten atomically with the new
            columns), a :class:`PatchSet`, or an index DataFrame.
        fractions: shares of (train, validation) or (train, validation, test), or a
            dict with keys among ``"train"``, ``"validation"``, ``"test"``; they are
            normalised to sum to 1 (of the patches before purging: purged training
            patches make the training share smaller).
        method: ``"blocks"`` (spatial, default) or ``"random"`` (patch by patch).
        block: block edge in patch cells (``"blocks"`` only).
        seed: random seed: the same seed gives the same split.
        purge: mark patches sharing pixels with a later split ``"excluded"``: no
            training patch then overlaps a validation or test patch, and no validation
            patch a test patch. None (default) purges for ``"blocks"`` and not for
            ``"random"`` (where, with overlap, it would exclude most patches).

    Returns:
        The index with columns ``split`` (``"train"``, ``"validation"``, ``"test"`` or
        ``"excluded"``) and ``block`` (the block id, e.g. ``"scene:2:0"``; for
        ``"random"`` each patch is its own block).

    Raises:
        InputError: bad fractions, method or block.
    """
    from rsunet.patches import PatchSet

    ps = index if isinstance(index, PatchSet) else (
        PatchSet(index) if isinstance(index, (str, os.PathLike)) else None)
    table = (ps.index if ps is not None else pd.DataFrame(index)).copy()
    shares = _shares(fractions)
    if method not in ("blocks", "random"):
        raise InputError(f"method must be 'blocks' or 'random', got {method!r}")
    if int(block) < 1:
        raise InputError(f"block must be a positive number of patch cells, got {block}")
    rng = np.random.default_rng(int(seed))
    if method == "random":
        table["block"] = table["patch_id"].astype(str)
    else:
        table["block"] = block_ids(table, block)
    table["split"] = _assign(table["block"], shares, rng)
    if (method == "blocks") if purge is None else bool(purge):
        table["split"] = _purged(table)
    if ps is not None:
        with atomic_path(ps.path / "index.csv", overwrite=True) as tmp:
            table.to_csv(tmp, index=False)
    return table


def block_ids(index, block) -> pd.Series:
    """Each patch's spatial block, ``"<scene>:<row>:<col>"``: the cell of ``block`` x
    ``block`` patch sizes (from the scene's origin) that holds the patch's centre."""
    cell = int(block) * index["width"].astype(int)
    r = (index["row_off"] + index["height"] // 2) // cell
    c = (index["col_off"] + index["width"] // 2) // cell
    return index["scene"].astype(str) + ":" + r.astype(str) + ":" + c.astype(str)


def _purged(table):
    """The split column, with every patch that overlaps a later split's patch excluded."""
    split = table["split"].to_numpy(dtype=object).copy()
    windows = table[["col_off", "row_off", "width", "height"]].to_numpy(np.int64)
    for rows in table.groupby(table["scene"].astype(str).to_numpy(), sort=False).indices.values():
        # test first: a validation patch excluded for a test patch no longer counts against train
        for k in reversed(range(len(SPLITS) - 1)):
            mine = rows[split[rows] == SPLITS[k]]
            later = rows[np.isin(split[rows], SPLITS[k + 1:])]
            split[mine[_overlapping(windows[mine], windows[later])]] = EXCLUDED
    return split


def _overlapping(a, b):
    """For each window of ``a`` (rows of col_off, row_off, width, height), whether it
    shares a pixel with any window of ``b``."""
    from scipy.spatial import cKDTree

    hit = np.zeros(len(a), bool)
    if not len(a) or not len(b):
        return hit
    # windows that overlap have upper-left corners less than the larger edge apart on
    # both axes: candidates by a Chebyshev-distance search, then the exact test
    reach = int(max(a[:, 2:].max(), b[:, 2:].max()))
    near = cKDTree(b[:, :2]).query_ball_point(a[:, :2], r=reach, p=np.inf)
    i = np.repeat(np.arange(len(a)), [len(n) for n in near])
    j = np.concatenate([np.asarray(n, np.int64) for n in near])
    shared = ((a[i, 0] < b[j, 0] + b[j, 2]) & (b[j, 0] < a[i, 0] + a[i, 2]) &
              (a[i, 1] < b[j, 1] + b[j, 3]) & (b[j, 1] < a[i, 1] + a[i, 3]))
    hit[i[shared]] = True
    return hit


def _shares(fractions) -> dict:
    if isinstance(fractions, dict):
        bad = set(fractions) - set(SPLITS)
        if bad:
            raise InputError(f"fractions keys must be among {SPLITS}, got {sorted(bad)}")
        shares = {k: float(fractions[k]) for k in SPLITS if k in fractions}
    else:
        values = [float(v) for v in fractions]
        if not 2 <= len(values) <= 3:
            raise InputError(f"fractions needs 2 or 3 shares (train, validation[, test]), got {values}")
        shares = dict(zip(SPLITS, values))
    total = sum(shares.values())
    if any(v < 0 for v in shares.values()) or total <= 0:
        raise InputError(f"fractions must be non-negative and not all 0, got {fractions}")
    if not np.isclose(total, 1.0):
        warnings.warn(f"fractions {fractions} sum to {total:g}, not 1: they are rescaled to "
                      f"{ {k: round(v / total, 4) for k, v in shares.items()} }", RsunetWarning, stacklevel=3)
    return {k: v / total for k, v in shares.items()}


def _assign(groups, shares, rng):
    """Shuffle the groups, then fill the splits in order up to their share of patches."""
    sizes = groups.value_counts(sort=False)
    order = sizes.index.to_numpy()[rng.permutation(len(sizes))]
    targets = np.cumsum([shares[k] for k in shares]) * len(groups)
    names, which, done = list(shares), {}, 0
    for g in order:
        # the split whose cumulative target the middle of this group falls under
        middle = done + sizes[g] / 2
        which[g] = names[min(int(np.searchsorted(targets, middle, side="right")), len(names) - 1)]
        done += sizes[g]
    return groups.map(which).to_numpy()
