"""Reference data to masks: polygons or label rasters become a uint8 mask on the image grid.

The mask is the contract between samples and patches (``docs/architecture.md``): one
uint8 band on the image's exact grid (CRS, transform, size), background 0, classes 1..N,
255 for unknown pixels, and the class names recorded in the GeoTIFF's tags
(``RSUNET_CLASSES``, ``RSUNET_IGNORE``, and ``RSUNET_VALUE_MAP``: raw label value ->
class id).

Vector labels are reprojected to the image's CRS (geopandas) and burnt with
:func:`rasterio.features.rasterize`, ``all_touched=False`` (a pixel belongs to a polygon
when its centre does), in feature order (a later feature wins where polygons overlap):
the result is what ``gdal_rasterize`` makes. Label rasters on another grid are resampled
to the image's by nearest neighbour; a plain image without georeferencing (a PNG mask)
must have the image's size and is taken to lie on the image's grid.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from rsunet.errors import ClassFieldError, GridMismatchError, InputError, NoOverlapError
from rsunet.io import check_not_input, open_raster, write_raster

__all__ = ["make_mask", "VECTOR_SUFFIXES", "IGNORE"]

IGNORE = 255
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")
UNLABELLED = ("background", "ignore")
# names that map to the two reserved values when a `classes` mapping uses names
RESERVED = {"background": 0, "ignore": IGNORE, "unknown": IGNORE}


def make_mask(image, labels, out, field=None, classes=None, unlabelled="background",
              name_field=None, background="background", overwrite=False):
    """Make a label mask (uint8 GeoTIFF) on an image's exact grid.

    Args:
        image: the image raster; the mask gets its CRS, transform and size.
        labels: a vector file (shapefile, GeoPackage, GeoJSON, ...; any CRS: reprojected
            to the image's) or a GeoDataFrame; or a label raster: georeferenced (any
            grid: resampled by nearest neighbour) or a plain image of the image's size
            without georeferencing (e.g. a PNG mask).
        out: the mask GeoTIFF to write.
        field: the vector attribute holding each feature's class (numbers, or strings
            such as ``"1"`` or ``"forest"``); None burns every feature as class 1.
            Ignored for label rasters.
        classes: optional mapping from raw label values (field values or raster values)
            to a class id (0..254, 255 = ignore) or to a class name. With names,
            ``"background"`` is 0, ``"ignore"``/``"unknown"`` is 255 and the other names
            get ids 1, 2, ... in the mapping's order. E.g. the Amazon PNG masks (1 =
            forest, 2 = non-forest): ``{1: "forest", 2: "background"}``. Without it,
            numeric values (also numeric strings) are the class ids (255 = ignore) and
            other strings get ids 1..N in sorted order, named after themselves.
        unlabelled: ``"background"`` (pixels no label covers are class 0) or
            ``"ignore"`` (they are unknown, 255: for sparse training polygons).
        name_field: optional vector attribute with class names (e.g. ``"class"`` beside
            ``"class_id"``), recorded in the mask's class table.
        background: the name of class 0 in the class table (and so in every table and
            figure made from the mask), e.g. ``"non-forest"`` for the Amazon masks whose
            value 2 maps to ``"background"``.
        overwrite: replace an existing ``out``.

    Returns:
        A dict: ``path`` (the mask written), ``classes`` (``{"id": name}``, as
        recorded in the tag ``RSUNET_CLASSES``), ``value_map`` (``{raw value: class id}``
        as strings -> ints) and ``counts`` (``{"id": pixel count}``, 255 included).

    Raises:
        NoOverlapError: no label touches the image.
        GridMismatchError: a non-georeferenced label raster differs from the image in
            size, or one of the two is georeferenced and the other not.
        ClassFieldError: ``field`` or ``name_field`` is missing, or some values are not
            in ``classes`` or not valid class ids.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    if unlabelled not in UNLABELLED:
        raise InputError(f"unlabelled must be one of {UNLABELLED}, got {unlabelled!r}")
    fill = 0 if unlabelled == "background" else IGNORE
    check_not_input(out, [image, labels])
    if not isinstance(background, str) or not background.strip():
        raise InputError(f"background must be the name of class 0, a non-empty string; got {background!r}")
    with open_raster(image) as src:
        grid = dict(height=src.height, width=src.width, transform=src.transform, crs=src.crs)
    if _is_vector(labels):
        mask, value_map, names = _from_vector(labels, grid, field, classes, name_field, fill)
    else:
        mask, value_map, names = _from_raster(labels, grid, classes, fill)
    table = _class_table(value_map, names, background.strip())
    tags = dict(RSUNET_CLASSES=json.dumps(table), RSUNET_IGNORE=str(IGNORE),
                RSUNET_VALUE_MAP=json.dumps(value_map), RSUNET_UNLABELLED=unlabelled)
    path = write_raster(out, mask, grid["transform"], grid["crs"], nodata=IGNORE,
                        overwrite=overwrite, tags=tags, band_names=["class"])
    counts = np.bincount(mask.ravel(), minlength=256)
    return dict(path=str(path), classes=table, value_map=value_map,
                counts={str(i): int(c) for i, c in enumerate(counts) if c})


