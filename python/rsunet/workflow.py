"""The whole workflow from one configuration file: the course's steps, end to end.

mask -> patches -> split -> train (U-Net, and the Random Forest baseline) -> predict the
held-aside scenes -> assess both maps on the same pixels -> summary table and figures.

Every section of the configuration is named after the function it configures, and its
keys are that function's arguments (``make_patches: {size: 128}`` calls
``make_patches(..., size=128)``), so the functions' documentation documents the file.
``config/example.yaml`` (shipped with the package) runs the bundled Amazon chips;
``config/example-full.yaml`` trains longer for a better map.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import pandas as pd

from rsunet.config import check_cluster, check_scenes, check_sections, read_text_config
from rsunet.errors import ConfigError, InputError, OutputExistsError

# section -> the function its keys are arguments of (checked before step 1, rsunet.config)
STEPS = {"make_mask": "samples.make_mask", "make_patches": "patches.make_patches",
         "split_patches": "patches.split_patches", "unet": "training.train_unet",
         "train_unet": "training.train_unet", "train_baseline": "baseline.train_baseline",
         "predict_raster": "prediction.predict_raster", "assess_map": "assessment.assess_map"}
# sections that add a step when present
OPTIONAL = {"cross_validate": "validation.cross_validate", "compare_maps": "estimation.compare_maps"}


def example_config(full: bool = False, quick: bool = False) -> Path:
    """Path of a bundled example configuration: the demo (``config/example.yaml``);
    ``full=True`` the longer one; ``quick=True`` one of about a minute, to try an
    installation (a small U-Net, 2 epochs)."""
    if full and quick:
        raise InputError("example_config: choose full or quick, not both")
    name = "example-full.yaml" if full else "example-quick.yaml" if quick else "example.yaml"
    return Path(str(resources.files("rsunet") / "config" / name))


def read_config(config) -> dict:
    """A configuration as a dict, from a YAML/TOML file or a dict (checked, not filled)."""
    if isinstance(config, dict):
        cfg = dict(config)
    else:
        path = Path(config)
        if not path.exists():
            raise InputError(f"configuration not found: {path}")
        cfg = read_text_config(path)
    unknown = set(cfg) - set(STEPS) - set(OPTIONAL) - {"out", "seed", "scenes", "cluster"}
    if unknown:
        raise ConfigError(f"unknown configuration section(s): {sorted(unknown)}; "
                          f"expected out, seed, scenes, cluster, {', '.join(STEPS)} and "
                          f"optionally {', '.join(OPTIONAL)}")
    return cfg


def config_scenes(cfg) -> dict:
    """The configuration's scenes: ``{"train"|"test": {"images": [...], "labels": [...]}}``."""
    scenes = cfg.get("scenes") or {}
    if scenes.get("example"):
        from rsunet.example import example_data

        data = example_data()
        return {part: {"images": data[part]["images"], "labels": data[part]["masks"]}
                for part in ("train", "test")}
    for part in ("train", "test"):
        part_cfg = scenes.get(part) or {}
        if len(part_cfg.get("images") or []) != len(part_cfg.get("labels") or []):
            raise InputError(f"scenes.{part}: give one label file per image")
    if not (scenes.get("train") or {}).get("images"):
        raise InputError("scenes.train.images is empty: nothing to train on")
    return {part: {"images": [Path(p) for p in (scenes.get(part) or {}).get("images") or []],
                   "labels": [Path(p) for p in (scenes.get(part) or {}).get("labels") or []]}
            for part in ("train", "test")}


def _check_before_running(cfg, config, scenes, out):
    """Every error a configuration can hold, found before step 1 writes anything."""
    from rsunet.io import check_not_input

    source = "the configuration" if isinstance(config, dict) else str(config)
    if isinstance(cfg.get("seed", 0), bool) or not isinstance(cfg.get("seed", 0), int):
        raise ConfigError(f"{source}: seed must be a whole number, got {cfg['seed']!r}")
    check_sections(cfg, {**STEPS, **OPTIONAL}, source)
    check_cluster(cfg.get("cluster"), source)
    check_scenes(scenes, source)
    check_not_input(out, [p for part in scenes.values() for paths in part.values() for p in paths],
                    replaces_folder=True)


def _continues(out, overwrite) -> bool:
    """Mark ``out`` as a workflow's; an unfinished run marked so is continued: its own
    outputs are replaced (training and prediction resume where they stopped)."""
    marker = out / ".rsunet-workflow"
    unfinished = marker.exists() and not (out / "summary.csv").exists()
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return overwrite or unfinished


