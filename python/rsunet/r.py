"""The rpy2 bridge: hand rasters, polygons and tables to R in this process, and back.

Optional (``pip install rsunet[r]``). R starts, embedded, on the first call that needs
it (about a second). What crosses, and how:

============================  =================================  ==========================
Python                        R                                  back to Python
============================  =================================  ==========================
:class:`rsunet.io.Raster`     terra ``SpatRaster`` (in memory)   :class:`~rsunet.io.Raster`
(or array + transform + crs,  invalid pixels -> ``NA``           ``NA`` -> invalid, nodata
or a raster path: read by     extent, CRS, band order kept       value restored
terra from the file)
``geopandas.GeoDataFrame``    ``sf`` (geometry as WKB: exact)    ``GeoDataFrame``
``pandas.DataFrame``          ``data.frame``                     ``DataFrame``
``numpy.ndarray``             array (same index meaning)         ``ndarray``
scalars, lists, dicts         length-1 vectors, lists            scalars, lists, dicts
============================  =================================  ==========================

Exactness. terra holds cell values as doubles, so every raster dtype up to (u)int32 and
float32 crosses exactly; int64/uint64 cross only within +-2**53 (else
:class:`~rsunet.errors.InputError`). R integers are 32-bit with ``NA`` at -2**31: in a
table, integer columns that fit become R integers, others (uint32 above 2**31-1, int64)
become doubles (exact within +-2**53, else InputError). The Python dtypes (and a raster's
nodata value, transform and CRS) are recorded as an attribute on the R object and
restored on the way back when they still hold the values exactly, so a round trip
``from_r(to_r(x))`` gives back ``x`` (for a raster: an invalid pixel is ``NA`` in every
layer, the R package's rule, and comes back holding nodata in every band). Objects made in R (an ``.rds`` a colleague saved,
the result of R code) carry no such record: a raster comes back as the smallest of
uint8, int16, uint16, int32, uint32 that holds its whole-number values (with a nodata
value outside them: 255, -32768, ... where the raster has ``NA``), else float64 with
NaN; R integers as int32 (nullable ``Int32`` with ``NA``), doubles as float64, logicals
as bool, characters as object columns (``None`` for ``NA``), factors as categoricals,
Dates and POSIXct as datetime64. Not transferred: a DataFrame's index, datetime columns
from Python (InputError: convert them to strings first), missing geometries (they become
empty ones); column names become strings.

reticulate. On reticulate < 1.31 (Debian 12 has 1.28) a process must never hold rpy2
and reticulate both: R code run here must not call back into Python, or the process
aborts at R's next garbage collection or at exit ("PyThreadState_Get: the function must
be called with the GIL held"). Loading reticulate is harmless; starting Python from it is
not. The bridge therefore refuses to start when reticulate has already started Python in
the embedded R, and sets reticulate's ``reticulate.python.beforeInitialized`` option so
that any later start (``reticulate::import``, ``py_config()``, every function of the R
package rsunet) fails with an R error before Python is touched; both surface as
:class:`~rsunet.errors.DependencyError`. The other direction, a Python that R started
through reticulate < 1.31 calling the bridge, is refused before rpy2 is imported.
Reticulate 1.31 fixed the crash: with it the guard is lifted (see
:func:`reticulate_allowed`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from rsunet.errors import DependencyError, InputError, RCodeError

__all__ = ["to_r", "from_r", "raster_to_r", "raster_from_r", "read_rds", "save_rds",
           "r_call", "run_r", "r_versions", "reticulate_allowed", "start_r"]

#: rpy2 releases that work with R older than 4.5 (rpy2-rinterface >= 3.6.6 needs R >= 4.5).
WORKING_PINS = "rpy2==3.6.6 rpy2-rinterface==3.6.5 rpy2-robjects==3.6.6"
#: the first reticulate that can share a process with rpy2.
RETICULATE_FIXED = (1, 31)

_state: dict = {}

# The bridge's R side (rsunet/bridge.R), evaluated once into its own environment when R starts.
_R_HELPERS = resources.files("rsunet").joinpath("bridge.R").read_text(encoding="utf-8")


# ---- starting R ---------------------------------------------------------------------------

def _import_rpy2(importer=importlib.import_module):
    """Import rpy2's low and high level interfaces, or raise DependencyError saying why."""
    os.environ.setdefault("RPY2_CFFI_MODE", "ABI")  # API mode needs a compiler and R headers
    try:
        ri = importer("rpy2.rinterface")
        ro = importer("rpy2.robjects")
    except ModuleNotFoundError as exc:
        raise DependencyError(
            f"rpy2 is not installed ({exc}): pip install 'rsunet[r]'. With R older than 4.5 "
            f"pin {WORKING_PINS} and set RPY2_CFFI_MODE=ABI (tools/setup.sh does both)."
        ) from exc
    except Exception as exc:  # a broken install fails with OSError, cffi errors, ...
        hint = ""
        if "R_getVar" in str(exc):
            hint = (" This rpy2-rinterface needs R >= 4.5 (R_getVar is missing from this R)."
                    f" For R 4.2-4.4 install {WORKING_PINS}.")
        raise DependencyError(
            f"rpy2 cannot start R: {type(exc).__name__}: {exc}.{hint} Versions known to work"
            f" with R < 4.5: {WORKING_PINS}, with RPY2_CFFI_MODE=ABI; R_HOME must point at"
            " the R installation if R is not on PATH."
        ) from exc
    return ri, ro


