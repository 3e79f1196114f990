"""The error catalogue's recipes: small bad inputs that both test suites build the same way.

``inst/extdata/testvectors/errors.json`` lists the cases (docs/errors.md is made from it by
``tools/make_errors_doc.py``). Each case names a recipe: :func:`materialise` builds it in a
folder (tiny synthetic rasters, a patch set, models and damaged copies of them) and
returns ``{name: path}`` for the ``$name`` placeholders of the case's arguments.
:func:`snapshot` records every file's bytes and mtime, so a suite can assert that a
failed call changed no input and left nothing behind. pytest (tests/test_errors.py) and
testthat (tests/testthat/test-errors.R, through reticulate) both use this module; each
calls the function of its own language.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["materialise", "snapshot", "changes", "substitute", "cases", "RECIPES"]

CRS = "EPSG:32722"
ORIGIN = (500000.0, 9000000.0)
_CACHE: dict = {}


def cases(path=None) -> list:
    """The cases of errors.json (the repository's copy unless ``path`` is given)."""
    path = Path(path) if path else Path(__file__).resolve().parents[2] / "inst" / "extdata" / \
        "testvectors" / "errors.json"
    return json.loads(path.read_text())["cases"]


def substitute(value, paths: dict):
    """``$name`` in strings (also nested in lists and dicts) -> the recipe's path."""
    if isinstance(value, str):
        return re.sub(r"\$(\w+)", lambda m: str(paths[m.group(1)]), value)
    if isinstance(value, list):
        return [substitute(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, paths) for k, v in value.items()}
    return value


def snapshot(folder) -> dict:
    """``{relative path: [sha256, mtime_ns]}`` of every file and link, ``"dir"`` for folders."""
    folder, out = Path(folder), {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder)] = "dir"
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            content = os.readlink(p).encode() if os.path.islink(p) else Path(p).read_bytes()
            out[os.path.relpath(p, folder)] = [hashlib.sha256(content).hexdigest(), st.st_mtime_ns]
    return out


def changes(folder, before: dict) -> list:
    """What differs from the snapshot ``before``: added, removed or changed paths (sorted)."""
    after = snapshot(folder)
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def materialise(recipe: str, folder) -> dict:
    """Build ``recipe`` in ``folder`` (a copy of one built once per process); its paths."""
    folder = Path(folder)
    if recipe not in _CACHE:
        base = Path(tempfile.mkdtemp(prefix=f"rsunet-recipe-{recipe}-"))
        _CACHE[recipe] = (base, RECIPES[recipe](base))
    base, names = _CACHE[recipe]
    shutil.copytree(base, folder, symlinks=True, dirs_exist_ok=True)
    for config in folder.glob("*.yaml"):  # configurations name their scenes by absolute path
        config.write_text(config.read_text().replace(str(base), str(folder)))
    paths = {k: str(folder / v) for k, v in names.items()}
    paths["dir"] = str(folder)
    return paths


# ---- building blocks ----------------------------------------------------------------

def _transform(x0=ORIGIN[0], y0=ORIGIN[1], res=10.0):
    from affine import Affine

    return Affine(res, 0, x0, 0, -res, y0)


def _image(path, bands=3, size=64, dtype="uint8", seed=0, **kw):
    from rsunet.io import write_raster

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 200, (bands, size, size)).astype(dtype)
    write_raster(path, data, kw.get("transform", _transform()), CRS, nodata=kw.get("nodata"))
    return path.name


def _labels(path, x0=ORIGIN[0], y0=ORIGIN[1], empty=False):
    import geopandas as gpd
    from shapely.geometry import box

    geoms = [] if empty else [box(x0 + 50, y0 - 300, x0 + 300, y0 - 50),
                              box(x0 + 350, y0 - 600, x0 + 600, y0 - 350)]
    gdf = gpd.GeoDataFrame({"class": [1, 2][:len(geoms)]}, geometry=geoms, crs=CRS)
    gdf.to_file(path, driver="GPKG")
    return path.name


def _scene(base: Path) -> dict:
    from rsunet.samples import make_mask

    names = dict(image=_image(base / "image.tif"), labels=_labels(base / "labels.gpkg"))
    make_mask(base / "image.tif", base / "labels.gpkg", base / "mask.tif", field="class")
    names["mask"] = "mask.tif"
    (base / "text.tif").write_text("not a raster\n")
    names["text"] = "text.tif"
    return names


def _truncate(path, keep=0.6):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def _cog(src, dst):
    from rasterio.shutil import copy

    copy(src, dst, driver="COG", compress="DEFLATE", blocksize=64)


# ---- recipes ------------------------------------------------------------------------

def recipe_scene(base: Path) -> dict:
    """An image, its labels (GeoPackage) and mask, and files that are not what they say."""
    names = _scene(base)
    os.symlink("image.tif", base / "link.tif")
    names["link"] = "link.tif"
    names["empty"] = _labels(base / "empty.gpkg", empty=True)
    names["far"] = _labels(base / "far.gpkg", x0=100000.0, y0=100000.0)
    (base / "garbage.gpkg").write_bytes(b"\x00\x01 not a geopackage")
    names["garbage"] = "garbage.gpkg"
    names["one_band"] = _image(base / "one_band.tif", bands=1, seed=1)
    names["other_grid"] = _image(base / "other_grid.tif", bands=1,
                                 transform=_transform(ORIGIN[0] + 5.0))
    from PIL import Image

    Image.fromarray(np.ones((10, 12), np.uint8)).save(base / "small.png")
    names["small_png"] = "small.png"
    (base / "config_missing.yaml").write_text("")
    return names


