"""Georeferenced patch sets: cut scenes and masks into patches, split them, look at them.

The course wrote each 128x128 patch as a PNG pair (at most 4 bands, coordinates lost).
:func:`make_patches` keeps every band in its native dtype and every patch's place on
Earth, and writes one memory-mapped ``.npy`` stack per scene and per kind (images,
masks) plus an index table: writing is a sequential copy, and training reads any batch
without opening a file per patch. The folder layout is the contract in
``docs/architecture.md``::

    out_dir/patches.json                 size, classes, ignore value, per-scene georeferencing
                                         and band percentiles (2, 98 %: for normalize="scene")
    out_dir/index.csv                    one row per patch: offsets, bounds, class counts
    out_dir/scenes/<scene>.images.npy    (n, bands, size, size), native dtype
    out_dir/scenes/<scene>.masks.npy     (n, size, size) uint8; image nodata -> 255

Windows start every ``stride`` pixels from the upper-left corner. The edge policy says
what happens where the last window would leave the scene:

* ``"shift"`` (default): the last row/column window is shifted back so that it ends at
  the scene's edge (it overlaps its neighbour more; every pixel is covered, nothing is
  invented). A scene smaller than ``size`` cannot be shifted and is padded instead.
* ``"pad"``: the last window keeps its place on the stride grid and its outside part is
  filled with the image's nodata (0 if it has none) and the mask's ignore value 255.
* ``"drop"``: only windows that lie wholly inside the scene.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from rsunet.errors import (CorruptFileError, EmptyResultError, GridMismatchError, InputError,
                           OutputExistsError, PatchSizeError)
from rsunet.io import (Raster, check_not_input, is_nodata, open_raster,
                       read_padded, reading, window_intersection, window_offsets, write_vector,
                       writing)
from rsunet.labels import CLASSES_TAG, IGNORE, same_grid
from rsunet.normalization import (SCENE_PERCENTILES, BandValues, band_percentiles, check_normalize,
                                  reads_whole, scene_scaling)
from rsunet.plotting import class_colormap, stretch
from rsunet.splits import EXCLUDED, SPLITS, block_ids, split_patches

__all__ = ["PatchSet", "as_patchset", "make_patches", "read_patch", "split_patches", "patch_grid",
           "class_balance", "plot_patches", "window_offsets", "block_ids", "FORMAT", "EDGES", "SPLITS",
           "EXCLUDED"]

FORMAT = "rsunet-patches/1"
EDGES = ("shift", "pad", "drop")
MULTIPLE = 32  # a U-Net of depth 5 halves the size five times


# ---- the patch set on disk ---------------------------------------------------------------

class PatchSet:
    """A patch folder written by :func:`make_patches`, opened for reading.

    Attributes:
        path: the folder.
        index: the patch table (``index.csv``) as a DataFrame, one row per patch.
        meta: the parsed ``patches.json``.
        size: patch edge in pixels.
        classes: ``{class id: name}`` (ids are ints; the ignore value is not a class).
        ignore_value: the mask value of unknown pixels (255).
        bands: number of image bands (the same in every scene).
        scenes: ``{scene name: scene metadata}`` from ``patches.json``.
    """

    def __init__(self, path):
        self.path = Path(path)
        meta_file = self.path / "patches.json"
        if not meta_file.exists():
            raise InputError(f"{self.path} is not a patch folder (no patches.json); "
                             "make one with make_patches()")
        try:
            self.meta = json.loads(meta_file.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{meta_file} is not valid JSON ({exc}): the patch set is damaged; "
                                   "make it again with make_patches()") from exc
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            found = self.meta.get("format") if isinstance(self.meta, dict) else type(self.meta).__name__
            raise InputError(f"{meta_file} has format {found!r}, expected {FORMAT!r}")
        missing = [k for k in ("size", "ignore_value", "classes", "scenes") if k not in self.meta]
        if missing:
            raise CorruptFileError(f"{meta_file} lacks {missing}: the patch set is damaged; make it "
                                   "again with make_patches()")
        self.index = _read_index(self.path / "index.csv")
        self._rows = pd.Series(np.arange(len(self.index)), index=self.index["patch_id"])
        self._stacks = {}

    size = property(lambda self: int(self.meta["size"]))
    ignore_value = property(lambda self: int(self.meta["ignore_value"]))
    scenes = property(lambda self: self.meta["scenes"])
    classes = property(lambda self: {int(k): v for k, v in self.meta["classes"].items()})

    @property
    def bands(self) -> int:
        return int(next(iter(self.scenes.values()))["bands"]) if self.scenes else 0

    def __len__(self):
        return len(self.index)

    def __repr__(self):
        return (f"PatchSet({str(self.path)!r}: {len(self)} patches of {self.size}x{self.size}, "
                f"{self.bands} bands, {len(self.scenes)} scenes, classes {self.classes})")

    def with_index(self, index) -> "PatchSet":
        """The same patches under another index table (e.g. another split), in memory:
        the folder is not changed. Cross-validation trains each fold on such a view."""
        view = copy.copy(self)
        view.index = pd.DataFrame(index).reset_index(drop=True)
        view._rows = pd.Series(np.arange(len(view.index)), index=view.index["patch_id"].astype(str))
        return view

    def row(self, patch_id) -> pd.Series:
        """The index row of one patch."""
        try:
            return self.index.iloc[int(self._rows[str(patch_id)])]
        except KeyError:
            raise InputError(f"no patch {patch_id!r} in {self.path}") from None

    def stacks(self, scene):
        """The scene's (images, masks) stacks, memory-mapped read-only."""
        if scene not in self._stacks:
            if scene not in self.scenes:
                raise CorruptFileError(f"{self.path / 'index.csv'} names scene {scene!r}, which "
                                       f"{self.path / 'patches.json'} does not describe")
            s = self.scenes[scene]
            self._stacks[scene] = tuple(_load_stack(self.path / s[k], s.get("n"))
                                        for k in ("images_file", "masks_file"))
        return self._stacks[scene]

    def read(self, patch_ids):
        """Images and masks of some patches, in the order asked.

        Args:
            patch_ids: one patch id or a sequence of them.

        Returns:
            ``(images, masks)``: ``(n, bands, size, size)`` in the scenes' dtype and
            ``(n, size, size)`` uint8, copied out of the memory-mapped stacks.
        """
        ids = [patch_ids] if isinstance(patch_ids, str) else [str(p) for p in patch_ids]
        rows = self.index.iloc[[int(self._rows[p]) for p in self._check_ids(ids)]]
        first = self.scenes[rows["scene"].iloc[0]] if len(rows) else None
        dtype = np.dtype(first["dtype"]) if first else np.uint8
        images = np.empty((len(rows), self.bands, self.size, self.size), dtype)
        masks = np.empty((len(rows), self.size, self.size), np.uint8)
        positions = np.arange(len(rows))
        for scene, where in pd.Series(positions).groupby(rows["scene"].to_numpy()):
            imgs, msks = self.stacks(scene)
            slots = rows["slot"].to_numpy()[where.to_numpy()]
            images[where.to_numpy()] = imgs[slots]
            masks[where.to_numpy()] = msks[slots]
        return images, masks

    def scaling(self, patch_ids, normalize="dataset"):
        """Per-patch ``(scale, offset)``, each ``(n, bands)`` float32, applied before any other
        normalisation: ``"dataset"`` leaves pixels as they are, ``"scene"`` (and ``"both"``,
        whose scene-scaled channels use it) maps each scene's 2 and 98 % band percentiles
        (recorded by :func:`make_patches`) to 0 and 1, ``"scene_joint"`` the lowest of
        them to 0 and the highest to 1 in every band."""
        check_normalize(normalize)
        scenes = self.index.set_index("patch_id").loc[[str(p) for p in patch_ids], "scene"]
        n, bands = len(scenes), self.bands
        if normalize == "dataset":
            return np.ones((n, bands), np.float32), np.zeros((n, bands), np.float32)
        per_scene = {}
        for name in scenes.unique():
            recorded = self.scenes[name].get("percentiles")
            if recorded is None:
                raise InputError(f"{self.path} was made by an older rsunet without scene percentiles; "
                                 f"run make_patches() again to use normalize={normalize!r}")
            per_scene[name] = scene_scaling(recorded["values"], joint=normalize == "scene_joint")
        scale = np.stack([per_scene[s][0] for s in scenes])
        offset = np.stack([per_scene[s][1] for s in scenes])
        return scale.reshape(n, bands), offset.reshape(n, bands)

    def ids(self, split=None) -> list:
        """The ids of the patches of ``split`` (``"train"``, ``"validation"``, ...; all for None)."""
        table = self.index
        if split is not None:
            if not self.has_split:
                raise InputError("the patch set has no split: run split_patches() first")
            table = table[table["split"] == split]
        return table["patch_id"].astype(str).tolist()

    has_split = property(lambda self: "split" in self.index.columns,
                         doc="Whether :func:`split_patches` gave every patch a split.")

    def pixel_counts(self) -> dict:
        """``{class id: pixels}`` over the patches of the index (its ``n_<id>`` columns)."""
        return {i: int(self.index[column].sum()) for i, column in count_columns(self.index).items()}

    def valid(self, patch_ids, images) -> np.ndarray:
        """``(n, size, size)`` bool: where every band of the patches' ``images`` (as
        :meth:`read` returns them) holds data: not their scene's nodata, finite."""
        scenes = self.index.set_index("patch_id").loc[[str(p) for p in patch_ids], "scene"].to_numpy()
        valid = np.ones((len(images),) + images.shape[2:], bool)
        if images.dtype.kind == "f":  # NaN and inf are nodata, declared or not
            valid &= np.isfinite(images).all(axis=1)
        for scene in np.unique(scenes):
            rows = scenes == scene
            valid[rows] &= ~is_nodata(images[rows], self.scenes[scene]["nodata"]).any(axis=1)
        return valid

    def chosen(self, n, patch_ids=None, split=None, seed=0) -> list:
        """The ids of ``patch_ids``, or of ``n`` patches (of ``split``) drawn with ``seed``, in
        index order: the patches a figure shows."""
        if patch_ids is not None:
            return [patch_ids] if isinstance(patch_ids, str) else [str(p) for p in patch_ids]
        ids = self.ids(split)
        if not ids:
            raise InputError(f"no patches to plot (split={split!r})")
        pick = np.random.default_rng(int(seed)).choice(len(ids), size=min(int(n), len(ids)), replace=False)
        return [ids[i] for i in np.sort(pick)]

    def _check_ids(self, ids):
        missing = [p for p in ids if p not in self._rows.index]
        if missing:
            raise InputError(f"no patch(es) {missing[:5]} in {self.path}")
        return ids

    def window(self, patch_id) -> Window:
        """The patch's window in its scene (0-based pixel offsets)."""
        r = self.row(patch_id)
        return Window(int(r["col_off"]), int(r["row_off"]), int(r["width"]), int(r["height"]))

    def transform(self, patch_id) -> Affine:
        """The affine transform of the patch's upper-left pixel corner."""
        r = self.row(patch_id)
        t = Affine(*self.scenes[r["scene"]]["transform"])
        return t * Affine.translation(int(r["col_off"]), int(r["row_off"]))

    def crs(self, patch_id) -> CRS | None:
        """The CRS of the patch's scene (None for a plain image)."""
        wkt = self.scenes[self.row(patch_id)["scene"]]["crs"]
        return CRS.from_wkt(wkt) if wkt else None