def start_r():
    """Start embedded R (once per process) and return the bridge's R helper environment.

    Returns:
        The rpy2 environment holding the bridge's R helpers.

    Raises:
        DependencyError: rpy2 is missing or cannot start this R, or reticulate < 1.31
            shares this process (it started Python in the embedded R, or this Python runs
            inside an R session through reticulate): they must not meet in one process.
    """
    _refuse_inside_reticulate()
    if "helpers" in _state:
        return _state["helpers"]
    ri, ro = _import_rpy2()
    ro.r("suppressWarnings(invisible(requireNamespace('terra', quietly = TRUE)))")
    helpers = ro.r(_R_HELPERS)
    _state.update(ri=ri, ro=ro, helpers=helpers)
    if not reticulate_allowed():
        if bool(helpers["reticulate_started"]()[0]):
            _state.pop("helpers")
            raise DependencyError(
                "reticulate has started Python in this process's R, and reticulate < 1.31 crashes a"
                " process that also runs rpy2: use the bridge in a Python process that R did"
                " not start, or upgrade reticulate to >= 1.31"
            )
        helpers["guard"](
            "rsunet's rpy2 bridge: reticulate < 1.31 and rpy2 cannot share a process; R code"
            " run from Python must not use reticulate or the R package rsunet (run that R"
            " code in its own R session, or upgrade reticulate to >= 1.31)"
        )
    return helpers


def _refuse_inside_reticulate():
    """Refuse rpy2 in a Python that R started through reticulate < 1.31 (R -> Python -> R).

    reticulate imports its helper package ``rpytools`` from its own installation folder,
    so that module's presence tells that R hosts this Python, and the DESCRIPTION beside
    it tells which reticulate.
    """
    helper = sys.modules.get("rpytools")
    if helper is None or not getattr(helper, "__file__", None):
        return
    description = Path(helper.__file__).resolve().parents[2] / "DESCRIPTION"
    try:
        text = description.read_text(errors="replace")
        version = re.search(r"^Version:\s*(\S+)", text, flags=re.M).group(1)
    except (OSError, AttributeError):
        version = "unknown"
    if version == "unknown" or not _version_allows(version):
        raise DependencyError(
            f"this Python runs inside R through reticulate {version}, and rpy2 must not start"
            " R in the same process with reticulate < 1.31 (the process would abort): run the"
            " R code in that R session itself, or upgrade reticulate to >= 1.31"
        )


def r_versions() -> dict:
    """Versions of the embedded R and of the R packages the bridge uses.

    Returns:
        ``{"R": "4.2.2", "terra": ..., "sf": ..., "reticulate": ...}``; a package that is
        not installed is ``None``. Nothing is loaded to find out.
    """
    start_r()
    ro = _state["ro"]
    out = {"R": ".".join(str(v) for v in ro.r("getRversion()")[0])}
    for pkg in ("terra", "sf", "reticulate"):
        out[pkg] = _installed_version(pkg)
    return out


def _installed_version(pkg):
    ro = _state["ro"]
    v = ro.r(f'tryCatch(as.character(utils::packageVersion("{pkg}")), error = function(e) "")')
    return str(v[0]) or None


def reticulate_allowed() -> bool:
    """Whether R code run through the bridge may use reticulate (and so the R package rsunet).

    Returns:
        True when reticulate >= 1.31 is installed (it can share a process with rpy2) or
        when reticulate is not installed; False for older reticulate, which the bridge
        then stops from starting Python.
    """
    if "ro" not in _state:
        start_r()
    return _version_allows(_installed_version("reticulate"))


def _version_allows(version) -> bool:
    """True for no reticulate or reticulate >= 1.31 (``"1.28"`` -> False)."""
    if version is None:
        return True
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    return parts >= RETICULATE_FIXED


def _ensure_r():
    helpers = start_r()
    return _state["ri"], _state["ro"], helpers


def _require(pkg, what):
    ro = _state["ro"]
    if pkg in _state.setdefault("loaded", set()):
        return
    if not bool(ro.r(f'isTRUE(suppressWarnings(requireNamespace("{pkg}", quietly = TRUE)))')[0]):
        raise DependencyError(f"{what} needs the R package {pkg}: install it in R "
                              f"(Debian: apt-get install r-cran-{pkg})")
    _state["loaded"].add(pkg)


