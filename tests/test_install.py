"""Packaging: one version for R and Python, the R package's copy of the Python package,
the wheel's example data, the quick demo configuration and a quiet TensorFlow start.

Building and installing the packages themselves (R tarball -> install_rsunet() -> an
example; wheel -> fresh venv -> ``rsunet demo --quick``) is tools/test_install.sh.
"""

from __future__ import annotations

import filecmp
import os
import re
import subprocess
import sys
import tomllib

import pytest

import rsunet
from conftest import ROOT
from rsunet.cli import build_parser
from rsunet.errors import InputError
from rsunet.workflow import STEPS, example_config, read_config


def test_r_and_python_packages_have_one_version():
    description = (ROOT / "DESCRIPTION").read_text()
    r_version = re.search(r"^Version:\s*(\S+)", description, re.M).group(1)
    assert rsunet.__version__ == r_version
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


def test_sync_copies_the_package_for_the_r_bundle(tmp_path):
    dest = tmp_path / "bundle"
    subprocess.run(["bash", str(ROOT / "tools" / "sync_python.sh"), str(dest)], check=True)
    source, copy = ROOT / "python" / "rsunet", dest / "python" / "rsunet"
    py_files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file()
                      and "__pycache__" not in p.parts)
    assert py_files and sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == py_files
    assert all(filecmp.cmp(source / f, copy / f, shallow=False) for f in py_files)
    setuptools = tomllib.loads((dest / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["packages"] == ["rsunet", "rsunet.config"]  # R carries the chips itself
    assert setuptools["package-dir"] == {"rsunet": "python/rsunet"}
    assert "rsunet.data" not in setuptools["package-data"] and (dest / "README.md").exists()


def test_example_data_found_where_the_r_package_says(tmp_path, monkeypatch):
    from rsunet.example import example_data

    chips = ROOT / "inst" / "extdata" / "amazon"
    monkeypatch.setenv("RSUNET_EXAMPLE_DATA", str(chips))
    data = example_data()
    assert data["root"] == chips and len(data["train"]["images"]) == 10
    assert all(p.exists() for p in data["test"]["masks"]) and len(data["test"]["images"]) == 3


def test_quick_configuration_is_complete_and_exclusive():
    cfg = read_config(example_config(quick=True))
    assert set(STEPS) <= set(cfg) and cfg["train_unet"]["epochs"] <= 2
    with pytest.raises(InputError):
        example_config(full=True, quick=True)
    args = build_parser().parse_args(["demo", "--quick"])
    assert args.quick and not args.full and args.out is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--quick", "--full"])


def _tensorflow_start(level):
    # a user's fresh Python: not TF's log level, and not the LD_LIBRARY_PATH that an
    # earlier test's embedded R (rpy2) put in this process's environment (it puts
    # Debian's libpython first, which breaks pyenv's ssl module in a child Python)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "LD_LIBRARY_PATH")}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    code = "import rsunet, tensorflow as tf; print(tf.constant(2).numpy() * 3)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)


def test_tensorflow_starts_quietly_unless_asked():
    pytest.importorskip("tensorflow")
    quiet = _tensorflow_start(None)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "6"
    assert quiet.stderr.strip() == ""
    loud = _tensorflow_start("0")
    assert loud.returncode == 0 and re.search(r"oneDNN|absl|cpu_feature_guard", loud.stderr)
