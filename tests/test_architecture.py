"""The package's structure (docs/architecture.md): no module reaches into another's private names.

A name that starts with ``_`` belongs to its module. When a second module needs it, it
gets a public home (in the module that owns the concept); this test keeps it so. The R
package has no counterpart: R has no import of another file's names (every R file of a
package shares one namespace), so there is nothing to mirror in tests/testthat.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "rsunet"
MODULES = sorted(PACKAGE.glob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _rsunet_module(module: str | None, level: int) -> bool:
    return level > 0 or module == "rsunet" or (module or "").startswith("rsunet.")


def private_imports(source: str) -> list[str]:
    """``from rsunet.x import _name`` and ``x._name`` (x an rsunet module bound by an import)."""
    tree = ast.parse(source)
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _rsunet_module(node.module, node.level):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                elif node.module == "rsunet" or node.level:
                    modules.add(alias.asname or alias.name)  # from rsunet import model as _model
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _rsunet_module(alias.name, 0):
                    modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in modules and _private(node.attr):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return sorted(found, key=lambda text: int(text.split(":")[0].split()[1]))


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_private_name_is_imported_across_modules(path):
    assert private_imports(path.read_text()) == []


def test_the_check_finds_private_imports():
    source = ("from rsunet.io import _read_padded, open_raster\n"
              "from . import samples\n"
              "from rsunet import model as _model\n"
              "from rasterio._err import CPLE_BaseError\n"
              "samples._key(1)\n_model.unet()\n_model._hidden\n")
    assert private_imports(source) == ["line 1: from rsunet.io import _read_padded",
                                       "line 5: samples._key", "line 7: _model._hidden"]


def test_both_kinds_of_model_satisfy_the_interface_prediction_needs():
    from rsunet.artefact import PixelModel, RsunetModel
    from rsunet.baseline import PixelForest

    assert isinstance(RsunetModel(keras_model=None, bands=3, classes={0: "a", 1: "b"}), PixelModel)
    assert isinstance(PixelForest(forest=None, bands=3, classes={0: "a", 1: "b"}), PixelModel)
    assert not isinstance(object(), PixelModel)


def _imported_modules(path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "rsunet":
                names.update(f"rsunet.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_prediction_and_the_model_artefact_do_not_import_training():
    for name in ("prediction.py", "artefact.py"):
        assert "rsunet.training" not in _imported_modules(PACKAGE / name), name