# ---- rasters ------------------------------------------------------------------------------

def raster_to_r(raster, transform=None, crs=None, nodata=None):
    """A raster as a terra SpatRaster in the embedded R.

    Args:
        raster: a :class:`rsunet.io.Raster`, a raster file path (terra reads the file
            itself, lazily), or a ``(bands, rows, cols)`` / ``(rows, cols)`` array with
            ``transform``, ``crs`` and ``nodata``.
        transform: for an array: its :class:`affine.Affine` (north-up, no rotation).
        crs: for an array: anything :class:`rasterio.crs.CRS` takes, or None.
        nodata: for an array: the value that marks missing pixels (they become ``NA``).

    Returns:
        An rpy2 object wrapping the SpatRaster: layers in band order, the Raster's extent
        and CRS, ``NA`` where a pixel is invalid (in every band, as ``Raster.valid``
        says), and the dtype, nodata, transform and CRS recorded in its ``rsunet``
        attribute so that :func:`raster_from_r` restores them exactly.

    Raises:
        InputError: a rotated or south-up transform (terra cannot hold it), values that a
            double cannot hold exactly (int64 beyond +-2**53), or a missing file.
        DependencyError: R, rpy2 or terra is missing.
    """
    from rsunet.io import Raster

    ri, ro, helpers = _ensure_r()
    _require("terra", "raster conversion")
    if isinstance(raster, (str, os.PathLike)):
        path = Path(raster)
        if not path.exists():
            raise InputError(f"raster not found: {path}")
        return _call_r(ro.r("terra::rast"), str(path.resolve()), context="terra cannot read it")
    if not isinstance(raster, Raster):
        raster = _raster_from_array(raster, transform, crs, nodata)
    t = raster.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise InputError(f"terra holds only north-up rasters without rotation; transform is {tuple(t)[:6]}")
    data = _exact_doubles(raster.data, "raster")
    data[:, ~raster.valid] = np.nan
    left, bottom, right, top = raster.bounds
    crs_wkt = raster.crs.to_wkt() if raster.crs else ""
    record = {"dtype": raster.data.dtype.name, "transform": ro.FloatVector(list(t)[:6]),
              "crs": crs_wkt}
    if raster.nodata is not None:  # absent means "no nodata value", as in the Raster
        record["nodata"] = float(raster.nodata)
    meta = ro.ListVector(record)
    return helpers["make_rast"](_float_vector(ri, data.ravel()),
                                ro.IntVector(data.shape),
                                ro.FloatVector([left, right, bottom, top]), crs_wkt, meta)


def _raster_from_array(data, transform, crs, nodata):
    from rasterio.crs import CRS

    from rsunet.io import Raster, as_affine, is_nodata

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise InputError(f"a raster array must be (bands, rows, cols) or (rows, cols); got {data.shape}")
    if transform is None:
        raise InputError("an array needs its transform (affine.Affine) to become a SpatRaster")
    valid = np.ones(data.shape[1:], bool)
    if nodata is not None:
        valid = ~is_nodata(data, nodata).any(axis=0)
    elif data.dtype.kind == "f":
        valid = ~np.isnan(data).any(axis=0)
    crs = CRS.from_user_input(crs) if crs not in (None, "") else None
    return Raster(data, valid, as_affine(transform), crs, nodata)


def raster_from_r(x, dtype=None):
    """A terra SpatRaster (or PackedSpatRaster) from R as a :class:`rsunet.io.Raster`.

    Args:
        x: an rpy2 SpatRaster or PackedSpatRaster (e.g. from :func:`run_r` or an .rds).
        dtype: the NumPy dtype wanted; by default the one recorded by
            :func:`raster_to_r` if it still holds the values exactly, else the file's
            type for a file-backed raster, else the smallest integer type that holds
            whole-number values, else float64 (see the module notes).

    Returns:
        A Raster: ``data`` ``(bands, rows, cols)`` in layer order, ``valid`` False where
        any layer is ``NA`` (those cells hold ``nodata``), ``transform`` and ``crs``
        from the SpatRaster's extent and CRS.

    Raises:
        InputError: ``dtype`` cannot hold the values exactly, or the SpatRaster was saved
            without ``terra::wrap`` and has lost its data.
    """
    from rsunet.io import Raster

    ri, ro, helpers = _ensure_r()
    parts = _call_r(helpers["rast_parts"], x)
    bands, rows, cols = (int(v) for v in parts.rx2("dims"))
    values = _np(parts.rx2("values"), np.float64).reshape(bands, rows, cols)
    missing = np.isnan(values)
    meta = _named(parts.rx2("meta"))
    data, nodata = _raster_values(values, missing, dtype, meta, str(parts.rx2("datatype")[0]))
    xmin, xmax, ymin, ymax = (float(v) for v in parts.rx2("ext"))
    transform = _transform_of(xmin, xmax, ymin, ymax, rows, cols, meta)
    crs = _crs_of(str(parts.rx2("crs")[0]), meta.get("crs"))
    return Raster(data=data, valid=~missing.any(axis=0), transform=transform, crs=crs, nodata=nodata)


