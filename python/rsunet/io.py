"""Georeferenced raster I/O: windows in, GeoTIFFs out, atomically.

Windows are first-class values (:class:`rasterio.windows.Window`, or a tuple
``(col_off, row_off, width, height)`` in 0-based pixels), and every array is
band-first ``(bands, rows, cols)`` in the file's native dtype, as rasterio reads it.
Writers never leave a file that looks complete but is not: they write to a hidden
temporary name beside the target and rename it only once the file is closed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio import windows
from rasterio.errors import WindowError
from rasterio.windows import Window

from rsunet.errors import (InputError, OutputExistsError, OutputIsInputError, OutputWriteError,
                           RasterReadError, RsunetError)

__all__ = ["Raster", "read_raster", "write_raster", "write_vector", "raster_info", "atomic_path",
           "as_window", "as_affine", "check_not_input", "is_nodata", "read_padded", "window_intersection",
           "window_offsets"]

try:  # GDAL's errors (CPLE_*) are not OSErrors
    from rasterio._err import CPLE_BaseError as _GDALError
except ImportError:  # pragma: no cover - another rasterio layout
    _GDALError = rasterio.errors.RasterioError
GDAL_ERRORS = (rasterio.errors.RasterioError, _GDALError)


@dataclass
class Raster:
    """Pixels of one window of a raster, with what places them on Earth.

    Attributes:
        data: ``(bands, rows, cols)`` array in the file's dtype.
        valid: ``(rows, cols)`` boolean, True where every band holds data (not nodata,
            not masked by an alpha band or an internal mask, not outside the file).
        transform: affine transform of the window's upper-left pixel corner.
        crs: coordinate reference system, or None for a plain image.
        nodata: the file's nodata value, or None.
    """

    data: np.ndarray
    valid: np.ndarray
    transform: Affine
    crs: CRS | None
    nodata: float | None

    @property
    def count(self) -> int:
        return self.data.shape[0]

    @property
    def height(self) -> int:
        return self.data.shape[1]

    @property
    def width(self) -> int:
        return self.data.shape[2]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)

    def masked(self) -> np.ma.MaskedArray:
        """The data as a masked array, invalid pixels masked in every band."""
        return np.ma.MaskedArray(self.data, mask=np.broadcast_to(~self.valid, self.data.shape))


def as_window(window) -> Window | None:
    """Turn ``None``, a :class:`Window` or ``(col_off, row_off, width, height)`` into a Window."""
    if window is None or isinstance(window, Window):
        return window
    try:
        col_off, row_off, width, height = (int(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"window must be (col_off, row_off, width, height), got {window!r}"
        ) from exc
    if width <= 0 or height <= 0:
        raise InputError(f"window width and height must be positive, got {width}x{height}")
    return Window(col_off, row_off, width, height)


@contextlib.contextmanager
def open_raster(path):
    """Open a raster for reading, turning GDAL's failures into :class:`RasterReadError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RasterReadError(f"raster not found: {path}")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot read {path} as a raster: {exc}") from exc
    with src:
        yield src


def read_raster(path, window=None, bands=None, boundless=False) -> Raster:
    """Read a window of a raster, every band in its native dtype.

    Args:
        path: a GeoTIFF or any raster GDAL reads.
        window: ``None`` for the whole raster, a :class:`Window` or
            ``(col_off, row_off, width, height)`` in 0-based pixels.
        bands: 1-based band indexes to read, all by default.
        boundless: if False a window that leaves the raster is an error; if True the
            pixels outside are filled with nodata (or 0) and marked invalid.

    Returns:
        A :class:`Raster` whose ``transform`` places the window, not the file.
    """
    window = as_window(window)
    with open_raster(path) as src:
        indexes = list(range(1, src.count + 1)) if bands is None else [int(b) for b in bands]
        bad = [b for b in indexes if not 1 <= b <= src.count]
        if bad:
            raise InputError(f"{path} has {src.count} bands; cannot read band(s) {bad}")
        full = Window(0, 0, src.width, src.height)
        window = window or full
        inside = window_intersection(window, full)
        if inside is None or (not boundless and inside != window):
            if not boundless:
                raise RasterReadError(
                    f"window {_fmt(window)} leaves {path} ({src.width}x{src.height} pixels);"
                    " pass boundless=True to pad it with nodata"
                )
        data, valid = read_padded(src, indexes, window, inside)
        return Raster(
            data=data,
            valid=valid,
            transform=src.window_transform(window),
            crs=src.crs,
            nodata=src.nodata,
        )