def count_columns(table) -> dict:
    """``{class id: column}`` of an index's pixel counts per class (``n_<id>``)."""
    ids = sorted(int(c[2:]) for c in table.columns if re.fullmatch(r"n_\d+", c))
    return {i: f"n_{i}" for i in ids}


INDEX_COLUMNS = ("patch_id", "scene", "slot", "col_off", "row_off", "width", "height")


def _read_index(path):
    """``index.csv`` as a DataFrame, or a :class:`CorruptFileError` saying what is wrong."""
    if not path.exists():
        raise CorruptFileError(f"{path} is missing: the patch set is incomplete; make it again "
                               "with make_patches()")
    try:
        # only an empty cell is missing: a scene may be called "nan" or "NA"
        index = pd.read_csv(path, dtype={"patch_id": str, "scene": str}, keep_default_na=False,
                            na_values=[""])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CorruptFileError(f"{path} is not a patch table ({exc}); make the patch set again "
                               "with make_patches()") from exc
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise CorruptFileError(f"{path} lacks the column(s) {missing}; make the patch set again "
                               "with make_patches()")
    numeric = [c for c in INDEX_COLUMNS[2:] if len(index) and not pd.api.types.is_integer_dtype(index[c])]
    if numeric:
        raise CorruptFileError(f"{path}: column(s) {numeric} must hold whole numbers; the table is "
                               "damaged")
    return index


