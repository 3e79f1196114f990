"""The error catalogue (inst/extdata/testvectors/errors.json), run from Python.

Mirrored by tests/testthat/test-errors.R, which runs the same cases through the R
wrappers. Each case builds its recipe (python/rsunet/errorcases.py) in a fresh folder,
calls the function (or the ``rsunet`` command) and asserts: the error class, that the
message names the file or argument, that no file or folder was added or removed, and
that every input's bytes and mtime are unchanged.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rsunet
from conftest import VECTORS
from rsunet import errorcases
from rsunet.errors import RsunetError, RsunetWarning

CASES = errorcases.cases(VECTORS / "errors.json")
PY_CASES = [c for c in CASES if c.get("only") != "r"]


def _build(case, folder) -> dict:
    recipes = case["recipe"] if isinstance(case["recipe"], list) else [case["recipe"]]
    paths = {}
    for recipe in recipes:
        paths.update(errorcases.materialise(recipe, folder))
    return paths


# TensorFlow's C++ runtime logs a few lines on import whatever TF_CPP_MIN_LOG_LEVEL says
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} )")


def run_cli(argv):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "rsunet", *argv], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("case", PY_CASES, ids=[c["id"] for c in PY_CASES])
def test_error_case(case, tmp_path):
    folder = tmp_path / "case"
    paths = _build(case, folder)
    before = errorcases.snapshot(folder)
    if "cli" in case:
        proc = run_cli(errorcases.substitute(case["cli"], paths))
        lines = [ln for ln in proc.stderr.strip().splitlines() if not TF_NOISE.match(ln)]
        assert proc.returncode == case["status"], proc.stderr
        assert len(lines) == 1 and lines[0].startswith("rsunet: error: "), proc.stderr
        message = lines[0]
    else:
        module, _, name = case["call"].rpartition(".")  # "module.function" if not top-level
        func = getattr(importlib.import_module(f"rsunet.{module}") if module else rsunet, name)
        with pytest.raises(RsunetError) as info:
            func(**errorcases.substitute(case["args"], paths))
        assert type(info.value).__name__ == case["python"], info.value
        message = str(info.value)
    assert case["message"] in message
    assert errorcases.changes(folder, before) == []  # no input changed, nothing left behind


def test_catalogue_is_large_and_covers_every_stage():
    stages = Counter(c["stage"] for c in CASES)
    assert len({c["id"] for c in CASES}) == len(CASES) >= 60
    assert {"io", "samples", "patches", "split", "training", "baseline", "prediction",
            "assessment", "workflow", "cli", "r"} <= set(stages)
    for case in CASES:
        assert case["message"] and case["input"], case["id"]
        assert case.get("only") == "python" or case["r"], case["id"]
        assert case.get("only") == "r" or case["python"], case["id"]


def test_errors_doc_is_in_sync_with_the_catalogue():
    sys.path.insert(0, str(VECTORS.parents[2] / "tools"))
    from make_errors_doc import render

    doc = VECTORS.parents[2] / "docs" / "errors.md"
    assert doc.read_text() == render(CASES), "run python tools/make_errors_doc.py"


# ---- NaN and inf are nodata ---------------------------------------------------------------

def _float_scene(path, hole=None, nodata=None, seed=5):
    """A 3-band float32 scene; ``hole``: "nan" (NaN in band 1, inf in band 3 at its edge) or
    "declared" (every band set to the nodata value) over the same pixels."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    data = rng.uniform(0, 200, (3, 96, 80)).astype(np.float32)
    data[:, :48] *= 0.5  # two kinds of land, so the map has more than one class
    if hole == "nan":
        data[0, 20:40, 10:30] = np.nan
        data[2, 20:40, 29] = np.inf
        data[2, 39, 10:30] = -np.inf
    elif hole == "declared":
        data[:, 20:40, 10:30] = nodata
    profile = dict(driver="GTiff", count=3, height=96, width=80, dtype="float32", crs=CRS,
                   transform=Affine(10, 0, 500000, 0, -10, 9000000), nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


HOLE = (slice(20, 40), slice(10, 30))
CRS = "EPSG:32722"


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    paths = errorcases.materialise("models", tmp_path_factory.mktemp("forest"))
    patches = errorcases.materialise("patches", tmp_path_factory.mktemp("patches"))["patches"]
    scene = rsunet.train_baseline(patches, None, n_per_class=200, n_trees=3, normalize="scene")
    return rsunet.load_baseline(paths["forest"]), scene, paths


@pytest.mark.parametrize("kind", ["forest", "forest_scene", "unet"])
def test_nan_and_inf_holes_are_nodata_and_change_nothing_else(kind, forest, tmp_path):
    from rsunet.io import read_raster

    model, scene_model, paths = forest
    if kind == "forest_scene":  # each scene scaled by its own percentiles: a NaN must not spoil them
        model = scene_model
    elif kind == "unet":
        model = paths["unet"]
    maps = {}
    for hole in ("nan", "declared", None):
        image = _float_scene(tmp_path / f"{hole}.tif", hole, nodata=-9999.0 if hole == "declared" else None)
        out = rsunet.predict_raster(model, image, tmp_path / f"map_{hole}.tif", window=32, overlap=8,
                                    progress=False)
        maps[hole] = read_raster(out).data[0]
    assert len(np.unique(maps[None])) > 1
    np.testing.assert_array_equal(maps["nan"], maps["declared"])  # NaN/inf = declared nodata
    assert (maps["nan"][HOLE] == 255).all()
    outside = np.ones(maps[None].shape, bool)
    outside[HOLE] = False
    if kind == "forest":  # a pixel model: outside the hole, the map of the scene without it
        np.testing.assert_array_equal(maps["nan"][outside], maps[None][outside])


def test_nan_pixels_are_nodata_in_patches_and_training(tmp_path):
    from rsunet.normalization import band_percentiles
    from rsunet.patches import PatchSet
    from rsunet.training import _read_split

    sets = {}
    for hole in ("nan", "declared"):
        image = _float_scene(tmp_path / f"{hole}.tif", hole, nodata=-9999.0 if hole == "declared" else None)
        mask = rsunet.make_mask(image, _labels_over(tmp_path / "labels.gpkg"), tmp_path / f"m_{hole}.tif",
                                overwrite=True)["path"]
        rsunet.make_patches(image, mask, tmp_path / f"p_{hole}", size=32, stride=32, min_valid=0,
                            progress=False)
        sets[hole] = PatchSet(tmp_path / f"p_{hole}")
        assert np.isfinite(band_percentiles(image)).all()
    cols = [c for c in sets["nan"].index.columns if c not in ("patch_id", "scene")]
    pd.testing.assert_frame_equal(sets["nan"].index[cols], sets["declared"].index[cols])
    np.testing.assert_allclose(band_percentiles(tmp_path / "nan.tif"), band_percentiles(tmp_path / "declared.tif"))
    x, _, valid = _read_split(sets["nan"], list(sets["nan"].index["patch_id"]))
    _, _, valid_declared = _read_split(sets["declared"], list(sets["declared"].index["patch_id"]))
    assert np.isfinite(x).all()  # the network never sees a NaN
    np.testing.assert_array_equal(valid, valid_declared)
    assert not valid.all()


def _labels_over(path):
    import geopandas as gpd
    from shapely.geometry import box

    if not path.exists():
        gpd.GeoDataFrame({"class": [1]}, geometry=[box(500100, 8999500, 500500, 8999900)],
                         crs=CRS).to_file(path)
    return path


# ---- faults: a full disk, a killed Random Forest prediction --------------------------------

FSIZE_SCRIPT = """
import resource, signal, sys
import rsunet
from rsunet.errors import OutputWriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    {call}
except OutputWriteError as exc:
    print("OutputWriteError", exc)
    sys.exit(0)
sys.exit(3)
"""


@pytest.mark.parametrize("step", ["make_patches", "predict_raster", "write_raster"])
def test_a_full_disk_is_a_typed_error_and_leaves_no_debris(step, tmp_path):
    paths = errorcases.materialise("big", tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    forest = errorcases.materialise("models", tmp_path / "models")["forest"]
    call = dict(
        make_patches=f"rsunet.make_patches({paths['big']!r}, {paths['big_mask']!r}, {str(out / 'p')!r}, "
                     "size=32, progress=False)",
        predict_raster=f"rsunet.predict_raster({forest!r}, {paths['big']!r}, {str(out / 'map.tif')!r}, "
                       "window=64, overlap=0, progress=False)",
        write_raster=f"rsunet.write_raster({str(out / 'noise.tif')!r}, __import__('numpy').random"
                     ".default_rng(0).integers(0, 255, (3, 256, 256)).astype('uint8'), (1, 0, 0, 0, -1, 0))",
    )[step]
    before = errorcases.snapshot(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT.format(call=call)], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cannot write" in proc.stdout and str(out) in proc.stdout
    assert list(out.iterdir()) == []  # no partial file or folder
    assert errorcases.changes(tmp_path / "in", before) == []


KILL_SCRIPT = """
import os, signal
from rsunet import prediction
def die(j):
    if j == 3:
        os.kill(os.getpid(), signal.SIGKILL)
prediction._after_band = die
prediction.predict_raster({model!r}, {image!r}, {out!r}, window=16, overlap=4, progress=False)
"""


def test_a_killed_random_forest_prediction_resumes_where_it_stopped(tmp_path, monkeypatch):
    from rsunet import prediction

    paths = errorcases.materialise("models", tmp_path / "in")
    model, image, out = paths["forest"], paths["image"], str(tmp_path / "map.tif")
    ref = rsunet.predict_raster(model, image, tmp_path / "ref.tif", window=16, overlap=4, progress=False)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(model=model, image=image, out=out)],
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seen = []
    monkeypatch.setattr(prediction, "_after_band", seen.append)
    rsunet.predict_raster(model, image, out, window=16, overlap=4, progress=False)
    assert seen[0] == 4  # bands 0-3 were on disk: the forest loaded again has the same fingerprint
    assert Path(out).read_bytes() == ref.read_bytes()


# ---- quiet nonsense -----------------------------------------------------------------------

def test_fractions_that_do_not_sum_to_one_are_rescaled_with_a_warning(tmp_path):
    paths = errorcases.materialise("patches", tmp_path / "in")
    with pytest.warns(RsunetWarning, match="rescaled"):  # R: an rsunet_warning (test-errors.R)
        rsunet.split_patches(paths["unsplit"], fractions=(0.5, 0.2), method="random")


def test_an_interrupted_training_may_rewrite_its_own_history(tmp_path):
    from rsunet.training import _Run

    out = tmp_path / "m.keras"
    (tmp_path / "m_history.csv").write_text("epoch\n1\n")
    assert not _Run.interrupted(out)
    (tmp_path / ".m.training").mkdir()
    (tmp_path / ".m.training" / "state.json").write_text("{}")
    assert _Run.interrupted(out)


def test_a_failed_workflow_run_continues_without_overwrite(tmp_path, monkeypatch):
    import rsunet.patches

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop()
    paths = errorcases.materialise("workflow", tmp_path / "in")
    monkeypatch.setattr(rsunet.patches, "split_patches", stop)  # fails after masks and patches
    for _ in range(2):  # the rerun is not stopped by the first run's masks and patches
        with pytest.raises(Stop):
            rsunet.run_workflow(paths["ok"], out=tmp_path / "run")
    assert (tmp_path / "run" / "patches" / "index.csv").exists()
    (tmp_path / "elsewhere" / "masks").mkdir(parents=True)  # a folder that no run of ours marked
    (tmp_path / "elsewhere" / "masks" / "image.tif").write_text("mine")
    with pytest.raises(rsunet.errors.OutputExistsError):
        rsunet.run_workflow(paths["ok"], out=tmp_path / "elsewhere")