_TERRA_TYPES = {"INT1U": "uint8", "INT2S": "int16", "INT2U": "uint16", "INT4S": "int32",
                "INT4U": "uint32", "FLT4S": "float32", "FLT8S": "float64"}
_INFERRED = ["uint8", "int16", "uint16", "int32", "uint32"]


def _raster_values(values, missing, dtype, meta, datatype):
    """Cast R's doubles to the dtype asked for, recorded, or inferred; choose a nodata.

    Each candidate is ``(dtype, nodata, recorded)``: a recorded nodata (even None) is
    trusted; otherwise a raster with ``NA`` gets a nodata value no valid cell uses.
    """
    present = values[~missing]
    if dtype is not None:
        dtype = np.dtype(dtype)
        if not _holds(dtype, present):
            raise InputError(f"the SpatRaster's values do not fit {dtype.name} exactly")
        candidates = [(dtype, meta.get("nodata"), "dtype" in meta)]
    else:
        candidates = []
        if "dtype" in meta:
            candidates.append((np.dtype(meta["dtype"]), meta.get("nodata"), True))
        if datatype in _TERRA_TYPES:
            candidates.append((np.dtype(_TERRA_TYPES[datatype]), None, False))
        candidates += [(np.dtype(d), None, False) for d in _INFERRED + ["float64"]]
    for candidate, nodata, recorded in candidates:
        if not _holds(candidate, present):
            continue
        if not recorded and missing.any():
            nodata = _sentinel(candidate, present)
            if nodata is None:
                continue  # every value of the type is used: no room for a nodata value
        if nodata is not None and not np.isnan(nodata) and np.any(present == nodata):
            continue  # a valid value equal to nodata would read as missing
        return _filled(values, missing, candidate, nodata), nodata
    raise InputError(f"the SpatRaster's values do not fit {dtype} with a free nodata value")


def _holds(dtype, values) -> bool:
    if dtype.kind == "f":
        return dtype.itemsize == 8 or bool(np.all(values.astype(dtype).astype(np.float64) == values))
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        return False
    return bool(np.array_equal(values.astype(dtype), values))  # in range: a cast drops fractions


def _sentinel(dtype, present):
    """A nodata value for ``dtype`` that no valid value uses (NaN for floats)."""
    if dtype.kind == "f":
        return float("nan")
    info = np.iinfo(dtype)
    for v in (info.max, info.min) if dtype.kind == "u" else (info.min, info.max):
        if not np.any(present == v):
            return int(v)
    return None


def _filled(values, missing, dtype, nodata):
    fill = nodata if nodata is not None else (np.nan if dtype.kind == "f" else 0)
    out = np.where(missing, fill, values)
    return out.astype(dtype)


def _transform_of(xmin, xmax, ymin, ymax, rows, cols, meta):
    from affine import Affine

    computed = Affine((xmax - xmin) / cols, 0, xmin, 0, -(ymax - ymin) / rows, ymax)
    recorded = meta.get("transform")
    if recorded is not None:
        t = Affine(*[float(v) for v in recorded])
        # the record is used only if it still describes this grid (not after a crop, ...)
        if np.allclose(list(t)[:6], list(computed)[:6], rtol=1e-12, atol=1e-12 * abs(t.a)):
            return t
    return computed


def _crs_of(wkt, recorded_wkt):
    from rasterio.crs import CRS

    if not wkt:
        return None
    crs = CRS.from_wkt(wkt)
    if recorded_wkt:
        recorded = CRS.from_wkt(recorded_wkt)
        if recorded == crs:
            return recorded
    return crs


# ---- values in general --------------------------------------------------------------------

def _exact_doubles(a, what):
    """``a`` as float64, or InputError if a value would change (int64 beyond 2**53)."""
    a = np.asarray(a)
    if a.dtype.kind in "iu" and a.dtype.itemsize == 8 and a.size:
        if int(a.max()) > 2 ** 53 or int(a.min()) < -(2 ** 53):  # in integers: no rounding
            raise InputError(
                f"{what} holds {a.dtype.name} values beyond +-2**53, which R's doubles cannot"
                " hold exactly (R has no 64-bit integers): rescale them or cast to float64"
            )
    if a.dtype.kind not in "biuf":
        raise InputError(f"{what} of dtype {a.dtype} cannot go to R; use numbers or strings")
    return a.astype(np.float64)


def _float_vector(ri, a):
    a = np.ascontiguousarray(a, dtype=np.float64)
    return ri.FloatSexpVector.from_memoryview(memoryview(a))


