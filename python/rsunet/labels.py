"""Labels on an image's grid: the one home of what a class id, a mask and a reference are.

Masks (:func:`rsunet.make_mask`), patch sets, maps (:func:`rsunet.predict_raster`) and
references (:func:`rsunet.assess_map`) share these rules: class ids are small integers
in a uint8 band, :data:`IGNORE` (255) marks unknown pixels, and a raster records its
class names in the tag ``RSUNET_CLASSES`` (JSON ``{"id": name}``). Reference data come
as polygons (a vector file or a GeoDataFrame, reprojected to the image's CRS) or as a
label raster, on the image's grid or placed on it; raw label values (numbers, numeric
strings or names) become class ids here.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from rsunet.errors import ClassFieldError, GridMismatchError, InputError, RsunetWarning

__all__ = ["IGNORE", "CLASSES_TAG", "IGNORE_TAG", "VECTOR_SUFFIXES", "mask_tags", "read_classes_tag",
           "is_vector", "read_vector", "to_image_crs", "georeferenced", "same_grid", "value_key",
           "is_missing", "is_int_text", "classes_of_values", "class_names", "class_table", "class_ids_of"]

IGNORE = 255  # the mask value of unknown pixels (nodata, unlabelled, rotation fill): never a class
CLASSES_TAG = "RSUNET_CLASSES"
IGNORE_TAG = "RSUNET_IGNORE"
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")
# names that map to the two reserved values when a `classes` mapping uses names
RESERVED = {"background": 0, "ignore": IGNORE, "unknown": IGNORE}


# ---- the class table in a raster's tags ----------------------------------------------------

def mask_tags(classes) -> dict:
    """The tags that describe a mask's classes: ``RSUNET_CLASSES`` (``{"id": name}`` as
    JSON) and ``RSUNET_IGNORE``."""
    return {CLASSES_TAG: json.dumps({str(k): v for k, v in classes.items()}), IGNORE_TAG: str(IGNORE)}


def read_classes_tag(tags) -> dict:
    """``{id: name}`` from a raster's tags (``src.tags()``); empty without a readable table."""
    try:
        return {int(k): str(v) for k, v in json.loads(tags.get(CLASSES_TAG, "{}")).items()}
    except (ValueError, AttributeError):
        return {}


# ---- where labels come from ------------------------------------------------------------------

def is_vector(labels) -> bool:
    """Whether ``labels`` are polygons (a GeoDataFrame or a vector file), not a raster."""
    if hasattr(labels, "geometry"):
        return True
    return Path(os.fspath(labels)).suffix.lower() in VECTOR_SUFFIXES


def read_vector(path):
    """A vector file as a GeoDataFrame; a missing or unreadable file is an :class:`InputError`."""
    import geopandas as gpd

    if not Path(os.fspath(path)).exists():
        raise InputError(f"labels not found: {path}")
    try:
        return gpd.read_file(path)
    except Exception as exc:  # pyogrio / fiona raise their own types
        raise InputError(f"cannot read {path} as a vector layer: {exc}") from exc


def to_image_crs(gdf, crs, source="the labels"):
    """Polygons in the image's CRS (a layer without a CRS is taken to be in it, with a warning)."""
    if crs is None:
        raise GridMismatchError(f"the image has no CRS: vector labels ({source}) cannot be placed "
                                "on it; georeference the image first")
    if gdf.crs is None:
        warnings.warn(f"{source} has no CRS; assuming the image's", RsunetWarning, stacklevel=3)
        return gdf.set_crs(crs)
    return gdf.to_crs(crs)


# ---- grids -------------------------------------------------------------------------------------

def georeferenced(src) -> bool:
    """Whether a raster (anything with ``crs`` and ``transform``) is placed on Earth."""
    return src.crs is not None or not src.transform.is_identity