class _Log:
    """Prints each step with its duration, so a user sees where the time goes."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def step(self, text):
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {text}", flush=True)


def run_workflow(config, out=None, overwrite=False) -> pd.DataFrame:
    """Run the whole workflow from a configuration and write every output under ``out``.

    Args:
        config: a YAML or TOML file (see :func:`example_config`), or a dict.
        out: the output folder (default: the configuration's ``out``).
        overwrite: replace the outputs of an earlier run in ``out``. Not needed to continue
            a run that failed or was stopped: its outputs are replaced, training and
            prediction resume.

    A top-level ``cluster:`` (``local``, ``local:4``, ``tcp://host:8786``; see
    :func:`rsunet.predict_raster`) computes the steps that take a ``cluster`` argument
    (cutting patches, predicting, assessing) on that dask cluster; ``local`` starts one
    for each of those steps.

    A ``compare_maps:`` section (e.g. ``{block: 64, n_boot: 500}``, the arguments of
    :func:`rsunet.compare_maps`) compares the two models' maps of the held-aside scenes:
    the difference in accuracy, kappa and F1 with 95 % block-bootstrap intervals and
    McNemar's test, in ``out/assessment/comparison.csv`` and ``figures/comparison.png``.

    A ``cross_validate:`` section (e.g. ``{folds: 5, by: scene}``, the arguments of
    :func:`rsunet.cross_validate`) also cross-validates both models over all the
    configuration's scenes, train and test, into ``out/cross_validation/``: how well the
    models map scenes they have never seen, with the spread over folds.

    Returns:
        The summary table (also ``out/summary.csv``): one row per model (U-Net, Random
        Forest) with overall accuracy, kappa and per-class F1 and IoU on the held-aside
        scenes pooled; ``out/assessment/per_scene.csv`` has each model on each scene.

    Raises:
        InputError: the configuration is incomplete or inconsistent.
        OutputExistsError: ``out`` holds an earlier run and ``overwrite`` is False.
    """
    from rsunet.assessment import assess_map
    from rsunet.baseline import train_baseline
    from rsunet.cluster import session
    from rsunet.patches import make_patches, plot_patches, split_patches
    from rsunet.prediction import predict_raster
    from rsunet.samples import make_mask
    from rsunet.training import train_unet

    cfg = read_config(config)
    out = Path(out or cfg.get("out") or "rsunet-output")
    if (out / "summary.csv").exists() and not overwrite:
        raise OutputExistsError(f"{out} holds an earlier run; pass overwrite=True (--overwrite)")
    seed = cfg.get("seed", 0)
    scenes = config_scenes(cfg)
    _check_before_running(cfg, config, scenes, out)
    overwrite = _continues(out, overwrite)
    log = _Log()
    opts = {step: dict(cfg.get(step) or {}) for step in STEPS}

    log.step("1/7 masks: reference labels -> masks on each image's grid")
    masks = {part: [make_mask(image, labels, out / "masks" / f"{Path(image).stem}.tif",
                              overwrite=overwrite, **opts["make_mask"])["path"]
                    for image, labels in zip(scenes[part]["images"], scenes[part]["labels"])]
             for part in ("train", "test")}

    log.step("2/7 patches: cutting the training scenes")
    make_patches(scenes["train"]["images"], masks["train"], out / "patches",
                 overwrite=overwrite, cluster=cfg.get("cluster"), **opts["make_patches"])
    log.step("3/7 split: train / validation by spatial blocks")
    split_patches(out / "patches", seed=seed, **opts["split_patches"])
    plot_patches(out / "patches", out / "figures" / "patches.png", overwrite=overwrite)

    log.step("4/7 training the U-Net")
    train_unet(out / "patches", out / "models" / "unet.keras", seed=seed,
               overwrite=overwrite, **opts["unet"], **opts["train_unet"])
    log.step("5/7 training the Random Forest baseline (pixels to table)")
    train_baseline(out / "patches", out / "models" / "random_forest.joblib", seed=seed,
                   overwrite=overwrite, **opts["train_baseline"])

    log.step("6/7 predicting the held-aside scenes with both models")
    maps, uncertainty = {}, {}
    with session(cfg.get("cluster")) as cluster:  # one cluster for every scene and model
        for name, model in (("unet", out / "models" / "unet.keras"),
                            ("random_forest", out / "models" / "random_forest.joblib")):
            # one call for all the scenes (maps/<name>/<image name>.tif): the model is loaded
            # and prepared once, so its compiled forward pass is traced once, not per scene
            written = predict_raster(model, list(scenes["test"]["images"]), out / "maps" / name,
                                     overwrite=overwrite, cluster=cluster,
                                     **opts["predict_raster"])
            # a dict when probabilities or an uncertainty layer were written beside the map
            maps[name] = [w["classes"] if isinstance(w, dict) else w for w in written]
            if opts["predict_raster"].get("uncertainty"):
                uncertainty[name] = [w["uncertainty"] for w in written]

    log.step("7/7 assessing both maps against the reference")
    rows, per_scene = [], []
    for name, paths in maps.items():
        result = assess_map(paths, masks["test"], png=out / "figures" / f"confusion_{name}.png",
                            csv=out / "assessment" / f"confusion_{name}.csv",
                            overwrite=overwrite, cluster=cfg.get("cluster"),
                            **opts["assess_map"])
        _write_csv(result.per_class, out / "assessment" / f"per_class_{name}.csv")
        rows.append(_summary_row(name, result))
        per_scene.append(result.per_scene.assign(model=name).rename(columns={"n": "pixels"}))
    summary = pd.DataFrame(rows)
    per_scene = pd.concat(per_scene, ignore_index=True)[
        ["model", "scene", "pixels", "overall_accuracy", "kappa", "macro_f1"]].astype({"pixels": "int64"})
    _write_csv(per_scene, out / "assessment" / "per_scene.csv")
    _plot_comparison(scenes["test"]["images"], masks["test"], maps, per_scene,
                     out / "figures" / "maps.png")
    if uncertainty:
        _plot_uncertainty(scenes["test"]["images"], maps, uncertainty,
                          opts["predict_raster"]["uncertainty"], out / "figures" / "uncertainty.png")
    if cfg.get("compare_maps") is not None:
        log.step("U-Net vs Random Forest: differences with block-bootstrap intervals, McNemar")
        _compare_models(maps, masks["test"], out, overwrite, dict(cfg["compare_maps"]))
    if cfg.get("cross_validate") is not None:
        from rsunet.validation import cross_validate

        log.step("cross-validation of both models over all the scenes")
        cross_validate({k: v for k, v in cfg.items() if k not in OPTIONAL}, out / "cross_validation",
                       overwrite=overwrite, **dict(cfg["cross_validate"]))
    _write_csv(summary, out / "summary.csv")  # last: its presence means the run completed
    _report(out, summary)
    return summary


def _compare_models(maps, references, out, overwrite, options):
    """compare_maps of the U-Net's and the Random Forest's maps of the held-aside scenes
    (blocks pooled): ``assessment/comparison.csv`` (a = U-Net, b = Random Forest, with
    McNemar's test in the last rows) and ``figures/comparison.png``."""
    from rsunet.estimation import compare_maps, plot_comparison

    result = compare_maps(maps["unet"], maps["random_forest"], references, **options)
    plot_comparison(result, out / "figures" / "comparison.png", overwrite=True,
                    labels=("U-Net", "Random Forest"))
    m = result.mcnemar
    mcnemar = pd.DataFrame({"metric": ["mcnemar_statistic", "mcnemar_p_value"],
                            "difference": [m["statistic"], m["p_value"]]})
    table = pd.concat([result.table.rename(columns={"a": "unet", "b": "random_forest"}), mcnemar],
                      ignore_index=True)
    _write_csv(table, out / "assessment" / "comparison.csv")


def _write_csv(table, path):
    from rsunet.io import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)


def _summary_row(name, result) -> dict:
    row = {"model": name}
    row.update({k: result.overall[k] for k in ("overall_accuracy", "kappa", "macro_f1",
                                               "mean_iou", "quantity_disagreement",
                                               "allocation_disagreement")})
    for _, c in result.per_class.iterrows():
        row[f"f1_{c['class']}"] = c["f1"]
        row[f"iou_{c['class']}"] = c["iou"]
    row["pixels"] = int(result.overall["n"])
    return row


def _plot_comparison(images, references, maps, per_scene, path):
    """One row per held-aside scene: image, reference, then each model's map and accuracy."""
    import matplotlib.patches
    import numpy as np
    from rsunet.io import read_raster
    from rsunet.labels import IGNORE
    from rsunet.plotting import class_colormap, new_figure, save_figure, stretch

    columns = ["image", "reference"] + [name.replace("_", " ") for name in maps]
    fig = new_figure(figsize=(3 * len(columns), 3 * len(images)))
    axes = fig.subplots(len(images), len(columns), squeeze=False)
    classes = _classes_of(references[0])
    cmap = class_colormap(max(classes) + 1)
    for i, image in enumerate(images):
        img = read_raster(image)
        axes[i, 0].imshow(stretch(img.data[:3], img.nodata))
        layers = [references[i]] + [paths[i] for paths in maps.values()]
        for j, layer in enumerate(layers, start=1):
            values = np.ma.masked_equal(read_raster(layer).data[0], IGNORE)
            axes[i, j].imshow(values, cmap=cmap, vmin=-0.5, vmax=max(classes) + 0.5,
                              interpolation="nearest")
        for j, name in enumerate(maps, start=2):
            row = per_scene[(per_scene["model"] == name) & (per_scene["scene"] == Path(maps[name][i]).stem)]
            axes[i, j].set_xlabel(f"accuracy {row['overall_accuracy'].iloc[0]:.3f}, "
                                  f"kappa {row['kappa'].iloc[0]:.3f}", fontsize=8)
        axes[i, 0].set_ylabel(Path(image).stem, fontsize=8)
    for j, title in enumerate(columns):
        axes[0, j].set_title(title)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [matplotlib.patches.Patch(color=cmap(k), label=name) for k, name in classes.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, path, overwrite=True)


def _plot_uncertainty(images, maps, uncertainty, kind, path):
    """One row per held-aside scene: the image, then each model's map beside its uncertainty."""
    import numpy as np
    from rsunet.io import read_raster
    from rsunet.labels import IGNORE
    from rsunet.plotting import class_colormap, new_figure, save_figure, stretch

    columns = ["image"] + [f"{name.replace('_', ' ')}{part}" for name in uncertainty
                           for part in ("", f": {kind}")]
    fig = new_figure(figsize=(3 * len(columns), 3 * len(images) + 0.6))
    axes = fig.subplots(len(images), len(columns), squeeze=False)
    k = max(_classes_of(maps[next(iter(maps))][0])) + 1
    for i, image in enumerate(images):
        img = read_raster(image)
        axes[i, 0].imshow(stretch(img.data[:3], img.nodata))
        axes[i, 0].set_ylabel(Path(image).stem, fontsize=8)
        for j, name in enumerate(uncertainty):
            labels = np.ma.masked_equal(read_raster(maps[name][i]).data[0], IGNORE)
            axes[i, 1 + 2 * j].imshow(labels, cmap=class_colormap(k), vmin=-0.5, vmax=k - 0.5,
                                      interpolation="nearest")
            u = read_raster(uncertainty[name][i]).data[0]
            # uint8 layers hold round(u * 254), nodata 255 (prob_dtype="uint8")
            u = np.ma.masked_equal(u, 255) / 254 if u.dtype == np.uint8 else np.ma.masked_invalid(u)
            shown = axes[i, 2 + 2 * j].imshow(u, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    for j, title in enumerate(columns):
        axes[0, j].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, orientation="horizontal", fraction=0.03, pad=0.02,
                 label=f"uncertainty ({kind}): 0 sure, 1 undecided")
    return save_figure(fig, path, overwrite=True)


def _classes_of(mask_path) -> dict:
    import rasterio

    from rsunet.labels import read_classes_tag

    with rasterio.open(mask_path) as src:
        return read_classes_tag(src.tags()) or {0: "0", 1: "1"}


def _report(out, summary):
    from rsunet.artefact import read_metadata

    history = pd.read_csv(out / "models" / "unet_history.csv").set_index("epoch", drop=False)
    best = history.loc[read_metadata(out / "models" / "unet.keras")["best_epoch"]]
    print(f"\nU-Net validation patches, best epoch {int(best['epoch'])}: "
          f"F1 {best['val_f1']:.3f}, IoU {best['val_iou']:.3f}")
    print("\nSummary on the held-aside scenes:")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if (out / "assessment" / "comparison.csv").exists():
        print("\nU-Net - Random Forest, 95 % block-bootstrap intervals (assessment/comparison.csv):")
        print(pd.read_csv(out / "assessment" / "comparison.csv").to_string(
            index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    per_scene = pd.read_csv(out / "assessment" / "per_scene.csv")
    print("\nOverall accuracy per scene:")
    print(per_scene.pivot(index="scene", columns="model", values="overall_accuracy")
          .to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nOutputs in {out.resolve()}:")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and "patches" not in p.parts):
        print(f"  {path.relative_to(out)}")
    print(f"  patches/ ({len(list((out / 'patches' / 'scenes').glob('*')))} stacks, index.csv)")
