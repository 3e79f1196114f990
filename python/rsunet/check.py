"""What rsunet runs on: versions of the stack, for bug reports and for the R check."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import rsunet

_DISTRIBUTIONS = ["numpy", "pandas", "rasterio", "geopandas", "shapely", "pyproj",
                  "keras", "tensorflow", "tensorflow-cpu", "rpy2"]


def versions() -> dict:
    """Versions of Python, rsunet, its main dependencies and GDAL, as strings.

    Missing optional packages are reported as ``None``; nothing heavy is imported.
    """
    out = {"rsunet": rsunet.__version__, "python": platform.python_version(),
           "executable": sys.executable}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    import rasterio

    out["gdal"] = rasterio.__gdal_version__
    return out


def check(import_backend: bool = True) -> dict:
    """Versions plus proof that the deep-learning backend imports and runs.

    With ``import_backend`` Keras is imported and a tiny convolution is run, so a broken
    TensorFlow shows up here rather than an hour into training.
    """
    out = versions()
    if import_backend:
        import numpy as np
        import keras

        layer = keras.layers.Conv2D(1, 1, kernel_initializer="ones", use_bias=False)
        y = layer(np.ones((1, 2, 3, 4), dtype="float32"))
        out["keras_backend"] = keras.backend.backend()
        out["backend_ok"] = bool(float(np.asarray(y).sum()) == 24.0)
    return out