def same_grid(a, b, plain_fits=False) -> bool:
    """Whether two rasters (anything with ``height``, ``width``, ``crs``, ``transform``) share
    a grid. With ``plain_fits``, a plain image (not georeferenced) of the same size lies on
    the other's grid."""
    if (a.height, a.width) != (b.height, b.width):
        return False
    if plain_fits and not (georeferenced(a) and georeferenced(b)):
        return True
    return a.crs == b.crs and a.transform.almost_equals(b.transform)


# ---- raw label values -> class ids -------------------------------------------------------------

def value_key(v) -> str:
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


def is_missing(v) -> bool:
    """Whether a raw label value is missing (None or NaN): it maps to no class."""
    return v is None or (isinstance(v, float) and np.isnan(v))


def classes_of_values(raw_values, classes) -> dict:
    """{raw value key: class id} for every raw value present (and every key of classes)."""
    present = sorted({value_key(v) for v in raw_values if not is_missing(v)}, key=_sort_key)
    if classes is not None:
        mapping = _mapping_from_classes(classes)
        missing = [v for v in present if v not in mapping]
        if missing:
            raise ClassFieldError(
                f"label values {missing} have no entry in classes {dict(classes)}; map them to a "
                "class, to 'background' (0) or to 'ignore' (255)")
        return mapping
    if all(is_int_text(v) for v in present):
        bad = [v for v in present if not 0 <= int(v) <= IGNORE]
        if bad:
            raise ClassFieldError(f"label values {bad} are not class ids 0..255: give a classes mapping")
        return {v: int(v) for v in present}
    if any(is_int_text(v) for v in present):
        raise ClassFieldError(f"label values mix numbers and names {present}: give a classes mapping")
    return {v: i for i, v in enumerate(present, start=1)}


def is_int_text(s) -> bool:
    """Whether a value key is a whole number (a class id) rather than a class name."""
    try:
        return float(s).is_integer()
    except ValueError:
        return False


def _sort_key(s):
    return (0, float(s), s) if is_int_text(s) else (1, 0.0, s)


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
        mapping[value_key(raw)] = tid
    return mapping


def _is_name(target) -> bool:
    return isinstance(target, str) and not is_int_text(target)


def class_names(value_map, classes, gdf=None, field=None, name_field=None) -> dict:
    """{class id: name} from a classes mapping with names, a name field, or the raw values."""
    names = {}
    if classes is not None:
        for raw, target in dict(classes).items():
            if _is_name(target):
                names.setdefault(value_map[value_key(raw)], target)
    if name_field is not None and field is not None:
        for raw, name in zip(gdf[field], gdf[name_field]):
            if value_key(raw) in value_map and not is_missing(name):
                names.setdefault(value_map[value_key(raw)], str(name))
    if field is None and gdf is not None:
        names.setdefault(1, "foreground")
    for raw, cid in value_map.items():
        names.setdefault(cid, raw if not is_int_text(raw) else f"class_{cid}")
    return names


def class_table(value_map, names, background) -> dict:
    """The mask's class table ``{"id": name}``: background 0 and every class mapped to."""
    ids = sorted({0, *value_map.values()} - {IGNORE})
    table = {str(i): names.get(i, f"class_{i}") for i in ids}
    table["0"] = background
    return table


def class_ids_of(values, table) -> np.ndarray:
    """Class ids of polygon field values: numbers are ids, names go through ``table``."""
    by_name = {name.lower(): cid for cid, name in table.items()}
    ids, bad = [], set()
    for v in values:
        key = None if is_missing(v) else value_key(v)
        if key is not None and is_int_text(key) and 0 <= int(key) <= IGNORE:
            ids.append(int(key))
        elif key is not None and key.lower() in by_name:
            ids.append(by_name[key.lower()])
        else:
            bad.add(key)
            ids.append(IGNORE)
    if bad:
        raise ClassFieldError(
            f"reference values {sorted(map(str, bad))} are neither class ids (0..254, 255 = "
            f"ignore) nor class names of the map ({table or 'the map has no class table'}): "
            "recode the field or make the reference with make_mask(classes=...)")
    return np.asarray(ids, np.int64)