def _load_stack(path, n):
    """One ``.npy`` stack, memory-mapped read-only, checked against its recorded length."""
    try:
        stack = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise CorruptFileError(f"{path} is missing: the patch set is incomplete; make it again "
                               "with make_patches()") from None
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{path} is not a readable .npy stack ({exc}); make the patch set "
                               "again") from exc
    if n is not None and len(stack) != int(n):
        raise CorruptFileError(f"{path} holds {len(stack)} patches, patches.json says {n}")
    return stack


def as_patchset(patches) -> PatchSet:
    """``patches`` if it is a :class:`PatchSet`, else the patch folder it names, opened."""
    return patches if isinstance(patches, PatchSet) else PatchSet(patches)


def read_patch(patches, patch_id):
    """One patch and its mask, georeferenced.

    Args:
        patches: a patch folder (from :func:`make_patches`) or a :class:`PatchSet`.
        patch_id: the patch's id (column ``patch_id`` of the index).

    Returns:
        ``(image, mask)``, two :class:`rsunet.io.Raster`: the image patch (every band,
        native dtype; ``valid`` False where a band is nodata) and the uint8 mask
        (``valid`` False where it is the ignore value), both with the patch's transform
        and CRS.

    Raises:
        InputError: the folder is not a patch set or has no such patch.
    """
    ps = as_patchset(patches)
    images, masks = ps.read([str(patch_id)])
    image, mask, valid = images[0], masks[0], ps.valid([patch_id], images)[0]
    nodata = ps.scenes[ps.row(patch_id)["scene"]]["nodata"]
    t, crs = ps.transform(patch_id), ps.crs(patch_id)
    return (Raster(image, valid, t, crs, nodata),
            Raster(mask[np.newaxis], mask != ps.ignore_value, t, crs, ps.ignore_value))


# ---- cutting ----------------------------------------------------------------------------