def recipe_big(base: Path) -> dict:
    """A 256 x 256 scene and its mask, and a Cloud-Optimized copy with truncated pixel
    blocks (its header intact: it opens, its pixels fail to read)."""
    from rsunet.samples import make_mask

    _image(base / "big.tif", size=256, seed=3)
    _labels(base / "labels.gpkg")
    make_mask(base / "big.tif", base / "labels.gpkg", base / "big_mask.tif", field="class")
    _cog(base / "big.tif", base / "truncated.tif")
    _truncate(base / "truncated.tif")
    _cog(base / "big_mask.tif", base / "truncated_map.tif")
    _truncate(base / "truncated_map.tif", 0.5)
    return dict(big="big.tif", big_mask="big_mask.tif", truncated="truncated.tif", labels="labels.gpkg",
                truncated_map="truncated_map.tif")


def recipe_patches(base: Path) -> dict:
    """The scene, a split patch set, an unsplit one, and damaged copies of it."""
    from rsunet.patches import make_patches, split_patches

    names = _scene(base)
    make_patches(base / "image.tif", base / "mask.tif", base / "unsplit", size=32, stride=16,
                 progress=False)
    shutil.copytree(base / "unsplit", base / "patches")
    split_patches(base / "patches", fractions=(0.5, 0.5), method="random")
    make_patches(base / "image.tif", base / "mask.tif", base / "patches64", size=64, progress=False)
    damaged = dict(bad_json=lambda p: _truncate(p / "patches.json", 0.5),
                   bad_columns=lambda p: (p / "index.csv").write_text("patch_id,scene\na,b\n"),
                   bad_index=lambda p: (p / "index.csv").write_bytes(b"\xff\xfe\x00garbage\x00" * 20),
                   no_npy=lambda p: next((p / "scenes").glob("*.images.npy")).unlink())
    for name, damage in damaged.items():
        shutil.copytree(base / "patches", base / name)
        damage(base / name)
        names[name] = name
    (base / "model_history.csv").write_text("epoch,loss\n1,0.5\n")
    (base / "other_history.csv").write_text("epoch,loss\n1,0.5\n")
    (base / "model.keras").write_bytes(b"an earlier model")
    names.update(patches="patches", unsplit="unsplit", patches64="patches64", history_of="model.keras",
                 history="model_history.csv", other_history="other_history.csv")
    return names


def recipe_models(base: Path) -> dict:
    """The scene and its class map, a Random Forest, a tiny U-Net, and files named as
    models that are not."""
    from rsunet.baseline import train_baseline
    from rsunet.io import write_raster
    from rsunet.patches import make_patches, split_patches

    names = _scene(base)
    tmp = base / ".build"
    make_patches(base / "image.tif", base / "mask.tif", tmp / "p", size=32, stride=16,
                 progress=False)
    split_patches(tmp / "p", fractions=(0.5, 0.5), method="random")
    train_baseline(tmp / "p", base / "forest.joblib", n_per_class=50, n_trees=2)
    shutil.rmtree(tmp)
    vectors = Path(__file__).resolve().parents[2] / "inst" / "extdata" / "testvectors"
    shutil.copy2(vectors / "prediction_model.keras", base / "unet.keras")
    (base / "fake.keras").write_text("not a model\n")
    (base / "fake.joblib").write_text("not a model\n")
    with zipfile.ZipFile(base / "zip.keras", "w") as z:
        z.writestr("readme.txt", "a zip, but not a Keras model")
    _lambda_model(base / "lambda.keras")
    shutil.copy2(base / "mask.tif", base / "map.tif")
    write_raster(base / "blank_map.tif", np.full((1, 64, 64), 255, np.uint8), _transform(), CRS,
                 nodata=255)
    (base / "empty_folder").mkdir()
    (base / "map.csv").write_text("earlier\n")
    names.update(forest="forest.joblib", unet="unet.keras", fake_keras="fake.keras",
                 fake_joblib="fake.joblib", zip_keras="zip.keras", lambda_keras="lambda.keras",
                 map="map.tif", blank_map="blank_map.tif", empty_folder="empty_folder",
                 csv="map.csv", one_band=_image(base / "one_band.tif", bands=1, seed=1))
    return names


def _lambda_model(path):
    """A .keras file with a Lambda layer: Keras' safe mode refuses to load it."""
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(x)
    keras.Model(inputs, outputs).save(path)


def recipe_workflow(base: Path) -> dict:
    """The scene, and configuration files each with one mistake."""
    names = _scene(base)
    names["test_image"] = _image(base / "test_image.tif", seed=7)
    scenes = {"train": {"images": [str(base / "image.tif")], "labels": [str(base / "labels.gpkg")]},
              "test": {"images": [str(base / "test_image.tif")], "labels": [str(base / "labels.gpkg")]}}
    import yaml

    def config(name, **sections):
        text = yaml.safe_dump({"scenes": scenes, **sections}, sort_keys=False)
        (base / f"{name}.yaml").write_text(text)
        names[name] = f"{name}.yaml"
    config("typo", make_patches={"sise": 32})
    config("bad_value", make_patches={"size": "32px"})
    config("zero_epochs", train_unet={"epochs": 0})
    config("bad_fraction", make_patches={"min_valid": 1.5})
    config("owned_key", predict_raster={"image": "other.tif"})
    config("bad_section", make_patchez={"size": 32})
    config("missing_image", scenes={"train": {"images": [str(base / "none.tif")],
                                              "labels": [str(base / "labels.gpkg")]}})
    (base / "syntax.yaml").write_text("make_patches:\n  size: 32\n  stride: [16\nseed: 1\n")
    names["syntax"] = "syntax.yaml"
    config("ok", make_patches={"size": 32, "stride": 32})
    return names


RECIPES = {"scene": recipe_scene, "big": recipe_big, "patches": recipe_patches,
           "models": recipe_models, "workflow": recipe_workflow}
