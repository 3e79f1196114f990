"""Shared fixtures: paths to the test vectors and the real data, and strict skips.

In CI (``CI=true``) nothing that a broken environment causes may turn into a skip:
``need_module`` and ``shared_data`` fail there instead.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "inst" / "extdata" / "testvectors"
SHARED = Path(os.environ.get("RSUNET_SHARED_DATA", ROOT.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str):
    """Skip on a user's machine; fail in CI, where the environment must be complete."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure, not a skip)")
    pytest.skip(reason)


def need_module(name: str):
    """Import a module the test needs, or skip (fail in CI) with the import error."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a broken install raises more than ImportError
        skip_or_fail(f"Python module {name!r} is not usable: {exc}")


def shared_path(*parts) -> Path:
    """A file under ../shared/data, or skip (fail in CI) where that folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        skip_or_fail(f"real test data not found: {path}")
    return path


def vectors(stage: str) -> dict:
    """The shared test vectors of a stage (inst/extdata/testvectors/<stage>.json)."""
    return json.loads((VECTORS / f"{stage}.json").read_text())


@pytest.fixture
def shared():
    return shared_path


def rescaled_copy(image, out) -> Path:
    """A float32 copy of a 3-band scene, each band ``x * gain + offset`` (patches vectors)."""
    import rasterio

    rescale = vectors("patches")["scene_rescale"]
    gain, offset = (np.float32(rescale[k])[:, None, None] for k in ("gain", "offset"))
    with rasterio.open(image) as src:
        data = src.read().astype(np.float32) * gain + offset
        profile = dict(src.profile, dtype="float32", nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return Path(out)