def make_patches(images, masks, out_dir, size=128, stride=None, keep="all", min_labelled=0.0,
                 min_valid=0.5, edge="shift", overwrite=False, progress=True, cluster=None):
    """Cut scenes and their masks into georeferenced patches, stored for fast training.

    Args:
        images: a raster path or a list of them (any band count and dtype; every scene
            needs the same band count).
        masks: the matching mask path(s) from :func:`rsunet.make_mask`: single-band
            uint8 on the image's exact grid (255 = unknown).
        out_dir: the folder to write (see the module docstring for its layout).
        size: patch edge in pixels, a positive multiple of 32.
        stride: step between patches; ``size`` (no overlap) by default, smaller for
            overlapping patches.
        keep: which patches to keep: ``"all"``; ``"positive"`` (those containing at
            least one pixel of a class other than background 0, the course's "YES"
            patches); or a class id, class name or list of them (those containing any
            of these classes).
        min_labelled: keep only patches whose labelled fraction (mask not 255) is at
            least this (0 to 1).
        min_valid: drop patches whose fraction of valid image pixels (every band not
            nodata, inside the scene) is below this (0 to 1).
        edge: ``"shift"``, ``"pad"`` or ``"drop"``: what to do where the last window
            would leave the scene (see the module docstring).
        overwrite: replace an existing non-empty ``out_dir``.
        progress: show a progress bar over scenes.
        cluster: cut the scenes on a dask cluster, one task per scene (see
            :func:`rsunet.predict_raster`): the same patch set, byte for byte. Workers read
            the scenes and write beside ``out_dir`` under the same paths.

    Returns:
        The patch index (a pandas DataFrame, also written as ``out_dir/index.csv``):
        ``patch_id``, ``scene``, ``slot``, ``col_off``, ``row_off``, ``width``,
        ``height``, ``left``, ``bottom``, ``right``, ``top``, ``valid_fraction``,
        ``labelled_fraction`` and ``n_<class id>`` pixel counts.

    Raises:
        PatchSizeError: ``size`` is not a positive multiple of 32, or ``stride`` is not
            in 1..size.
        GridMismatchError: a mask is not on its image's grid.
        OutputExistsError: ``out_dir`` exists, is not empty, and ``overwrite`` is False.
        InputError: other bad arguments (counts of images and masks differ, ...).
    """
    from rsunet.cluster import check_spec

    check_spec(cluster)
    images, masks = _as_list(images, "images"), _as_list(masks, "masks")
    if len(images) != len(masks):
        raise InputError(f"{len(images)} images but {len(masks)} masks: give one mask per image")
    size, stride = _check_size(size, stride)
    if edge not in EDGES:
        raise InputError(f"edge must be one of {EDGES}, got {edge!r}")
    for name, v in (("min_labelled", min_labelled), ("min_valid", min_valid)):
        if not 0 <= float(v) <= 1:
            raise InputError(f"{name} must be between 0 and 1, got {v}")
    out_dir = Path(out_dir)
    check_not_input(out_dir, images + masks, replaces_folder=True)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
    try:
        wanted = _wanted_classes(keep, {})  # class ids need no mask opened ahead
    except InputError:
        wanted = _wanted_classes(keep, _classes_of(masks))  # class names do
    names = _scene_names(images)
    settings = CutSettings(size=size, stride=stride, edge=edge, wanted=wanted,
                           min_labelled=float(min_labelled), min_valid=float(min_valid))
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with writing(out_dir):  # reading errors are typed already: an OSError here is a write
            (tmp / "scenes").mkdir(parents=True)
            columns, scenes, tags = [], {}, []
            items = list(zip(names, images, masks))
            if cluster is not None:  # one task per scene, each writing its own stacks
                from rsunet.cluster import map_tasks

                cut = map_tasks(cluster, _cut_scene, items, (tmp, settings), "scenes",
                                reads=list(images) + list(masks), writes=[tmp])
            else:
                cut = (_cut_scene(*item, tmp, settings)
                       for item in _progress(items, progress, "scenes"))
            for (name, _, mask), (scene_columns, scenes[name], tag) in zip(items, cut):
                columns.append(scene_columns)
                tags.append((mask, tag))
            classes = _merge_classes(tags)
            _check_bands(scenes)
            index = _index_table(columns, classes)
            _check_not_empty(index, scenes, settings)
            meta = dict(format=FORMAT, size=size, stride=stride, edge=edge, keep=_jsonable(keep),
                        min_labelled=float(min_labelled), min_valid=float(min_valid),
                        classes={str(k): v for k, v in classes.items()}, ignore_value=IGNORE,
                        scenes=scenes)
            (tmp / "patches.json").write_text(json.dumps(meta, indent=1) + "\n")
            index.to_csv(tmp / "index.csv", index=False)
            _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return index


@dataclass(frozen=True)
class CutSettings:
    """How :func:`make_patches` cuts every scene: its checked arguments.

    Attributes:
        size: patch edge in pixels.
        stride: step between patch starts.
        edge: ``"shift"``, ``"pad"`` or ``"drop"``.
        wanted: which patches to keep by class: None (all), ``"positive"`` or a set of
            class ids (any of them present).
        min_labelled: the least labelled fraction of a kept patch.
        min_valid: the least valid fraction of a kept patch.
    """

    size: int
    stride: int
    edge: str
    wanted: object
    min_labelled: float
    min_valid: float


def _check_not_empty(index, scenes, settings):
    """No patch kept is an error that says why: the scenes are too small or the filters too strict."""
    if len(index):
        return
    size = settings.size
    small = [f"{name} ({s['width']}x{s['height']})" for name, s in scenes.items()
             if min(s["width"], s["height"]) < size]
    why = (f"the scene(s) {small} are smaller than size={size}: with edge='drop' they give no "
           "window, otherwise windows mostly of padding, which min_valid rejects" if small else
           f"no window passes the filters (keep, min_labelled={settings.min_labelled}, "
           f"min_valid={settings.min_valid})")
    raise EmptyResultError(f"no patch was kept: {why}; use a smaller size, edge='shift' or "
                           "looser filters")


