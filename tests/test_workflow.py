"""The main job end to end: run_workflow, the command line, and the Python tutorial.

Mirrored by tests/testthat/test-workflow.R (run_workflow from R on the same tiny config).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from conftest import ROOT, vectors
from rsunet.errors import InputError, OutputExistsError
from rsunet.example import example_data
from rsunet.workflow import example_config, read_config, run_workflow


def tiny_config() -> dict:
    """The shared tiny configuration (workflow.json): the example, trained briefly."""
    return vectors("workflow")["tiny_config"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wf") / "run"
    summary = run_workflow(tiny_config(), out=out)
    return out, summary


def test_workflow_writes_maps_metrics_and_figures(tiny_run):
    out, summary = tiny_run
    assert list(summary["model"]) == ["unet", "random_forest"]
    for col in ("overall_accuracy", "kappa", "f1_forest", "iou_forest"):
        assert summary[col].between(-1, 1).all(), col
    assert pd.read_csv(out / "summary.csv")["model"].tolist() == ["unet", "random_forest"]
    for image in example_data()["test"]["images"]:
        for model in ("unet", "random_forest"):
            with rasterio.open(out / "maps" / model / f"{image.stem}.tif") as m, \
                    rasterio.open(image) as src:
                assert m.crs == src.crs and m.transform == src.transform
                assert m.shape == src.shape and m.dtypes[0] == "uint8" and m.nodata == 255
            with rasterio.open(out / "maps" / model / f"{image.stem}_uncertainty.tif") as u:
                values = u.read(1)  # the shared config asks for margin
                assert u.tags()["RSUNET_UNCERTAINTY"] == "margin" and u.transform == m.transform
                assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1
    for fig in ("maps.png", "patches.png", "confusion_unet.png", "confusion_random_forest.png",
                "uncertainty.png"):
        assert (out / "figures" / fig).read_bytes()[:4] == b"\x89PNG", fig
    assert (out / "models" / "unet.keras").exists()
    assert (out / "models" / "unet_history.png").exists()


def test_summary_numbers_are_those_of_the_confusion_matrix(tiny_run):
    out, summary = tiny_run
    cm = pd.read_csv(out / "assessment" / "confusion_unet.csv", index_col=0).to_numpy()
    oa = cm.trace() / cm.sum()
    expected_chance = (cm.sum(0) * cm.sum(1)).sum() / cm.sum() ** 2
    kappa = (oa - expected_chance) / (1 - expected_chance)
    row = summary.set_index("model").loc["unet"]
    assert row["overall_accuracy"] == pytest.approx(oa, abs=1e-12)
    assert row["kappa"] == pytest.approx(kappa, abs=1e-12)
    assert row["pixels"] == cm.sum() == len(example_data()["test"]["images"]) * 512 * 512


def test_per_scene_accuracies_pool_to_the_summary(tiny_run):
    out, summary = tiny_run
    per_scene = pd.read_csv(out / "assessment" / "per_scene.csv")
    assert sorted(per_scene["scene"].unique()) == sorted(p.stem for p in example_data()["test"]["images"])
    for name, rows in per_scene.groupby("model"):
        pooled = (rows["overall_accuracy"] * rows["pixels"]).sum() / rows["pixels"].sum()
        assert pooled == pytest.approx(summary.set_index("model").loc[name, "overall_accuracy"], abs=1e-12)


def test_a_compare_maps_section_compares_the_two_models(tiny_run):
    out, summary = tiny_run
    cmp = pd.read_csv(out / "assessment" / "comparison.csv").set_index("metric")
    oa = cmp.loc["overall_accuracy"]
    by_model = summary.set_index("model")["overall_accuracy"]
    assert oa["unet"] == pytest.approx(by_model["unet"], abs=1e-12)
    assert oa["random_forest"] == pytest.approx(by_model["random_forest"], abs=1e-12)
    assert oa["lower"] <= oa["difference"] <= oa["upper"]
    assert 0 <= cmp.loc["mcnemar_p_value", "difference"] <= 1
    assert (out / "figures" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_a_cross_validate_section_cross_validates_every_scene(tiny_run):
    out, _ = tiny_run
    cv = out / "cross_validation"
    folds = pd.read_csv(cv / "folds.csv")
    data = example_data()
    scenes = {p.stem for part in ("train", "test") for p in data[part]["images"]}
    assert set(folds["scene"]) == scenes and not folds["scene"].duplicated().any()
    assert set(folds["fold"]) == {1, 2}
    summary = pd.read_csv(cv / "summary.csv")
    assert set(summary["model"]) == {"random_forest"}  # the section's models only
    assert (cv / "figures" / "cross_validation.png").exists()


def test_a_second_run_keeps_the_first(tiny_run):
    out, _ = tiny_run
    before = (out / "summary.csv").read_bytes()
    with pytest.raises(OutputExistsError):
        run_workflow(tiny_config(), out=out)
    assert (out / "summary.csv").read_bytes() == before


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="unknown configuration section"):
        read_config({"make_patchez": {}})
    with pytest.raises(InputError, match="not found"):
        read_config(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="nothing to train on"):
        run_workflow({"scenes": {"example": False}}, out=tmp_path / "x")


def test_example_configs_pass_the_checks_made_before_step_1():
    from rsunet.config import check_sections
    from rsunet.errors import ConfigError
    from rsunet.workflow import OPTIONAL, STEPS

    for kind in ({}, {"full": True}, {"quick": True}):
        check_sections(read_config(example_config(**kind)), {**STEPS, **OPTIONAL}, str(kind))
    cfg = read_config(example_config())
    cfg["train_unet"]["augmentation"] = {"p_gian": 0.5}  # a misspelt setting, found up front
    with pytest.raises(ConfigError, match="p_gian"):
        check_sections(cfg, {**STEPS, **OPTIONAL}, "x")
    # train_unet's choices at scale: keys are its argument names, values checked up front
    cfg = read_config(example_config())
    cfg["train_unet"].update(sampling="balanced", strategy="auto", stream=True, normalize="both")
    cfg["train_baseline"]["normalize"] = "both"
    check_sections(cfg, {**STEPS, **OPTIONAL}, "x")
    for key, bad in (("sampling", "rare"), ("strategy", "tpu"), ("stream", "yes"), ("normalize", "patch")):
        wrong = read_config(example_config())
        wrong["train_unet"][key] = bad
        with pytest.raises(ConfigError, match=f"train_unet.{key} must be one of"):
            check_sections(wrong, {**STEPS, **OPTIONAL}, "x")
    # predict_raster's batch_size: "auto" (its default) or a whole number of windows
    for good in ("auto", 8):
        cfg = read_config(example_config())
        cfg["predict_raster"]["batch_size"] = good
        check_sections(cfg, {**STEPS, **OPTIONAL}, "x")
    for bad, why in (("many", "must be a number"), (0, "must be at least 1")):
        cfg = read_config(example_config())
        cfg["predict_raster"]["batch_size"] = bad
        with pytest.raises(ConfigError, match=f"predict_raster.batch_size {why}"):
            check_sections(cfg, {**STEPS, **OPTIONAL}, "x")


def test_example_configs_name_only_real_arguments():
    import inspect

    import rsunet

    for full in (False, True):
        cfg = read_config(example_config(full))
        for step, options in cfg.items():
            if not isinstance(options, dict) or step == "scenes":
                continue
            params = inspect.signature(getattr(rsunet, step)).parameters
            assert set(options) <= set(params), (step, set(options) - set(params))


def _cli(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "rsunet", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_cli_help_teaches_and_errors_are_one_line(tmp_path):
    top = _cli("--help")
    assert top.returncode == 0 and "demo" in top.stdout and "patches" in top.stdout
    sub = _cli("patches", "--help")
    assert "multiple of 32" in sub.stdout and "--stride" in sub.stdout
    bad = _cli("patches", "a.tif", "b.tif", str(tmp_path / "p"), "--size", "100")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("rsunet: error:")
    missing = _cli("run", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_every_subcommand_has_help_with_every_argument():
    import argparse

    from rsunet.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 12
    for name, parser in sub.choices.items():
        text = parser.format_help()  # a stray % in a docstring once broke this
        for action in parser._actions:
            assert action.dest == "help" or action.help, f"rsunet {name}: {action.dest} has no help"
        assert text.startswith("usage: rsunet " + name)
    assert "98 % band percentiles" in " ".join(sub.choices["train"].format_help().split())


def test_cli_step_matches_the_function(tmp_path):
    data = example_data()["train"]
    out = tmp_path / "m.tif"
    res = _cli("mask", str(data["images"][0]), str(data["masks"][0]), str(out),
               "--classes", "{1: forest, 2: background}")
    assert res.returncode == 0, res.stderr
    with rasterio.open(out) as m:
        assert json.loads(m.tags()["RSUNET_CLASSES"]) == {"0": "background", "1": "forest"}
    again = [str(data["images"][0]), str(data["masks"][0]), str(out)]
    assert _cli("mask", *again).returncode == 2  # never replaces a user's file unasked
    assert _cli("mask", *again, "--overwrite").returncode == 0


def _python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["tutorial.md"])
def test_python_tutorial_runs(doc, tmp_path, monkeypatch):
    blocks = _python_blocks(ROOT / "docs" / doc)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{doc}[block {i}]", "exec"), namespace)
    for figure in ("patches.png", "augmentation.png", "confusion_unet.png"):
        assert (tmp_path / figure).exists(), figure
    assert namespace["unet_result"].overall["overall_accuracy"] > 0.5
    cv = namespace["cv"]  # the cross-validation block ran and held every chip out once
    assert sorted(cv.folds["scene"]) == sorted(p.stem for p in example_data()["train"]["images"])
