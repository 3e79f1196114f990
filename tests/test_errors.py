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
import subprocess
import sys
from collections import Counter

import pytest

import rsunet
from conftest import VECTORS
from rsunet import errorcases
from rsunet.errors import RsunetError

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