def read_padded(src, indexes, window, inside):
    """``(data, valid)`` of ``window`` of an open raster, read where it lies ``inside`` the
    raster (the window's intersection with it, or None) and padded with nodata (or 0),
    invalid, beyond."""
    h, w = int(window.height), int(window.width)
    fill = src.nodata if src.nodata is not None else 0
    data = np.full((len(indexes), h, w), fill, dtype=src.dtypes[indexes[0] - 1])
    valid = np.zeros((h, w), dtype=bool)
    if inside is None:
        return data, valid
    r0, c0 = int(inside.row_off - window.row_off), int(inside.col_off - window.col_off)
    rows = slice(r0, r0 + int(inside.height))
    cols = slice(c0, c0 + int(inside.width))
    with reading(src):
        data[:, rows, cols] = src.read(indexes, window=inside)
        valid[rows, cols] = np.all(src.read_masks(indexes, window=inside) > 0, axis=0)
    valid[rows, cols] &= finite(data[:, rows, cols])
    return data, valid


def is_nodata(values, nodata) -> np.ndarray:
    """True where ``values`` are the ``nodata`` value (a NaN nodata: where they are NaN);
    all False when there is none."""
    if nodata is None:
        return np.zeros(np.shape(values), bool)
    return np.isnan(values) if np.isnan(nodata) else values == nodata


def finite(data) -> np.ndarray | bool:
    """``(rows, cols)``: True where every band is finite. NaN and +-inf are nodata, always
    (a float band may hold them without declaring a nodata value)."""
    if data.dtype.kind != "f":
        return True
    return np.isfinite(data).all(axis=0)


@contextlib.contextmanager
def reading(src):
    """Turn GDAL's failure to read pixels (truncated or corrupt blocks) into a typed error."""
    try:
        yield
    except GDAL_ERRORS as exc:
        raise RasterReadError(f"cannot read the pixels of {src.name}: {exc}; the file is truncated "
                              "or corrupt (copy or download it again)") from exc


def window_intersection(a: Window, b: Window) -> Window | None:
    """The pixels two windows share (:func:`rasterio.windows.intersection`), None if none."""
    try:
        return windows.intersection(a, b)
    except WindowError:
        return None


def window_offsets(length, size, stride, edge="shift"):
    """Start offsets of windows along one axis (patches and prediction slide the same way).

    Args:
        length: the axis length in pixels.
        size: window length.
        stride: step between window starts.
        edge: what to do where the last window would leave the axis: ``"shift"`` it back
            to end at the edge (a scene smaller than a window is padded instead),
            ``"pad"`` (keep it on the stride grid, its outside part padded) or ``"drop"``
            it (see :mod:`rsunet.patches`).

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


def _fmt(window: Window) -> str:
    return f"(col_off={window.col_off}, row_off={window.row_off}, width={window.width}, height={window.height})"


@contextlib.contextmanager
def atomic_path(path, overwrite=False):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On error the temporary file is removed and ``path`` is untouched. An existing
    ``path`` is an :class:`OutputExistsError` unless ``overwrite`` is True.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def writing(path):
    """Turn a failure to write ``path`` (disk full, read-only folder, file size limit) into
    :class:`OutputWriteError`; rsunet's own errors pass through."""
    try:
        yield
    except RsunetError:
        raise
    except (OSError, *GDAL_ERRORS) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise OutputWriteError(f"cannot write {path}: {reason}; check the free space and the "
                               f"permissions of {Path(path).parent}") from exc


def check_not_input(outputs, inputs, replaces_folder=False):
    """Refuse outputs that would destroy an input, whatever ``overwrite`` says.

    An output is refused when it resolves (symbolic links, ``..``, a case-insensitive
    file system: compared by file identity where the file exists) to an input or lies
    inside an input folder; with ``replaces_folder`` (an output folder replaced
    wholesale) also when an input lies inside it.

    Args:
        outputs: paths (or None) the call will write.
        inputs: paths (or None, or objects that are not paths: skipped) the call reads.
    """
    outs, ins = _path_list(outputs), _path_list(inputs)
    for out in outs:
        for inp in ins:
            if _within(out, inp):
                where = "is" if _same(out, inp) else "lies inside"
                raise OutputIsInputError(
                    f"the output {out} {where} the input {inp}: rsunet never writes over an input "
                    "(overwrite does not change that); choose another output path")
            if replaces_folder and _within(inp, out):
                raise OutputIsInputError(
                    f"the output folder {out} holds the input {inp} and would be replaced: "
                    "choose an output folder that holds no input")


