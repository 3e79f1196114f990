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
import warnings
from types import SimpleNamespace

import numpy as np
import rasterio
from rasterio.enums import Resampling

from rsunet.errors import ClassFieldError, GridMismatchError, InputError, NoOverlapError
from rsunet.io import check_not_input, is_nodata, open_raster, write_raster
from rsunet.labels import (IGNORE, VECTOR_SUFFIXES, class_names, class_table, classes_of_values,
                           georeferenced, is_vector, mask_tags, read_vector, same_grid,
                           to_image_crs, value_key)

__all__ = ["make_mask", "VECTOR_SUFFIXES", "IGNORE"]

UNLABELLED = ("background", "ignore")


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
    if is_vector(labels):
        mask, value_map, names = _from_vector(labels, grid, field, classes, name_field, fill)
    else:
        mask, value_map, names = _from_raster(labels, grid, classes, fill)
    table = class_table(value_map, names, background.strip())
    tags = dict(**mask_tags(table),
                RSUNET_VALUE_MAP=json.dumps(value_map), RSUNET_UNLABELLED=unlabelled)
    path = write_raster(out, mask, grid["transform"], grid["crs"], nodata=IGNORE,
                        overwrite=overwrite, tags=tags, band_names=["class"])
    counts = np.bincount(mask.ravel(), minlength=256)
    return dict(path=str(path), classes=table, value_map=value_map,
                counts={str(i): int(c) for i, c in enumerate(counts) if c})


# ---- vector labels -----------------------------------------------------------------------

def _from_vector(labels, grid, field, classes, name_field, fill):
    import geopandas as gpd
    from rasterio.features import rasterize
    from shapely.geometry import box

    gdf = labels if hasattr(labels, "geometry") else read_vector(labels)
    source = "the labels" if hasattr(labels, "geometry") else str(labels)
    if not len(gdf) or gdf.geometry.isna().all() or gdf.geometry.is_empty.all():
        raise NoOverlapError(f"{source} holds no features: nothing to burn into a mask")
    for f in (field, name_field):
        if f is not None and f not in gdf.columns:
            raise ClassFieldError(f"labels have no field {f!r}; fields: "
                                  f"{[c for c in gdf.columns if c != gdf.geometry.name]}")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = to_image_crs(gdf, grid["crs"], source)
    height, width, transform = grid["height"], grid["width"], grid["transform"]
    extent = box(*rasterio.transform.array_bounds(height, width, transform))
    if not len(gdf) or not gdf.intersects(extent).any():
        raise NoOverlapError(
            f"no label polygon of {source} overlaps the image (labels' bounds {list(gdf.total_bounds)} in the "
            f"image CRS; image bounds {list(extent.bounds)}): are they for this scene?")
    raw = gdf[field] if field is not None else gpd.pd.Series(1, index=gdf.index)
    value_map = classes_of_values(list(raw), classes)
    names = class_names(value_map, classes, gdf, field, name_field)
    burn = [(geom, value_map[value_key(v)]) for geom, v in zip(gdf.geometry, raw) if value_key(v) in value_map]
    mask = rasterize(burn, out_shape=(height, width), transform=transform, fill=fill,
                     all_touched=False, dtype="uint8")
    return mask, value_map, names


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
    value_map = classes_of_values(values.tolist(), classes)
    lut_keys = np.array([float(k) for k in value_map], dtype=np.float64) if value_map else np.zeros(0)
    mask = np.full(raw.shape, fill, np.uint8)
    for key, cid in zip(lut_keys, value_map.values()):
        mask[covered & (raw == key)] = cid
    return mask, value_map, class_names(value_map, classes)


def _label_values_on_grid(lsrc, grid, path):
    """The label raster's values on the image grid, and where it has any (not nodata)."""
    from rasterio.warp import reproject

    if lsrc.count != 1:
        raise InputError(f"the label raster {path} has {lsrc.count} bands; it needs one")
    image = SimpleNamespace(**grid)
    image_geo = georeferenced(image)
    if not georeferenced(lsrc) or not image_geo:
        if georeferenced(lsrc) and not image_geo:
            raise GridMismatchError(f"{path} is georeferenced but the image is not")
        shape = (grid["height"], grid["width"])
        if (lsrc.height, lsrc.width) != shape:
            raise GridMismatchError(
                f"the label raster {path} is {lsrc.width}x{lsrc.height} pixels but the image is "
                f"{shape[1]}x{shape[0]}; without georeferencing it must have the image's size "
                "(crop or fix the label raster; rsunet will not guess the offset)")
        raw = lsrc.read(1)
        return raw, ~is_nodata(raw, lsrc.nodata)
    if same_grid(lsrc, image):
        raw = lsrc.read(1)
        return raw, ~is_nodata(raw, lsrc.nodata)
    # another grid: nearest neighbour into a float64 canvas, NaN where nothing lands
    raw = np.full((grid["height"], grid["width"]), np.nan)
    src_nodata = lsrc.nodata if lsrc.nodata is not None else None
    reproject(rasterio.band(lsrc, 1), raw, src_nodata=src_nodata, dst_transform=grid["transform"],
              dst_crs=grid["crs"], dst_nodata=np.nan, resampling=Resampling.nearest)
    return raw, ~np.isnan(raw)