def _is_vector(labels) -> bool:
    if hasattr(labels, "geometry"):
        return True
    return Path(os.fspath(labels)).suffix.lower() in VECTOR_SUFFIXES


# ---- vector labels -----------------------------------------------------------------------

def _from_vector(labels, grid, field, classes, name_field, fill):
    import geopandas as gpd
    from rasterio.features import rasterize
    from shapely.geometry import box

    gdf = labels if hasattr(labels, "geometry") else _read_vector(labels)
    source = "the labels" if hasattr(labels, "geometry") else str(labels)
    if not len(gdf) or gdf.geometry.isna().all() or gdf.geometry.is_empty.all():
        raise NoOverlapError(f"{source} holds no features: nothing to burn into a mask")
    for f in (field, name_field):
        if f is not None and f not in gdf.columns:
            raise ClassFieldError(f"labels have no field {f!r}; fields: "
                                  f"{[c for c in gdf.columns if c != gdf.geometry.name]}")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = _to_image_crs(gdf, grid["crs"], source)
    height, width, transform = grid["height"], grid["width"], grid["transform"]
    extent = box(*rasterio.transform.array_bounds(height, width, transform))
    if not len(gdf) or not gdf.intersects(extent).any():
        raise NoOverlapError(
            f"no label polygon of {source} overlaps the image (labels' bounds {list(gdf.total_bounds)} in the "
            f"image CRS; image bounds {list(extent.bounds)}): are they for this scene?")
    raw = gdf[field] if field is not None else gpd.pd.Series(1, index=gdf.index)
    value_map = _value_map(list(raw), classes)
    names = _names(value_map, classes, gdf, field, name_field)
    burn = [(geom, value_map[_key(v)]) for geom, v in zip(gdf.geometry, raw) if _key(v) in value_map]
    mask = rasterize(burn, out_shape=(height, width), transform=transform, fill=fill,
                     all_touched=False, dtype="uint8")
    return mask, value_map, names


def _read_vector(path):
    import geopandas as gpd

    if not Path(os.fspath(path)).exists():
        raise InputError(f"labels not found: {path}")
    try:
        return gpd.read_file(path)
    except Exception as exc:  # pyogrio / fiona raise their own types
        raise InputError(f"cannot read {path} as a vector layer: {exc}") from exc


def _to_image_crs(gdf, crs, source="the labels"):
    if crs is None:
        raise GridMismatchError(f"the image has no CRS: vector labels ({source}) cannot be placed "
                                "on it; georeference the image first")
    if gdf.crs is None:
        warnings.warn(f"{source} has no CRS; assuming the image's", stacklevel=3)
        return gdf.set_crs(crs)
    return gdf.to_crs(crs)