def _as_list(x, what):
    if isinstance(x, (str, os.PathLike)):
        return [Path(x)]
    try:
        out = [Path(p) for p in x]
    except TypeError:
        raise InputError(f"{what} must be a path or a list of paths, got {x!r}") from None
    if not out:
        raise InputError(f"{what} is empty")
    return out


def _check_size(size, stride):
    try:
        size = int(size)
        stride = size if stride is None else int(stride)
    except (TypeError, ValueError):
        raise PatchSizeError(f"size and stride must be whole numbers, got {size!r}, {stride!r}") from None
    if size <= 0 or size % MULTIPLE:
        lower = max(MULTIPLE, size // MULTIPLE * MULTIPLE)
        raise PatchSizeError(f"size must be a positive multiple of {MULTIPLE} (the U-Net halves it "
                             f"5 times), got {size}; try {lower} or {lower + MULTIPLE}")
    if not 0 < stride <= size:
        raise PatchSizeError(f"stride must be between 1 and size ({size}), got {stride}")
    return size, stride


def _classes_of(masks) -> dict:
    """The union of the masks' recorded classes ({id: name}); background 0 always."""
    recorded = []
    for m in masks:
        with open_raster(m) as src:
            recorded.append((m, src.tags().get(CLASSES_TAG)))
    return _merge_classes(recorded)


def _merge_classes(recorded) -> dict:
    """{id: name} from (mask, RSUNET_CLASSES tag or None) pairs; a clash is an InputError."""
    classes = {0: "background"}
    for m, tag in recorded:
        for k, v in (json.loads(tag).items() if tag else []):
            k = int(k)
            if k in classes and classes[k] != v and k != 0:
                raise InputError(f"class {k} is {classes[k]!r} in one mask and {v!r} in {m}: "
                                 "make the masks with the same classes mapping")
            classes[k] = v
    return dict(sorted(classes.items()))


def _wanted_classes(keep, classes):
    """None for keep='all', else the set of class ids a kept patch must contain."""
    if isinstance(keep, str) and keep == "all":
        return None
    if isinstance(keep, str) and keep == "positive":
        return "positive"
    items = list(keep) if isinstance(keep, (list, tuple, set, np.ndarray)) else [keep]
    by_name = {v: k for k, v in classes.items()}
    ids = set()
    for item in items:
        if isinstance(item, str) and item in by_name:
            ids.add(by_name[item])
        elif isinstance(item, (int, np.integer, float)) and float(item).is_integer() and 0 <= item < IGNORE:
            ids.add(int(item))
        else:
            raise InputError(f"keep must be 'all', 'positive', or class ids/names among "
                             f"{classes}; got {item!r}")
    return ids


def _scene_names(images):
    names, seen = [], {}
    for p in images:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem) or "scene"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def _progress(items, progress, unit):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, unit=unit[:-1] if unit.endswith("s") else unit, desc="patches")


def _cut_scene(name, image, mask, tmp, settings):
    """Write one scene's kept patches into its two stacks.

    Returns:
        (the scene's index columns, its patches.json metadata, the mask's RSUNET_CLASSES tag).
    """
    size, stride, edge = settings.size, settings.stride, settings.edge
    with open_raster(image) as src, open_raster(mask) as msrc:
        _check_grid(src, msrc, image, mask)
        rows_off = window_offsets(src.height, size, stride, edge)
        cols_off = np.array(window_offsets(src.width, size, stride, edge), dtype=np.int64)
        files = dict(images_file=f"scenes/{name}.images.npy", masks_file=f"scenes/{name}.masks.npy")
        strips = _Strips(src, msrc, size, cols_off)
        n_max, parts, values = len(rows_off) * len(cols_off), [], set()
        with _NpyStack(tmp / files["images_file"], src.dtypes[0], (src.count, size, size), n_max) as imgs, \
                _NpyStack(tmp / files["masks_file"], np.uint8, (size, size), n_max) as msks:
            for row_off in rows_off:
                data, valid, labels = strips.read(row_off)
                stats = _window_stats(valid, labels, cols_off, size, values)
                kept = np.flatnonzero(_kept(stats, settings))
                if not len(kept):
                    continue
                parts.append(dict(slot=np.arange(imgs.n, imgs.n + len(kept)), col_off=cols_off[kept],
                                  row_off=np.full(len(kept), row_off, np.int64),
                                  **{k: v[kept] for k, v in stats.items()}))
                imgs.write(strips.gather(data, kept, strips.image_stack))
                msks.write(strips.gather(labels[np.newaxis], kept, strips.mask_stack)[:, 0])
        meta = dict(image=str(Path(image).resolve()), mask=str(Path(mask).resolve()),
                    crs=src.crs.to_wkt() if src.crs else None, transform=list(src.transform)[:6],
                    width=src.width, height=src.height, bands=src.count, dtype=src.dtypes[0],
                    nodata=src.nodata, n=imgs.n, **files,
                    percentiles=dict(q=list(SCENE_PERCENTILES), values=strips.percentiles().tolist()))
        tag = msrc.tags().get(CLASSES_TAG)
    return _scene_columns(name, parts, size, meta["transform"]), meta, tag