_INT_MIN, _INT_MAX = -(2 ** 31) + 1, 2 ** 31 - 1  # -2**31 is NA_integer_ in R


def _r_vector(values, what):
    """A 1-D array as an R atomic vector: logical, integer when it fits, else double."""
    ri, ro = _state["ri"], _state["ro"]
    a = np.asarray(values)
    if a.dtype.kind == "b":
        return ri.BoolSexpVector(a.tolist())
    if a.dtype.kind in "iu":
        if a.size == 0 or (a.min() >= _INT_MIN and a.max() <= _INT_MAX):
            return ri.IntSexpVector.from_memoryview(memoryview(np.ascontiguousarray(a, np.int32)))
        return _float_vector(ri, _exact_doubles(a, what))
    if a.dtype.kind == "f":
        return _float_vector(ri, a)
    if a.dtype.kind in "UO":
        return _str_vector(a, what)
    raise InputError(f"{what} of dtype {a.dtype} cannot go to R: use numbers, booleans or strings")


def _str_vector(values, what):
    ro = _state["ro"]
    out = []
    for v in values:
        if _missing(v):
            out.append(ro.NA_Character)
        elif isinstance(v, str):
            out.append(v)
        else:
            raise InputError(f"{what} holds a {type(v).__name__} ({v!r}); only strings and"
                             " missing values become an R character vector: convert with astype(str)")
    return ro.StrVector(out)


def _missing(v) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def _is_null(x) -> bool:
    return x is None or isinstance(x, type(_state["ri"].NULL))


def _named(x) -> dict:
    """An R named list of atomic vectors (or NULL) as a dict: length 1 -> scalar, else list."""
    if _is_null(x):
        return {}
    out = {}
    for name, v in zip(x.names, x):
        v = [float(e) if isinstance(e, float) else e for e in v]
        out[str(name)] = v[0] if len(v) == 1 else v
    return out


def _np(v, dtype):
    """An R atomic vector as a NumPy array (a copy), through its memory when it can."""
    try:
        return np.array(v.memoryview(), dtype=dtype)
    except (AttributeError, TypeError, ValueError):
        return np.array(list(v), dtype=dtype)


# ---- tables -------------------------------------------------------------------------------

def _df_to_r(df):
    ri, ro, helpers = _ensure_r()
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise InputError(f"column names must be unique to become an R data.frame: {names}")
    cols, dtypes = [], []
    for name in df.columns:
        s = df[name]
        cols.append(_column_to_r(s, f"column {name!r}"))
        dtypes.append(str(s.dtype))
    return helpers["make_df"](ri.ListSexpVector(cols), ro.StrVector(names), len(df),
                              _named_strings(names, dtypes))


def _named_strings(names, values):
    ro = _state["ro"]
    v = ro.StrVector(values)
    v.names = ro.StrVector(names)
    return v


def _column_to_r(s, what):
    import pandas as pd

    ri, ro = _state["ri"], _state["ro"]
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        levels = [str(c) for c in dtype.categories]
        codes = s.cat.codes.to_numpy().astype(np.int32) + 1
        codes[codes == 0] = np.iinfo(np.int32).min  # NA
        f = ri.IntSexpVector.from_memoryview(memoryview(np.ascontiguousarray(codes)))
        # built by R's structure(), which marks it as an object: S3 dispatch needs that
        return _state["helpers"]["make_factor"](f, ro.StrVector(levels), bool(dtype.ordered))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        raise InputError(f"{what} holds datetimes: convert them to strings (astype(str)) or"
                         " numbers before handing the table to R")
    if isinstance(dtype, pd.BooleanDtype):
        return ri.BoolSexpVector([ri.NA_Logical if v is pd.NA else bool(v) for v in s])
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_integer_dtype(dtype):
        present = s.dropna().to_numpy(dtype=np.int64)
        if present.size and (present.min() < _INT_MIN or present.max() > _INT_MAX):
            return _float_vector(ri, _exact_doubles(s.to_numpy(dtype=np.float64, na_value=np.nan), what))
        return ri.IntSexpVector([ri.NA_Integer if v is pd.NA else int(v) for v in s])
    if pd.api.types.is_string_dtype(dtype) or dtype == object:
        return _str_vector(s.tolist(), what)
    return _r_vector(s.to_numpy(), what)


def _df_from_parts(parts):
    import pandas as pd

    names = [str(n) for n in parts.rx2("names")]
    n = int(parts.rx2("n")[0])
    data = {}
    for name, col in zip(names, parts.rx2("cols")):
        data[name] = _column_from_r(col, n)
    df = pd.DataFrame(data, index=pd.RangeIndex(n), columns=names)
    return _restore_dtypes(df, _named_str(parts.rx2("dtypes")))


def _named_str(x) -> dict:
    if _is_null(x):
        return {}
    return dict(zip((str(n) for n in x.names), (str(v) for v in x)))