def _key(v) -> str:
    """A raw label value as a string key: 1, 1.0, "1" and "1.0" are all "1"."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    s = str(v).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f.is_integer() else s


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _value_map(raw_values, classes) -> dict:
    """{raw value key: class id} for every raw value present (and every key of classes)."""
    present = sorted({_key(v) for v in raw_values if not _is_missing(v)}, key=_sort_key)
    if classes is not None:
        mapping = _mapping_from_classes(classes)
        missing = [v for v in present if v not in mapping]
        if missing:
            raise ClassFieldError(
                f"label values {missing} have no entry in classes {dict(classes)}; map them to a "
                "class, to 'background' (0) or to 'ignore' (255)")
        return mapping
    if all(_is_int_text(v) for v in present):
        bad = [v for v in present if not 0 <= int(v) <= IGNORE]
        if bad:
            raise ClassFieldError(f"label values {bad} are not class ids 0..255: give a classes mapping")
        return {v: int(v) for v in present}
    if any(_is_int_text(v) for v in present):
        raise ClassFieldError(f"label values mix numbers and names {present}: give a classes mapping")
    return {v: i for i, v in enumerate(present, start=1)}


def _is_int_text(s) -> bool:
    try:
        return float(s).is_integer()
    except ValueError:
        return False


def _sort_key(s):
    return (0, float(s), s) if _is_int_text(s) else (1, 0.0, s)


def _mapping_from_classes(classes) -> dict:
    """{raw key: class id}: numeric targets are ids, names get ids 1, 2, ... in order."""
    targets = dict(classes)
    ids = [int(float(t)) for t in targets.values() if not _is_name(t)]
    next_id = max([i for i in ids if i != IGNORE] + [0]) + 1
    by_name, mapping = dict(RESERVED), {}
    for raw, target in targets.items():
        if _is_name(target):
            if target.lower() not in by_name:
                by_name[target.lower()], next_id = next_id, next_id + 1
            tid = by_name[target.lower()]
        else:
            tid = int(float(target))
        if not 0 <= tid <= IGNORE:
            raise ClassFieldError(f"class id for {raw!r} must be 0..255, got {target!r}")
        mapping[_key(raw)] = tid
    return mapping


def _is_name(target) -> bool:
    return isinstance(target, str) and not _is_int_text(target)


def _names(value_map, classes, gdf=None, field=None, name_field=None) -> dict:
    """{class id: name} from a classes mapping with names, a name field, or the raw values."""
    names = {}
    if classes is not None:
        for raw, target in dict(classes).items():
            if _is_name(target):
                names.setdefault(value_map[_key(raw)], target)
    if name_field is not None and field is not None:
        for raw, name in zip(gdf[field], gdf[name_field]):
            if _key(raw) in value_map and not _is_missing(name):
                names.setdefault(value_map[_key(raw)], str(name))
    if field is None and gdf is not None:
        names.setdefault(1, "foreground")
    for raw, cid in value_map.items():
        names.setdefault(cid, raw if not _is_int_text(raw) else f"class_{cid}")
    return names


def _class_table(value_map, names, background) -> dict:
    ids = sorted({0, *value_map.values()} - {IGNORE})
    table = {str(i): names.get(i, f"class_{i}") for i in ids}
    table["0"] = background
    return table


# ---- raster labels -----------------------------------------------------------------------

def _from_raster(labels, grid, classes, fill):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with open_raster(labels) as lsrc:
            raw, covered = _label_values_on_grid(lsrc, grid, labels)
    if not covered.any():
        raise NoOverlapError(f"the label raster {labels} does not overlap the image")
    if classes is None and raw.dtype.kind == "f" and not np.all(np.mod(raw[covered], 1) == 0):
        raise ClassFieldError(f"{labels} holds non-integer values: labels must be class ids")
    values = np.unique(raw[covered])
    value_map = _value_map(values.tolist(), classes)
    lut_keys = np.array([float(k) for k in value_map], dtype=np.float64) if value_map else np.zeros(0)
    mask = np.full(raw.shape, fill, np.uint8)
    for key, cid in zip(lut_keys, value_map.values()):
        mask[covered & (raw == key)] = cid
    return mask, value_map, _names(value_map, classes)


def _georeferenced(src) -> bool:
    return src.crs is not None or not src.transform.is_identity


def _label_values_on_grid(lsrc, grid, path):
    """The label raster's values on the image grid, and where it has any (not nodata)."""
    from rasterio.warp import reproject

    if lsrc.count != 1:
        raise InputError(f"the label raster {path} has {lsrc.count} bands; it needs one")
    image_geo = grid["crs"] is not None or not grid["transform"].is_identity
    if not _georeferenced(lsrc) or not image_geo:
        if _georeferenced(lsrc) and not image_geo:
            raise GridMismatchError(f"{path} is georeferenced but the image is not")
        shape = (grid["height"], grid["width"])
        if (lsrc.height, lsrc.width) != shape:
            raise GridMismatchError(
                f"the label raster {path} is {lsrc.width}x{lsrc.height} pixels but the image is "
                f"{shape[1]}x{shape[0]}; without georeferencing it must have the image's size "
                "(crop or fix the label raster; rsunet will not guess the offset)")
        raw = lsrc.read(1)
        return raw, _not_nodata(raw, lsrc.nodata)
    if (lsrc.crs == grid["crs"] and lsrc.transform.almost_equals(grid["transform"])
            and (lsrc.height, lsrc.width) == (grid["height"], grid["width"])):
        raw = lsrc.read(1)
        return raw, _not_nodata(raw, lsrc.nodata)
    # another grid: nearest neighbour into a float64 canvas, NaN where nothing lands
    raw = np.full((grid["height"], grid["width"]), np.nan)
    src_nodata = lsrc.nodata if lsrc.nodata is not None else None
    reproject(rasterio.band(lsrc, 1), raw, src_nodata=src_nodata, dst_transform=grid["transform"],
              dst_crs=grid["crs"], dst_nodata=np.nan, resampling=Resampling.nearest)
    return raw, ~np.isnan(raw)


def _not_nodata(raw, nodata):
    if nodata is None:
        return np.ones(raw.shape, bool)
    return ~(np.isnan(raw) if np.isnan(nodata) else raw == nodata)