def _check_grid(src, msrc, image, mask):
    if not same_grid(src, msrc):
        raise GridMismatchError(
            f"mask {mask} ({msrc.width}x{msrc.height}, {msrc.crs}) is not on the grid of "
            f"{image} ({src.width}x{src.height}, {src.crs}); make it with make_mask(image, labels, out)")
    if msrc.count != 1 or msrc.dtypes[0] != "uint8":
        raise GridMismatchError(f"mask {mask} must be one uint8 band, has {msrc.count} {msrc.dtypes[0]}")
    if len(set(src.dtypes)) != 1:
        raise InputError(f"{image} mixes band dtypes {set(src.dtypes)}; patches need one dtype")


class _Strips:
    """Reads a scene ``size`` rows at a time over its (padded) width, into reused buffers.

    One read per strip and file instead of one per patch; the patches are sliced out.
    The strips' pixels also give the scene's band percentiles (what
    :func:`rsunet.normalization.band_percentiles` returns, bit for bit) without reading the scene a
    second time: each scene row is counted once, and rows no strip reached are read at
    the end. A scene too large for band_percentiles to read whole gets its sampled read.
    """

    def __init__(self, src, msrc, size, cols_off):
        self.src, self.msrc, self.size = src, msrc, size
        self.cols_off = cols_off
        self.width = max(src.width, int(cols_off[-1]) + size if len(cols_off) else 0)
        self.indexes = list(range(1, src.count + 1))
        self.scene = Window(0, 0, src.width, src.height)
        # where no band has a mask or nodata, every pixel inside the scene is valid
        # (a float band may hold NaN or inf, nodata whatever the flags say)
        self.plain = all(f == [rasterio.enums.MaskFlags.all_valid] for f in src.mask_flag_enums) \
            and np.dtype(src.dtypes[0]).kind != "f"
        self.data = np.empty((src.count, size, self.width), src.dtypes[0])
        self.labels = np.empty((size, self.width), np.uint8)
        self.image_stack = np.empty((len(cols_off), src.count, size, size), src.dtypes[0])
        self.mask_stack = np.empty((len(cols_off), 1, size, size), np.uint8)
        self.values = BandValues(src.count, src.dtypes[0]) if reads_whole(src) else None
        self.counted = 0  # scene rows [0, counted) are in self.values

    def read(self, row_off):
        """(data, valid or None when every pixel is, labels: 255 where invalid or outside)."""
        window = Window(0, row_off, self.width, self.size)
        inside = window_intersection(window, self.scene)
        if self.plain and inside == window:
            with reading(self.src):
                data, valid = self.src.read(self.indexes, window=window, out=self.data), None
        else:
            data, valid = read_padded(self.src, self.indexes, window, inside)
        labels = self.labels
        if inside != window:
            labels.fill(IGNORE)  # outside the scene the class is unknown, whatever the mask's nodata
        r0 = int(inside.row_off) - row_off
        with reading(self.msrc):
            self.msrc.read(1, window=inside, out=labels[r0:r0 + int(inside.height), :int(inside.width)])
        if valid is not None:
            labels[~valid] = IGNORE
        self._count(row_off, data, valid)
        return data, valid, labels

    def _count(self, row_off, data, valid):
        """Add the strip's scene rows not counted yet (strips overlap when stride < size)."""
        end = min(row_off + self.size, self.src.height)
        if self.values is None or end <= self.counted:
            return
        rows = slice(max(self.counted, row_off) - row_off, end - row_off)
        cols = slice(0, self.src.width)
        self.values.add(data[:, rows, cols], None if valid is None else valid[rows, cols])
        self.counted = end

    def percentiles(self):
        """The scene's band percentiles (2, 98 %), as :func:`rsunet.normalization.band_percentiles`."""
        if self.values is None:
            return band_percentiles(self.src)
        if self.counted < self.src.height:  # edge="drop" leaves the last rows uncut
            rest = Window(0, self.counted, self.src.width, self.src.height - self.counted)
            self.values.add(*read_padded(self.src, self.indexes, rest, rest))
        return self.values.percentiles(SCENE_PERCENTILES, self.src.name)

    def gather(self, strip, kept, stack):
        """The kept windows of a (bands, size, width) strip, copied into one (n, bands, size, size) stack."""
        out = stack[:len(kept)]
        for j, c in enumerate(self.cols_off[kept]):
            out[j] = strip[:, :, c:c + self.size]
        return out


class _NpyStack:
    """A ``.npy`` file of shape ``(n, *item_shape)`` written block by block; n is set on close.

    Sequential writes, not a memory map: mapping a new file costs a page fault per 4 KiB
    and, when fewer patches are kept than windows exist, a copy to shrink it. numpy pads
    the header for the first axis to grow in place, so the final header fits exactly.
    """

    def __init__(self, path, dtype, item_shape, n_max):
        self.dtype, self.item_shape, self.n = np.dtype(dtype), tuple(item_shape), 0
        self.file = open(path, "wb")
        self.offset = self._write_header(n_max)

    def _write_header(self, n):
        self.file.seek(0)
        descr = np.lib.format.dtype_to_descr(self.dtype)
        np.lib.format.write_array_header_1_0(
            self.file, dict(descr=descr, fortran_order=False, shape=(n,) + self.item_shape))
        return self.file.tell()

    def write(self, block):
        self.file.write(np.ascontiguousarray(block, self.dtype).data)
        self.n += len(block)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is None and self._write_header(self.n) != self.offset:
                raise RuntimeError("numpy's .npy header changed length; cannot finish the stack")
        finally:
            self.file.close()