def _column_from_r(col, n):
    import pandas as pd

    ri = _state["ri"]
    kind = str(col[0][0])
    v = col[1]
    if kind == "factor":
        codes = np.array(v, dtype=np.int64)
        codes = np.where(codes == np.iinfo(np.int32).min, -1, codes - 1)
        levels = [str(x) for x in col[2]]
        return pd.Categorical.from_codes(codes, categories=levels, ordered=bool(col[3][0]))
    if kind == "integer":
        a = _np(v, np.int32)
        na = a == np.iinfo(np.int32).min
        return pd.arrays.IntegerArray(np.where(na, 0, a).astype(np.int32), mask=na) if na.any() else a
    if kind == "double":
        return _np(v, np.float64)
    if kind == "logical":
        raw = list(v)
        if any(x is ri.NA_Logical for x in raw):
            return pd.array([None if x is ri.NA_Logical else bool(x) for x in raw], dtype="boolean")
        return np.array([bool(x) for x in raw], dtype=bool)
    if kind == "character":
        return np.array([None if x is ri.NA_Character else str(x) for x in v], dtype=object)
    if kind == "date":
        days = np.array(v, dtype=np.float64)
        return pd.to_datetime(days, unit="D", origin="unix")
    if kind == "posixct":
        secs = np.array(v, dtype=np.float64)
        out = pd.to_datetime(np.round(secs * 1e6), unit="us", origin="unix", utc=True)
        return out.tz_convert(str(col[2][0]))
    if kind == "list":
        out = np.empty(n, dtype=object)
        out[:] = [from_r(x) for x in v]
        return out
    raise InputError(f"cannot convert an R column of kind {kind}")  # pragma: no cover


def _restore_dtypes(df, recorded):
    """Give columns back the dtypes :func:`to_r` recorded, where the values still fit."""
    for name, dtype in recorded.items():
        if name not in df.columns or str(df[name].dtype) == dtype:
            continue
        if dtype in ("category", "object") or dtype.startswith("datetime"):
            continue  # R gave these back as they were
        try:
            cast = df[name].astype(dtype)
        except (TypeError, ValueError, OverflowError):
            continue  # the values changed in R: keep what R gave
        if _same_values(cast, df[name]):
            df[name] = cast
    return df


def _same_values(a, b) -> bool:
    """Equal values and equal missing positions (a cast did not round or wrap)."""
    a, b = a.astype(object), b.astype(object)
    na_a, na_b = a.isna().to_numpy(), b.isna().to_numpy()
    if not np.array_equal(na_a, na_b):
        return False
    return bool(np.all(a[~na_a].to_numpy() == b[~na_b].to_numpy()))


# ---- vectors ------------------------------------------------------------------------------

def _gdf_to_r(gdf):
    import shapely

    ri, ro, helpers = _ensure_r()
    _require("sf", "GeoDataFrame conversion")
    geometry_name = gdf.geometry.name
    position = list(gdf.columns).index(geometry_name)
    geoms = gdf.geometry.to_numpy()
    empty = shapely.from_wkt("GEOMETRYCOLLECTION EMPTY")
    geoms = np.array([empty if g is None else g for g in geoms], dtype=object)
    wkb = shapely.to_wkb(geoms, hex=True, include_srid=False) if len(geoms) else np.array([], object)
    attrs = _df_to_r(gdf.drop(columns=geometry_name))
    crs = gdf.crs.to_wkt() if gdf.crs is not None else ""
    return _call_r(helpers["make_sf"], attrs, ro.StrVector(list(wkb)), geometry_name,
                   position, crs)


def _gdf_from_r(x):
    import geopandas as gpd
    import shapely
    from pyproj import CRS

    ri, ro, helpers = _ensure_r()
    _require("sf", "sf conversion")
    parts = _call_r(helpers["sf_parts"], x)
    df = _df_from_parts(parts.rx2("df"))
    geoms = shapely.from_wkb(np.array(list(parts.rx2("wkb")), dtype=object))
    name = str(parts.rx2("geometry_name")[0])
    df.insert(int(parts.rx2("position")[0]), name, geoms)
    wkt = str(parts.rx2("crs")[0])
    crs = CRS.from_wkt(wkt) if wkt else None
    recorded = parts.rx2("recorded_crs")
    if crs is not None and not _is_null(recorded):
        original = CRS.from_wkt(str(recorded[0]))
        crs = original if original == crs else crs
    return gpd.GeoDataFrame(df, geometry=name, crs=crs)


# ---- generic conversion -------------------------------------------------------------------