def _path_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (str, os.PathLike)):
        return [os.fspath(x)]
    if isinstance(x, (list, tuple, set)) or hasattr(x, "values") and callable(x.values):
        items = x.values() if isinstance(x, dict) else x
        return [p for item in items for p in _path_list(item)]
    return []  # a model or a GeoDataFrame in memory: nothing on disk to protect


def _same(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _within(a, b) -> bool:
    """``a`` is ``b`` or lies inside the folder ``b`` (by file identity where they exist)."""
    if not os.path.exists(b):
        real_a, real_b = (os.path.normcase(os.path.realpath(p)) for p in (a, b))
        return real_a == real_b or real_a.startswith(real_b.rstrip(os.sep) + os.sep)
    real = Path(os.path.realpath(a))
    return any(p.exists() and _same(p, b) for p in (real, *real.parents))


def geotiff_profile(count, height, width, dtype, transform, crs, nodata, blocksize=256,
                    compress="deflate"):
    """The creation options rsunet writes with: tiled, compressed, predictor by dtype."""
    dtype = np.dtype(dtype)
    profile = dict(
        driver="GTiff", count=count, height=height, width=width, dtype=dtype.name,
        transform=transform, crs=crs, nodata=nodata, compress=compress, BIGTIFF="IF_SAFER",
    )
    if height >= 16 and width >= 16:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if compress and compress.lower() in ("deflate", "lzw", "zstd"):
        profile["predictor"] = 3 if dtype.kind == "f" else 2
    return profile


def write_raster(path, data, transform, crs=None, nodata=None, overwrite=False,
                 compress="deflate", blocksize=256, tags=None, band_names=None):
    """Write an array as a tiled, compressed GeoTIFF, atomically.

    Args:
        path: output file; its folder is created.
        data: ``(bands, rows, cols)`` or ``(rows, cols)`` array; its dtype is kept.
        transform: :class:`affine.Affine` (or 6 GDAL/affine coefficients as a sequence).
        crs: anything :meth:`rasterio.crs.CRS.from_user_input` takes, or None.
        nodata: the value that marks missing pixels, or None.
        overwrite: replace an existing file (otherwise :class:`OutputExistsError`).
        compress: GDAL compression (``"deflate"``, ``"lzw"``, ``"zstd"`` or None).
        blocksize: tile edge in pixels, a multiple of 16.
        tags: dataset metadata to record (e.g. class names).
        band_names: a description per band.

    Returns:
        The path written, as a :class:`pathlib.Path`.
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise InputError(f"data must be (bands, rows, cols) or (rows, cols); got shape {data.shape}")
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if blocksize % 16:
        raise InputError(f"blocksize must be a multiple of 16, got {blocksize}")
    transform = as_affine(transform)
    crs = CRS.from_user_input(crs) if crs not in (None, "") else None
    profile = geotiff_profile(*data.shape, data.dtype, transform, crs, nodata, blocksize, compress)
    with atomic_path(path, overwrite) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**{str(k): str(v) for k, v in tags.items()})
            for i, name in enumerate(band_names or [], start=1):
                dst.set_band_description(i, str(name))
    return Path(path)


def write_vector(gdf, path, layer=None, overwrite=False):
    """Write a GeoDataFrame as a GeoPackage, atomically.

    GeoPackage 1.2 is written: the GDAL that R's sf and terra use on Debian 12 warns on
    files of version 1.4, the default of newer GDAL.
    """
    with atomic_path(path, overwrite) as tmp:
        gdf.to_file(tmp, driver="GPKG", layer=layer or Path(path).stem, VERSION="1.2")
    return Path(path)


def as_affine(transform) -> Affine:
    """An :class:`affine.Affine` from one, or from its 6 coefficients (a, b, c, d, e, f) or 9 (3 x 3)."""
    if isinstance(transform, Affine):
        return transform
    values = [float(v) for v in transform]
    if len(values) == 6:
        return Affine(*values)
    if len(values) == 9:
        return Affine(*values[:6])
    raise InputError(f"transform needs 6 coefficients, got {len(values)}")


def raster_info(path) -> dict:
    """Size, bands, dtypes, CRS (WKT), transform, nodata and bounds of a raster."""
    with open_raster(path) as src:
        return dict(
            path=str(path),
            width=src.width,
            height=src.height,
            count=src.count,
            dtypes=list(src.dtypes),
            crs=src.crs.to_wkt() if src.crs else None,
            epsg=src.crs.to_epsg() if src.crs else None,
            transform=list(src.transform)[:6],
            nodata=src.nodata,
            bounds=list(src.bounds),
            descriptions=list(src.descriptions),
        )
