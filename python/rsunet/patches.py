"""Georeferenced patch sets: cut scenes and masks into patches, split them, look at them.

The course wrote each 128x128 patch as a PNG pair (at most 4 bands, coordinates lost).
:func:`make_patches` keeps every band in its native dtype and every patch's place on
Earth, and writes one memory-mapped ``.npy`` stack per scene and per kind (images,
masks) plus an index table: writing is a sequential copy, and training reads any batch
without opening a file per patch. The folder layout is the contract in
``docs/architecture.md``::

    out_dir/patches.json                 size, classes, ignore value, per-scene georeferencing
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

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from rsunet.errors import GridMismatchError, InputError, OutputExistsError, PatchSizeError
from rsunet.io import Raster, _intersection, _read_padded, atomic_path, open_raster

__all__ = ["PatchSet", "make_patches", "read_patch", "split_patches", "patch_grid",
           "class_balance", "plot_patches", "window_offsets", "FORMAT", "EDGES", "SPLITS"]

FORMAT = "rsunet-patches/1"
EDGES = ("shift", "pad", "drop")
SPLITS = ("train", "validation", "test")
IGNORE = 255
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
        self.meta = json.loads(meta_file.read_text())
        if self.meta.get("format") != FORMAT:
            raise InputError(f"{meta_file} has format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.index = pd.read_csv(self.path / "index.csv", dtype={"patch_id": str, "scene": str})
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

    def row(self, patch_id) -> pd.Series:
        """The index row of one patch."""
        try:
            return self.index.iloc[int(self._rows[str(patch_id)])]
        except KeyError:
            raise InputError(f"no patch {patch_id!r} in {self.path}") from None

    def stacks(self, scene):
        """The scene's (images, masks) stacks, memory-mapped read-only."""
        if scene not in self._stacks:
            s = self.scenes[scene]
            self._stacks[scene] = (
                np.load(self.path / s["images_file"], mmap_mode="r"),
                np.load(self.path / s["masks_file"], mmap_mode="r"),
            )
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


def _as_patchset(patches) -> PatchSet:
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
    ps = _as_patchset(patches)
    images, masks = ps.read([str(patch_id)])
    scene = ps.scenes[ps.row(patch_id)["scene"]]
    image, mask = images[0], masks[0]
    nodata = scene["nodata"]
    valid = np.ones(mask.shape, bool) if nodata is None else ~np.any(_is_nodata(image, nodata), axis=0)
    t, crs = ps.transform(patch_id), ps.crs(patch_id)
    return (Raster(image, valid, t, crs, nodata),
            Raster(mask[np.newaxis], mask != ps.ignore_value, t, crs, ps.ignore_value))


def _is_nodata(a, nodata):
    return np.isnan(a) if np.isnan(nodata) else a == nodata


# ---- cutting ----------------------------------------------------------------------------

def window_offsets(length, size, stride, edge="shift"):
    """Start offsets of windows along one axis.

    Args:
        length: the axis length in pixels.
        size: window length.
        stride: step between window starts.
        edge: ``"shift"``, ``"pad"`` or ``"drop"`` (see the module docstring).

    Returns:
        A sorted list of int offsets (may be empty for ``"drop"``).
    """
    full = list(range(0, length - size + 1, stride))
    if edge == "drop":
        return full
    if edge == "shift" and length >= size:
        if full[-1] + size < length:
            full.append(length - size)
        return full
    offsets = [0]  # pad (or shift on a scene smaller than a window)
    while offsets[-1] + size < length:
        offsets.append(offsets[-1] + stride)
    return offsets


def make_patches(images, masks, out_dir, size=128, stride=None, keep="all", min_labelled=0.0,
                 min_valid=0.5, edge="shift", overwrite=False, progress=True):
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
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
    classes = _classes_of(masks)
    wanted = _wanted_classes(keep, classes)
    names = _scene_names(images)
    params = dict(size=size, stride=stride, edge=edge, wanted=wanted,
                  min_labelled=float(min_labelled), min_valid=float(min_valid))
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        (tmp / "scenes").mkdir(parents=True)
        rows, scenes = [], {}
        for name, image, mask in _progress(list(zip(names, images, masks)), progress, "scenes"):
            scene_rows, scenes[name] = _cut_scene(name, image, mask, tmp, params)
            rows.extend(scene_rows)
        _check_bands(scenes)
        index = _index_table(rows, classes)
        meta = dict(format=FORMAT, size=size, stride=stride, edge=edge, keep=_jsonable(keep),
                    min_labelled=float(min_labelled), min_valid=float(min_valid),
                    classes={str(k): v for k, v in classes.items()}, ignore_value=IGNORE,
                    scenes=scenes)
        (tmp / "patches.json").write_text(json.dumps(meta, indent=1) + "\n")
        index.to_csv(tmp / "index.csv", index=False)
        _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return index


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
    classes = {0: "background"}
    for m in masks:
        with open_raster(m) as src:
            recorded = src.tags().get("RSUNET_CLASSES")
        for k, v in (json.loads(recorded).items() if recorded else []):
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