def to_r(obj):
    """A Python object as an R object in the embedded R.

    Args:
        obj: a :class:`rsunet.io.Raster` (-> SpatRaster), a GeoDataFrame (-> sf), a
            DataFrame (-> data.frame), a NumPy array (-> vector or array, same index
            meaning), ``None`` (-> ``NULL``), a bool/int/float/str (-> length-1 vector),
            a list or tuple of such (-> atomic vector if all are numbers or all strings,
            else a list), a dict (-> named list), a :class:`pathlib.Path` (-> character),
            or an rpy2 object (passed as is). Strings stay strings: use
            :func:`raster_to_r` to open a raster file.

    Returns:
        The rpy2 object.

    Raises:
        InputError: a value R cannot hold exactly (see the module notes).
    """
    import pandas as pd

    from rsunet.io import Raster

    ri, ro, _ = _ensure_r()
    if isinstance(obj, ri.Sexp):
        return obj
    if obj is None:
        return ri.NULL
    if isinstance(obj, Raster):
        return raster_to_r(obj)
    if isinstance(obj, pd.DataFrame) and hasattr(obj, "geometry") and type(obj).__name__ == "GeoDataFrame":
        return _gdf_to_r(obj)
    if isinstance(obj, pd.DataFrame):
        return _df_to_r(obj)
    if isinstance(obj, os.PathLike):
        return ro.StrVector([os.fspath(obj)])
    if isinstance(obj, (bool, np.bool_, int, np.integer, float, np.floating, str)):
        return _r_vector(np.array([obj], dtype=object if isinstance(obj, str) else None), "value")
    if isinstance(obj, np.ndarray):
        return _array_to_r(obj)
    if isinstance(obj, dict):
        out = ri.ListSexpVector([to_r(v) for v in obj.values()])
        out.names = ro.StrVector([str(k) for k in obj])
        return out
    if isinstance(obj, (list, tuple)):
        if obj and all(isinstance(v, str) for v in obj):
            return ro.StrVector(list(obj))
        if obj and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in obj):
            return _r_vector(np.array(obj), "list")
        return ri.ListSexpVector([to_r(v) for v in obj])
    raise InputError(f"cannot hand a {type(obj).__name__} to R; see rsunet.r.to_r for what converts")


def _array_to_r(a):
    ro = _state["ro"]
    vec = _r_vector(np.asarray(a).ravel(order="F"), "array")
    if a.ndim > 1:
        vec.do_slot_assign("dim", ro.IntVector(a.shape))
    return vec


def from_r(x):
    """An R object from the embedded R as a Python object.

    Args:
        x: an rpy2 object.

    Returns:
        SpatRaster / PackedSpatRaster -> :class:`rsunet.io.Raster`; sf, SpatVector ->
        GeoDataFrame; sfc -> GeoSeries; data.frame -> DataFrame; factor -> Categorical;
        a matrix, array or table -> ndarray (same index meaning; a character one is
        dtype object); a vector of length 1 without names -> a Python scalar (``NA`` ->
        None); longer vectors -> ndarray (numbers, logicals; integer ``NA`` makes it
        float64 with NaN) or a list of str (``NA`` -> None); a named vector or named
        list -> dict; a list -> list; ``NULL`` -> None.
    """
    ri, ro, helpers = _ensure_r()
    kind = str(helpers["kind"](x)[0])
    if kind == "null":
        return None
    if kind == "raster":
        return raster_from_r(x)
    if kind == "vector":
        return _gdf_from_r(x)
    if kind == "sfc":
        gdf = _gdf_from_r(ro.r("function(g) sf::st_sf(geometry = g)")(x))
        return gdf.geometry
    if kind == "data.frame":
        return _df_from_parts(_call_r(helpers["df_parts"], x))
    if kind == "factor":
        col = helpers["column_parts"](x)
        return _column_from_r(col, len(x))
    if kind == "list":
        values = [from_r(v) for v in x]
        names = x.names
        if not _is_null(names) and all(str(n) for n in names):
            return dict(zip((str(n) for n in names), values))
        return values
    if kind == "atomic":
        return _atomic_from_r(helpers["atomic_parts"](x))
    return x  # an environment, a function, a model...: kept as the rpy2 object, usable in R


def _atomic_from_r(parts):
    ri = _state["ri"]
    type_ = str(parts.rx2("type")[0])
    v = parts.rx2("values")
    if type_ == "character":
        values = np.array([None if s is ri.NA_Character else str(s) for s in v], dtype=object)
    elif type_ == "logical":
        raw = list(v)
        values = (np.array([None if b is ri.NA_Logical else bool(b) for b in raw], dtype=object)
                  if any(b is ri.NA_Logical for b in raw) else np.array(raw, dtype=bool))
    elif type_ == "integer":
        values = _np(v, np.int32)
        na = values == np.iinfo(np.int32).min
        if na.any():
            values = np.where(na, np.nan, values.astype(np.float64))
    elif type_ == "double":
        values = _np(v, np.float64)
    else:
        raise InputError(f"cannot convert an R vector of type {type_} to Python")
    dim, names = parts.rx2("dim"), parts.rx2("names")
    if not _is_null(dim):
        return values.reshape(tuple(int(d) for d in dim), order="F")
    if not _is_null(names):
        return {str(n): _scalar(val) for n, val in zip(names, values)}
    if values.size == 1:
        return _scalar(values[0])
    return values.tolist() if type_ == "character" else values