def _window_stats(valid, labels, col_offs, size, values):
    """Per window of a strip: valid_fraction, labelled_fraction, counts (windows x 256).

    Per-column sums of the strip, prefix-summed, give every window's sums in one pass
    whatever the overlap, instead of one histogram per patch. ``values`` (a set, updated)
    are the label values met so far: counting those first, a full histogram of the strip
    is needed only where they do not account for every pixel.
    """
    def window_sums(per_column):
        prefix = np.concatenate(([0], np.cumsum(per_column, dtype=np.int64)))
        return prefix[col_offs + size] - prefix[col_offs]

    per_value = {v: (labels == v).sum(axis=0, dtype=np.int32) for v in sorted(values)}
    if not values or (sum(per_value.values()) != labels.shape[0]).any():
        values.update(int(v) for v in np.flatnonzero(np.bincount(labels.ravel(), minlength=256)))
        per_value.update({v: (labels == v).sum(axis=0, dtype=np.int32) for v in values - set(per_value)})
    total = size * size
    counts = np.zeros((len(col_offs), 256), np.int64)
    for value, per_column in per_value.items():
        counts[:, value] = window_sums(per_column)
    if valid is None:
        n_valid = np.full(len(col_offs), total)
    else:
        n_valid = window_sums(valid.sum(axis=0, dtype=np.int32))
    return dict(valid_fraction=n_valid / total, labelled_fraction=(total - counts[:, IGNORE]) / total,
                counts=counts)


def _kept(stats, settings):
    """Which windows pass the filters (a bool array)."""
    counts = stats["counts"]
    ok = (stats["valid_fraction"] >= settings.min_valid) & \
        (stats["labelled_fraction"] >= settings.min_labelled)
    wanted = settings.wanted
    if wanted is None:
        return ok
    if wanted == "positive":
        return ok & counts[:, 1:IGNORE].any(axis=1)
    return ok & counts[:, sorted(wanted)].any(axis=1)


def _scene_columns(scene, parts, size, coefs):
    """The scene's index columns (arrays) from its strips' kept windows."""
    if not parts:  # typed empty columns
        none = np.zeros(0, np.int64)
        parts = [dict(slot=none, col_off=none, row_off=none, valid_fraction=np.zeros(0),
                      labelled_fraction=np.zeros(0), counts=np.zeros((0, 256), np.int64))]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    c, r = cols["col_off"], cols["row_off"]
    a, b, x0, d, e, y0 = coefs
    left, top = a * c + b * r + x0, d * c + e * r + y0
    right, bottom = left + a * size + b * size, top + d * size + e * size
    n = len(c)
    return dict(patch_id=[f"{scene}_r{i}_c{j}" for i, j in zip(r.tolist(), c.tolist())],
                scene=[scene] * n, slot=cols["slot"], col_off=c, row_off=r,
                width=np.full(n, size, np.int64), height=np.full(n, size, np.int64),
                left=np.minimum(left, right), bottom=np.minimum(top, bottom),
                right=np.maximum(left, right), top=np.maximum(top, bottom),
                valid_fraction=cols["valid_fraction"], labelled_fraction=cols["labelled_fraction"],
                counts=cols["counts"])


def _check_bands(scenes):
    kinds = {name: f"{s['bands']} x {s['dtype']}" for name, s in scenes.items()}
    if len(set(kinds.values())) > 1:
        raise InputError(f"scenes differ in bands/dtype ({kinds}): one patch set needs one "
                         "band layout; make one patch set per sensor")


def _index_table(scenes, classes):
    """The index DataFrame from every scene's columns; n_<id> for the classes and any seen id."""
    counts = np.concatenate([s["counts"] for s in scenes])
    seen = np.flatnonzero(counts.any(axis=0))
    ids = sorted(set(classes) | {int(i) for i in seen if i != IGNORE})
    columns = ["patch_id", "scene", "slot", "col_off", "row_off", "width", "height", "left",
               "bottom", "right", "top", "valid_fraction", "labelled_fraction"]
    text = ("patch_id", "scene")
    data = {k: np.concatenate([np.asarray(s[k], dtype=object if k in text else None) for s in scenes])
            for k in columns}
    data.update({f"n_{i}": counts[:, i] for i in ids})
    return pd.DataFrame(data, columns=columns + [f"n_{i}" for i in ids])