def _cut_scene(name, image, mask, tmp, params):
    """Write one scene's kept patches into its two stacks; return (index rows, metadata)."""
    size, stride, edge = params["size"], params["stride"], params["edge"]
    with open_raster(image) as src, open_raster(mask) as msrc:
        _check_grid(src, msrc, image, mask)
        rows_off = window_offsets(src.height, size, stride, edge)
        cols_off = window_offsets(src.width, size, stride, edge)
        n_max = len(rows_off) * len(cols_off)
        files = dict(images_file=f"scenes/{name}.images.npy", masks_file=f"scenes/{name}.masks.npy")
        imgs = np.lib.format.open_memmap(tmp / files["images_file"], "w+", src.dtypes[0],
                                         (n_max, src.count, size, size))
        msks = np.lib.format.open_memmap(tmp / files["masks_file"], "w+", np.uint8, (n_max, size, size))
        indexes = list(range(1, src.count + 1))
        full = Window(0, 0, src.width, src.height)
        rows, n = [], 0
        for row_off in rows_off:
            # one strip of `size` rows, the scene's (padded) width: read once, sliced per patch
            strip_w = Window(0, row_off, max(src.width, cols_off[-1] + size), size)
            inside = _intersection(strip_w, full)
            data, valid = _read_padded(src, indexes, strip_w, inside)
            labels = _read_padded(msrc, [1], strip_w, inside)[0][0]
            labels[~valid] = IGNORE
            for col_off in cols_off:
                cols = slice(col_off, col_off + size)
                stats = _patch_stats(valid[:, cols], labels[:, cols])
                if not _kept(stats, params):
                    continue
                imgs[n] = data[:, :, cols]
                msks[n] = labels[:, cols]
                rows.append(dict(_place(name, n, col_off, row_off, size, src.transform), **stats))
                n += 1
        imgs.flush(), msks.flush()
        del imgs, msks
        if n < n_max:
            _truncate_stacks(tmp, files, n)
        meta = dict(image=str(Path(image).resolve()), mask=str(Path(mask).resolve()),
                    crs=src.crs.to_wkt() if src.crs else None, transform=list(src.transform)[:6],
                    width=src.width, height=src.height, bands=src.count, dtype=src.dtypes[0],
                    nodata=src.nodata, n=n, **files)
    return rows, meta


def _check_grid(src, msrc, image, mask):
    same = (src.width, src.height) == (msrc.width, msrc.height) and \
        src.transform.almost_equals(msrc.transform) and src.crs == msrc.crs
    if not same:
        raise GridMismatchError(
            f"mask {mask} ({msrc.width}x{msrc.height}, {msrc.crs}) is not on the grid of "
            f"{image} ({src.width}x{src.height}, {src.crs}); make it with make_mask(image, labels, out)")
    if msrc.count != 1 or msrc.dtypes[0] != "uint8":
        raise GridMismatchError(f"mask {mask} must be one uint8 band, has {msrc.count} {msrc.dtypes[0]}")
    if len(set(src.dtypes)) != 1:
        raise InputError(f"{image} mixes band dtypes {set(src.dtypes)}; patches need one dtype")


def _patch_stats(valid, labels):
    counts = np.bincount(labels.ravel(), minlength=256)
    total = labels.size
    return dict(valid_fraction=float(valid.sum()) / total,
                labelled_fraction=float(total - counts[IGNORE]) / total,
                counts=counts)


def _kept(stats, params):
    if stats["valid_fraction"] < params["min_valid"] or stats["labelled_fraction"] < params["min_labelled"]:
        return False
    wanted, counts = params["wanted"], stats["counts"]
    if wanted is None:
        return True
    if wanted == "positive":
        return bool(counts[1:IGNORE].any())
    return any(counts[c] > 0 for c in wanted)


def _place(scene, slot, col_off, row_off, size, transform):
    t = transform * Affine.translation(col_off, row_off)
    left, top = t.c, t.f
    right, bottom = t * (size, size)
    return dict(patch_id=f"{scene}_r{row_off}_c{col_off}", scene=scene, slot=slot,
                col_off=col_off, row_off=row_off, width=size, height=size,
                left=min(left, right), bottom=min(top, bottom),
                right=max(left, right), top=max(top, bottom))


def _truncate_stacks(tmp, files, n):
    """Copy the first n patches of over-allocated stacks into exact-size ones."""
    for key in ("images_file", "masks_file"):
        path = tmp / files[key]
        big = np.load(path, mmap_mode="r")
        small_path = path.with_name(path.name + ".tmp")
        small = np.lib.format.open_memmap(small_path, "w+", big.dtype, (n,) + big.shape[1:])
        for start in range(0, n, 256):
            stop = min(start + 256, n)
            small[start:stop] = big[start:stop]
        small.flush()
        del small, big
        os.replace(small_path, path)


def _check_bands(scenes):
    kinds = {(s["bands"], s["dtype"]) for s in scenes.values()}
    if len(kinds) > 1:
        raise InputError(f"scenes differ in bands/dtype {sorted(kinds)}: one patch set needs one "
                         "band layout; make one patch set per sensor")


def _index_table(rows, classes):
    seen = np.zeros(256, bool)
    for r in rows:
        seen |= r["counts"] > 0
    ids = sorted(set(classes) | {int(i) for i in np.flatnonzero(seen) if i != IGNORE})
    records = []
    for r in rows:
        counts = r.pop("counts")
        records.append(dict(r, **{f"n_{i}": int(counts[i]) for i in ids}))
    columns = ["patch_id", "scene", "slot", "col_off", "row_off", "width", "height", "left",
               "bottom", "right", "top", "valid_fraction", "labelled_fraction"] + [f"n_{i}" for i in ids]
    return pd.DataFrame.from_records(records, columns=columns)


def _jsonable(x):
    if isinstance(x, (list, tuple, set, np.ndarray)):
        return [_jsonable(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def _replace_dir(tmp, out_dir):
    """Put the finished folder in place; an old one is removed only now."""
    if out_dir.exists():
        shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
    os.replace(tmp, out_dir)