def _scalar(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


# ---- files and R code ---------------------------------------------------------------------

def read_rds(path):
    """Read an ``.rds`` file an R user saved, converted by what it holds.

    Args:
        path: the ``.rds`` file: sf polygons (e.g. training polygons), a SpatRaster saved
            with ``terra::saveRDS`` / ``saveRDS(terra::wrap(x))``, a SpatVector, a
            data.frame, or plain vectors and lists.

    Returns:
        A GeoDataFrame, :class:`rsunet.io.Raster`, DataFrame or Python value, as
        :func:`from_r` converts it; a GeoDataFrame can go straight to
        :func:`rsunet.make_mask` as labels.

    Raises:
        InputError: the file is missing or is not an R serialisation, or a SpatRaster
            was saved without ``terra::wrap`` (its data is gone).
        DependencyError: R, rpy2 or a needed R package is missing.
    """
    ri, ro, helpers = _ensure_r()
    path = Path(path)
    if not path.is_file():
        raise InputError(f".rds file not found: {path}")
    x = _call_r(ro.r("readRDS"), str(path.resolve()), context=f"cannot read {path} as .rds")
    return from_r(x)


def save_rds(obj, path, overwrite=False):
    """Save a Python object as an ``.rds`` an R user reads with ``readRDS()``.

    A Raster is saved as a wrapped SpatRaster (``terra::rast(readRDS(path))`` or, with
    terra attached, ``readRDS(path)`` gives the SpatRaster), a GeoDataFrame as sf, a
    DataFrame as a data.frame.

    Args:
        obj: anything :func:`to_r` converts.
        path: the ``.rds`` to write (atomically).
        overwrite: replace an existing file.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from rsunet.io import atomic_path

    ri, ro, helpers = _ensure_r()
    x = to_r(obj)
    save = ro.r("function(x, file) {"
                " if (inherits(x, 'SpatRaster')) x <- terra::wrap(x);"
                " saveRDS(x, file) }")
    with atomic_path(path, overwrite) as tmp:
        _call_r(save, x, str(tmp))
    return Path(path)


def r_call(fun, *args, **kwargs):
    """Call an R function on Python objects and convert its result back.

    Args:
        fun: R code that evaluates to a function, e.g. ``"terra::focal"`` or
            ``"function(x) terra::focal(x, 3, mean)"``.
        *args: positional arguments, converted with :func:`to_r`.
        **kwargs: named arguments, converted with :func:`to_r`.

    Returns:
        The result, converted with :func:`from_r`.

    Raises:
        RCodeError: the R code failed (the message is R's).
        DependencyError: the R code tried to start Python through reticulate (directly
            or through the R package rsunet) while reticulate < 1.31 is installed.
    """
    ri, ro, helpers = _ensure_r()
    f = _call_r(ro.r("function(code) eval(parse(text = code, keep.source = FALSE), globalenv())"),
                fun, context="cannot evaluate the R function")
    r_args = [to_r(a) for a in args]
    r_kwargs = {k: to_r(v) for k, v in kwargs.items()}
    return from_r(_call_r(f, *r_args, **r_kwargs))


def run_r(code, **objects):
    """Run R code with Python objects bound to R names; return its last value.

    Args:
        code: R code; the value of its last expression is returned.
        **objects: each converted with :func:`to_r` and bound to its name in a fresh R
            environment (a child of R's global environment) in which ``code`` runs.

    Returns:
        The last value, converted with :func:`from_r`.

    Raises:
        RCodeError: the R code failed (the message is R's).
        DependencyError: the R code tried to start Python through reticulate (directly
            or through the R package rsunet) while reticulate < 1.31 is installed.
    """
    ri, ro, helpers = _ensure_r()
    env = ro.r("new.env(parent = globalenv())")
    for name, value in objects.items():
        env[name] = to_r(value)
    run = ro.r("function(code, env) eval(parse(text = code, keep.source = FALSE), envir = env)")
    return from_r(_call_r(run, code, env))


def _call_r(f, *args, context="R code failed", **kwargs):
    """``f(*args, **kwargs)`` in R inside tryCatch: an R error becomes a typed exception."""
    ri, ro, helpers = _ensure_r()
    result = helpers["try_call"](f, *args, **kwargs)
    if bool(result.rx2("ok")[0]):
        return result.rx2("value")
    message = str(result.rx2("value")[0])
    if "reticulate < 1.31 and rpy2 cannot share a process" in message:
        raise DependencyError(message)
    if bool(result.rx2("input")[0]):
        raise InputError(message)
    raise RCodeError(f"{context}: {message}")