def _jsonable(x):
    if isinstance(x, (list, tuple, set, np.ndarray)):
        return [_jsonable(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def _replace_dir(tmp, out_dir):
    """Put the finished folder in place; an old one is removed only now."""
    if out_dir.exists():
        shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
    os.replace(tmp, out_dir)


# ---- looking at a patch set -----------------------------------------------------------------

def patch_grid(patches, out=None, crs=None, overwrite=False):
    """The patch footprints as polygons (with split and class counts), for a map.

    Args:
        patches: a patch folder or a :class:`PatchSet`.
        out: a GeoPackage to write (optional).
        crs: the CRS to put every footprint in; by default the first scene's (scenes in
            another CRS are reprojected).
        overwrite: replace an existing ``out``.

    Returns:
        A GeoDataFrame, one polygon per patch, with the index's columns.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    import geopandas as gpd
    from shapely.geometry import box

    check_not_input(out, patches)
    ps = as_patchset(patches)
    parts = []
    for scene, rows in ps.index.groupby("scene", sort=False):
        wkt = ps.scenes[scene]["crs"]
        geoms = [box(*b) for b in rows[["left", "bottom", "right", "top"]].to_numpy()]
        parts.append(gpd.GeoDataFrame(rows, geometry=geoms, crs=CRS.from_wkt(wkt) if wkt else None))
    target = crs or next((p.crs for p in parts if p.crs is not None), None)
    parts = [p.to_crs(target) if p.crs is not None and target is not None else p for p in parts]
    grid = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=target)
    if out is not None:
        write_vector(grid, out, layer="patches", overwrite=overwrite)
    return grid


def class_balance(patches, by="split"):
    """Pixels and patches per class, per split (or any index column), as a table.

    Args:
        patches: a patch folder, a :class:`PatchSet` or an index DataFrame.
        by: the column to group by (``"split"``; falls back to ``"all"`` when the index
            has no such column, e.g. before :func:`split_patches`).

    Returns:
        A DataFrame with one row per group and class: ``group``, ``class_id``,
        ``class``, ``pixels``, ``fraction`` (of the group's labelled pixels),
        ``patches`` (patches holding the class) and ``n_patches`` (in the group).
    """
    if isinstance(patches, pd.DataFrame):
        table, names = patches, {}
    else:
        ps = as_patchset(patches)
        table, names = ps.index, ps.classes
    ids = list(count_columns(table))
    groups = table[by].astype(str) if by in table.columns else pd.Series("all", index=table.index)
    out = []
    for group, rows in table.groupby(groups.to_numpy(), sort=True):
        pixels = {i: int(rows[f"n_{i}"].sum()) for i in ids}
        total = sum(pixels.values())
        for i in ids:
            out.append(dict(group=group, class_id=i, **{"class": names.get(i, str(i))},
                            pixels=pixels[i], fraction=pixels[i] / total if total else 0.0,
                            patches=int((rows[f"n_{i}"] > 0).sum()), n_patches=len(rows)))
    return pd.DataFrame(out, columns=["group", "class_id", "class", "pixels", "fraction",
                                      "patches", "n_patches"])


def plot_patches(patches, out=None, n=8, patch_ids=None, split=None, bands=None, alpha=0.4, seed=0,
                 overwrite=False):
    """A figure of sample patches with their mask overlaid (a PNG when ``out`` is given).

    Each patch is shown twice: the image (three bands, or one in grey, each stretched
    to its 2-98 % percentiles) and the image with the mask in colour on top (ignore
    pixels transparent).

    Args:
        patches: a patch folder or a :class:`PatchSet`.
        out: the PNG to write (None: write nothing).
        n: how many patches (chosen at random with ``seed``) when ``patch_ids`` is None.
        patch_ids: the patches to show.
        split: choose only among this split's patches (after :func:`split_patches`).
        bands: 1-based bands to show as RGB (the first three by default).
        alpha: mask opacity.
        seed: random seed of the choice.
        overwrite: replace an existing ``out``.

    Returns:
        The :class:`matplotlib.figure.Figure` (the global matplotlib backend is untouched).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    import matplotlib.patches

    from rsunet.plotting import new_figure, save_figure

    check_not_input(out, patches)
    ps = as_patchset(patches)
    ids = ps.chosen(n, patch_ids, split, seed)
    images, masks = ps.read(ids)
    bands = [b - 1 for b in (bands or range(1, min(ps.bands, 3) + 1))]
    k = max(ps.classes) + 1 if ps.classes else 2
    cmap = class_colormap(k)
    fig = new_figure(figsize=(2.2 * len(ids), 4.6))
    axes = fig.subplots(2, len(ids), squeeze=False)
    for j, pid in enumerate(ids):
        rgb = stretch(images[j][bands], ps.scenes[ps.row(pid)["scene"]]["nodata"])
        for ax in axes[:, j]:
            ax.imshow(rgb if rgb.shape[-1] == 3 else rgb[..., 0], cmap=None if rgb.shape[-1] == 3 else "gray")
            ax.set_axis_off()
        shown = np.ma.masked_equal(masks[j], ps.ignore_value)
        axes[1, j].imshow(shown, cmap=cmap, vmin=-0.5, vmax=k - 0.5, alpha=alpha, interpolation="nearest")
        axes[0, j].set_title(pid, fontsize=6)
    handles = [matplotlib.patches.Patch(color=cmap(i), label=f"{i} {name}") for i, name in ps.classes.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7)
    return save_figure(fig, out, overwrite)
