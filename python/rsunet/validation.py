"""Cross-validation over scenes (or spatial blocks): how well will a map of a new scene be?

A score on patches cut from the training scenes says little about a scene the model has
never seen: haze, season, sensor and landscape change from scene to scene. The honest
test is to hold whole scenes out, train on the others, map the held-out scenes and
assess those maps; then do it again with other scenes held out, until every scene has
been mapped once by a model that never saw it. :func:`cross_validate` does this for the
U-Net and the pixel Random Forest on the same folds, so the two are compared scene by
scene, with the spread over folds and not a best run.

``by="scene"`` folds never share a scene between training and assessment. ``by="block"``
(for a user with one or two large scenes) cuts each scene into square blocks of
``block`` x ``block`` patch cells and holds whole blocks out; training patches that
share a pixel with a held-out block are left out of that fold (purged), and each fold's
maps are assessed only inside its held-out blocks.

Outputs under ``out``: ``folds.csv`` (which scene or block is in which fold),
``fold-<k>/`` (``index.csv``: the fold's split of every patch, ``train``,
``validation``, ``test`` (held out) or ``excluded``; its models and maps), ``scores.csv`` (each
model on each fold, pooled, and on each scene), ``summary.csv`` (mean, standard
deviation, minimum and maximum over folds, and the pooled figure over all folds' maps),
``figures/cross_validation.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rsunet.errors import InputError, OutputExistsError
from rsunet.io import check_not_input
from rsunet.patches import block_ids

BY = ("scene", "block")
MODELS = ("unet", "random_forest")
MODEL_FILES = {"unet": "unet.keras", "random_forest": "random_forest.joblib"}
# the figures summarised over folds (per-class F1 columns are added per class)
METRICS = ("macro_f1", "overall_accuracy", "kappa", "mean_iou")


@dataclass
class CrossValidation:
    """The result of :func:`cross_validate`.

    Attributes:
        scores: one row per model and fold (``scene == "all"``: the fold's held-out
            pixels pooled) and per model, fold and scene: ``model``, ``fold``,
            ``scene``, ``pixels``, ``macro_f1``, ``overall_accuracy``, ``kappa``,
            ``mean_iou``, and ``f1_<class>`` for the fold rows.
        summary: one row per model and figure: ``mean``, ``sd`` (over folds, n - 1),
            ``min``, ``max`` and ``pooled`` (every fold's maps assessed together).
        folds: which fold holds out each scene (``by="scene"``) or block.
        out: the output folder.
    """

    scores: pd.DataFrame
    summary: pd.DataFrame
    folds: pd.DataFrame
    out: Path

    def table(self) -> pd.DataFrame:
        """The summary as one row per model: ``<figure>_mean`` and ``<figure>_sd``."""
        wide = self.summary.pivot(index="model", columns="metric", values=["mean", "sd"])
        wide.columns = [f"{metric}_{stat}" for stat, metric in wide.columns]
        return wide.reset_index()

    def __repr__(self) -> str:
        lines = [f"CrossValidation({self.folds['fold'].nunique()} folds, out={str(self.out)!r})"]
        for _, r in self.summary[self.summary["metric"] == "macro_f1"].iterrows():
            lines.append(f"  {r['model']:>13}: macro F1 {r['mean']:.3f} +/- {r['sd']:.3f} "
                         f"(folds {r['min']:.3f} to {r['max']:.3f}; pooled {r['pooled']:.3f})")
        return "\n".join(lines)


def cross_validate(source, out, folds=5, by="scene", block=4, seed=None, models=MODELS,
                   config=None, overwrite=False, progress=True) -> CrossValidation:
    """Train and assess the U-Net and the Random Forest on scene-wise (or block-wise) folds.

    Every fold trains both models on the other folds' scenes (split into training and
    validation patches as ``split_patches`` configures), maps its own held-out scenes
    with :func:`rsunet.predict_raster` and assesses the maps against their masks with
    :func:`rsunet.assess_map`. A scene is never used for training in the fold that
    assesses it. An interrupted run continues where it stopped when called again with
    the same arguments (finished folds are kept, training resumes at its last epoch).

    Args:
        source: a workflow configuration (YAML/TOML file or dict, see
            :func:`rsunet.example_config`): all its scenes, ``train`` and ``test``, are
            cross-validated, with its settings; or a patch folder from
            :func:`rsunet.make_patches` (its scenes' images and masks must still be where
            they were), with the settings of ``config``.
        out: the output folder.
        folds: number of folds (at least 2; at most the number of scenes for
            ``by="scene"``).
        by: ``"scene"`` (hold out whole scenes) or ``"block"`` (hold out spatial blocks
            of ``block`` x ``block`` patch cells).
        block: block edge in patch cells, for ``by="block"``.
        seed: the folds' and the models' random seed (default: the configuration's
            ``seed``, else 0).
        models: which models to cross-validate: ``"unet"``, ``"random_forest"`` or both.
        config: for a patch-folder ``source``: a configuration whose sections
            (``split_patches``, ``unet``, ``train_unet``, ``train_baseline``,
            ``predict_raster``, ``assess_map``) set the steps' arguments; None uses the
            functions' defaults.
        overwrite: replace an earlier cross-validation in ``out`` made with other
            settings.
        progress: show progress bars.

    Returns:
        A :class:`CrossValidation` (``.scores``, ``.summary``, ``.folds``; printed as
        mean +/- sd of macro F1 per model).

    Raises:
        InputError: fewer scenes (or blocks) than folds, a bad ``by`` or ``models``,
            or a patch folder whose scenes cannot be found.
        OutputExistsError: ``out`` holds a cross-validation with other settings and
            ``overwrite`` is False.
        OutputIsInputError: ``out`` is, holds or lies inside an input (the patch folder,
            the configuration file).
    """
    from rsunet.config import check_sections
    from rsunet.patches import PatchSet
    from rsunet.workflow import STEPS, read_config

    models = _check_models(models)
    if by not in BY:
        raise InputError(f"by must be one of {BY}, got {by!r}")
    if int(folds) < 2:
        raise InputError(f"folds must be at least 2, got {folds}")
    is_patches = _is_patch_folder(source)
    if is_patches:
        cfg = read_config(config) if config is not None else {}
    else:
        cfg = read_config(source)
    check_sections(cfg, STEPS, "the configuration" if isinstance(config or source, dict)
                   else str(config if is_patches else source))
    seed = int(cfg.get("seed", 0) if seed is None else seed)
    out = Path(out)
    if not is_patches and by == "scene":
        _check_enough_scenes(cfg, int(folds))
    check_not_input(out, [source if is_patches else None, _files(config), _files(source)],
                    replaces_folder=True)
    settings = dict(source=str(Path(source).resolve()) if is_patches else _jsonable(cfg),
                    folds=int(folds), by=by, block=int(block), seed=seed, models=list(models))
    _claim(out, settings, overwrite)
    log = _log()

    if is_patches:
        ps = PatchSet(source)
    else:
        log("masks and patches of every scene")
        ps = PatchSet(_patches_from_config(cfg, out, progress))
    _check_sources(ps)
    assignment = assign_folds(ps.index, int(folds), by, int(block), seed)
    _write_folds(ps, assignment, by, int(block), out / "folds.csv")

    rows = []
    for k in range(1, int(folds) + 1):
        log(f"fold {k}/{folds}: {_held_out_text(ps, assignment, k, by)}")
        rows.append(_run_fold(ps, assignment, k, by, int(block), cfg, models, seed, out / f"fold-{k}",
                              progress))
    scores = pd.concat(rows, ignore_index=True)
    summary = _summary(scores, _pooled(ps, cfg, models, out, int(folds)))
    _write_csv(scores, out / "scores.csv")
    _write_csv(summary, out / "summary.csv")
    result = CrossValidation(scores=scores, summary=summary, folds=pd.read_csv(out / "folds.csv"), out=out)
    plot_cross_validation(result, out / "figures" / "cross_validation.png")
    print(result)
    return result


# ---- folds ------------------------------------------------------------------------------

def assign_folds(index, folds=5, by="scene", block=4, seed=0) -> pd.Series:
    """The fold (1..folds) of every patch of a patch index.

    Units (scenes, or blocks of ``block`` x ``block`` patch cells, a patch belonging to
    the cell holding its centre) are shuffled with ``seed`` and each is given to the fold
    with the fewest patches so far: folds of near-equal size, whole units in each.

    Raises:
        InputError: fewer units than folds.
    """
    units = index["scene"].astype(str) if by == "scene" else block_ids(index, block)
    sizes = units.value_counts(sort=False)
    if len(sizes) < folds:
        what = "scenes" if by == "scene" else f"blocks of {block} x {block} patches"
        hint = "use by='block' or fewer folds" if by == "scene" else "use a smaller block or fewer folds"
        raise InputError(f"{folds} folds need at least {folds} {what}; there are {len(sizes)}: {hint}")
    order = sorted(sizes.index)  # a fixed order first, so the seed alone decides
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    load, fold_of = np.zeros(folds), {}
    for unit in order:
        fold_of[unit] = int(np.argmin(load)) + 1
        load[fold_of[unit] - 1] += sizes[unit]
    return units.map(fold_of).rename("fold")


def _fold_index(ps, assignment, k, by, block, split_cfg, seed):
    """The patch index of fold ``k``: held-out patches ``"test"``, the others split into
    train / validation as ``split_patches`` does, minus any that touch a held-out block."""
    from rsunet.patches import split_patches

    held = (assignment == k).to_numpy()
    table = ps.index.copy()
    train_part = split_patches(table[~held], seed=seed, **split_cfg)
    table["split"] = "test"
    table.loc[~held, "split"] = train_part["split"].to_numpy()
    if by == "block":
        touching = _touches(table, _held_blocks(table, assignment, k, block), block)
        table.loc[~held & touching, "split"] = "excluded"
    return table


def _held_blocks(index, assignment, k, block) -> set:
    return set(block_ids(index, block)[(assignment == k).to_numpy()])


def _touches(index, blocks, block):
    """Whether each patch shares a pixel with one of ``blocks`` ("scene:row:col" cells)."""
    cell = int(block) * index["width"].astype(int)
    hit = np.zeros(len(index), bool)
    for dr in (0, 1):
        for dc in (0, 1):  # a patch no larger than a cell touches at most 2 x 2 cells
            r = (index["row_off"] + dr * (index["height"] - 1)) // cell
            c = (index["col_off"] + dc * (index["width"] - 1)) // cell
            keys = index["scene"].astype(str) + ":" + r.astype(str) + ":" + c.astype(str)
            hit |= keys.isin(blocks).to_numpy()
    return hit


def _write_folds(ps, assignment, by, block, path):
    columns = {"scene": ps.index["scene"].astype(str)}
    if by == "block":
        columns["block"] = block_ids(ps.index, block)
    table = pd.DataFrame({**columns, "fold": assignment}).drop_duplicates()
    _write_csv(table.sort_values(["fold", *columns]), path)


def _held_out_text(ps, assignment, k, by):
    scenes = sorted(ps.index.loc[(assignment == k).to_numpy(), "scene"].astype(str).unique())
    if by == "scene":
        return f"holding out {len(scenes)} scene(s): {', '.join(scenes)}"
    return f"holding out {int((assignment == k).sum())} patches in blocks of {len(scenes)} scene(s)"


# ---- one fold ----------------------------------------------------------------------------

def _run_fold(ps, assignment, k, by, block, cfg, models, seed, folder, progress):
    done = folder / "scores.csv"
    if done.exists():
        return pd.read_csv(done)
    opts = {s: dict(cfg.get(s) or {}) for s in ("split_patches", "unet", "train_unet",
                                                "train_baseline", "predict_raster", "assess_map")}
    for extra in ("output", "uncertainty"):  # the folds assess class maps: no other layers
        opts["predict_raster"].pop(extra, None)
    view = ps.with_index(_fold_index(ps, assignment, k, by, block, opts["split_patches"], seed))
    _write_csv(view.index, folder / "index.csv")  # the fold's split, patch by patch: traceable
    trained = _train(view, models, opts, seed, folder / "models", progress)
    held = view.index["split"] == "test"
    scenes = sorted(view.index.loc[held, "scene"].astype(str).unique())
    blocks = None if by == "scene" else (_held_blocks(ps.index, assignment, k, block), block * ps.size)
    rows = []
    for name, model in trained.items():
        maps = [_fold_map(model, ps, scene, folder / "maps" / name / f"{scene}.tif", blocks,
                          opts["predict_raster"], progress)
                for scene in scenes]
        result = _assess(maps, [ps.scenes[s]["mask"] for s in scenes], opts["assess_map"])
        rows.append(_score_rows(result, name, k))
    scores = pd.concat(rows, ignore_index=True)
    _write_csv(scores, done)  # last: its presence means the fold is complete
    return scores


def _train(view, models, opts, seed, folder, progress):
    from rsunet.baseline import train_baseline
    from rsunet.training import train_unet

    trained = {}
    for name in models:
        path = folder / MODEL_FILES[name]
        if not path.exists():
            if name == "unet":
                train_unet(view, path, seed=seed, **{"progress": progress, **opts["unet"], **opts["train_unet"]})
            else:
                train_baseline(view, path, seed=seed, **opts["train_baseline"])
        trained[name] = path
    return trained


def _fold_map(model, ps, scene, path, blocks, predict_cfg, progress):
    """The map of one held-out scene (for blocks: only the held-out blocks, 255 elsewhere)."""
    from rsunet.prediction import predict_raster

    if path.exists():
        return path
    image = ps.scenes[scene]["image"]
    if blocks is None:
        return predict_raster(model, image, path, **{"progress": progress, **predict_cfg})
    full = path.with_name(f".{path.stem}.full.tif")
    predict_raster(model, image, full, overwrite=True, **{"progress": progress, **predict_cfg})
    held, cell = blocks
    cells = [tuple(int(v) for v in key.rsplit(":", 2)[1:]) for key in held
             if key.rsplit(":", 2)[0] == scene]
    _keep_cells(full, path, cells, cell)
    full.unlink()
    return path


def _keep_cells(full, path, cells, cell):
    """Write ``full``'s classes inside the held-out cells, its nodata (255) elsewhere."""
    from rsunet.io import read_raster, write_raster

    raster = read_raster(full)
    keep = np.zeros(raster.data.shape[1:], bool)
    for r, c in cells:
        keep[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = True
    data = np.where(keep, raster.data, raster.nodata).astype(raster.data.dtype)
    write_raster(path, data, raster.transform, raster.crs, nodata=raster.nodata, tags=_tags(full))


def _tags(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.tags()


def _assess(maps, masks, assess_cfg):
    from rsunet.assessment import assess_map

    return assess_map(list(maps), list(masks), **assess_cfg)


def _score_rows(result, model, fold) -> pd.DataFrame:
    """The fold's pooled figures (scene "all", with per-class F1) and each scene's."""
    pooled = dict(model=model, fold=fold, scene="all", pixels=int(result.overall["n"]),
                  **{m: float(result.overall[m]) for m in METRICS})
    pooled.update({f"f1_{c}": float(f) for c, f in zip(result.per_class["class"], result.per_class["f1"])})
    scenes = result.per_scene.rename(columns={"n": "pixels"}).assign(model=model, fold=fold)
    rows = pd.concat([pd.DataFrame([pooled]), scenes[["model", "fold", "scene", "pixels", *METRICS]]],
                     ignore_index=True)
    return rows.astype({"pixels": "int64"})


# ---- all folds --------------------------------------------------------------------------

def _pooled(ps, cfg, models, out, folds) -> dict:
    """Each model's figures over every fold's maps assessed together."""
    pooled = {}
    for name in models:
        maps, masks = [], []
        for k in range(1, folds + 1):
            for path in sorted((out / f"fold-{k}" / "maps" / name).glob("*.tif")):
                maps.append(path)
                masks.append(ps.scenes[path.stem]["mask"])
        result = _assess(maps, masks, dict(cfg.get("assess_map") or {}))
        pooled[name] = _score_rows(result, name, 0).iloc[0]
    return pooled


def _summary(scores, pooled) -> pd.DataFrame:
    per_fold = scores[scores["scene"] == "all"]
    figures = list(METRICS) + sorted(c for c in per_fold.columns if c.startswith("f1_"))
    rows = []
    for model, table in per_fold.groupby("model", sort=False):
        for metric in figures:
            v = table[metric].astype(float)
            rows.append(dict(model=model, metric=metric, folds=len(v), mean=v.mean(),
                             sd=v.std(ddof=1) if len(v) > 1 else float("nan"),
                             min=v.min(), max=v.max(), pooled=float(pooled[model][metric])))
    return pd.DataFrame(rows)


def plot_cross_validation(cv, out=None):
    """A figure of a cross-validation: each fold's macro F1 per model (folds joined by a
    line, so a paired comparison reads at a glance), and each scene's macro F1 of the
    U-Net against the Random Forest.

    Args:
        cv: a :class:`CrossValidation` or its output folder.
        out: a PNG to write (optional; replaced if it exists).

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    from rsunet.plotting import new_figure, save_figure

    scores = cv.scores if isinstance(cv, CrossValidation) else pd.read_csv(Path(cv) / "scores.csv")
    folds = scores[scores["scene"] == "all"].pivot(index="fold", columns="model", values="macro_f1")
    scenes = scores[scores["scene"] != "all"].pivot_table(index="scene", columns="model", values="macro_f1")
    fig = new_figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(folds.columns))
    colours = [f"C{i % 10}" for i in range(len(folds))]
    for (fold, row), colour in zip(folds.iterrows(), colours):
        ax1.plot(x, row.to_numpy(), "o-", color=colour, label=f"fold {fold}")
    sd = folds.std(ddof=1) if len(folds) > 1 else folds.mean() * 0
    ax1.errorbar(x + 0.12, folds.mean(), yerr=sd, fmt="D", color="k", capsize=4, label="mean +/- sd")
    ax1.set_xticks(x, [m.replace("_", " ") for m in folds.columns])
    ax1.set_xlim(-0.4, len(x) - 0.4)
    ax1.set_ylabel("macro F1 of the held-out maps")
    ax1.set_title("each fold, both models" if len(folds.columns) > 1 else "each fold")
    ax1.legend(fontsize=7, loc="lower right")
    if {"unet", "random_forest"} <= set(scenes.columns):
        lo = float(np.nanmin(scenes[["unet", "random_forest"]].to_numpy())) - 0.02
        ax2.plot([lo, 1], [lo, 1], "--", color="0.6")
        ax2.scatter(scenes["random_forest"], scenes["unet"], s=14)
        for scene, r in scenes.iterrows():  # name the scenes where the two models part ways
            if abs(r["unet"] - r["random_forest"]) > 0.1:
                ax2.annotate(scene, (r["random_forest"], r["unet"]), fontsize=6,
                             xytext=(3, -8), textcoords="offset points")
        ax2.set_xlabel("Random Forest macro F1")
        ax2.set_ylabel("U-Net macro F1")
        wins = int((scenes["unet"] > scenes["random_forest"]).sum())
        ax2.set_title(f"each scene: U-Net ahead on {wins} of {len(scenes)}")
    else:  # one model: its scenes, worst first
        model = scenes.columns[0]
        ranked = scenes[model].sort_values()
        ax2.barh(np.arange(len(ranked)), ranked.to_numpy(), color="C0")
        ax2.set_yticks(np.arange(len(ranked)), [str(n) for n in ranked.index], fontsize=6)
        ax2.set_xlim(max(0.0, float(ranked.min()) - 0.05), 1)
        ax2.set_xlabel(f"{model.replace('_', ' ')} macro F1")
        ax2.set_title("each scene, worst first")
    fig.tight_layout()
    return save_figure(fig, out, overwrite=True)


# ---- set-up -------------------------------------------------------------------------------

def _check_models(models):
    models = [models] if isinstance(models, str) else list(models)
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise InputError(f"models must be among {MODELS}, got {models}")
    return models


def _is_patch_folder(source) -> bool:
    return not isinstance(source, dict) and (Path(source) / "patches.json").is_file()


def _patches_from_config(cfg, out, progress) -> Path:
    """Masks of every labelled scene of the configuration (train and test), cut into one
    patch set; both are kept in ``out`` and reused by a resumed run."""
    from rsunet.patches import make_patches
    from rsunet.samples import make_mask
    from rsunet.workflow import config_scenes

    scenes = config_scenes(cfg)
    images = scenes["train"]["images"] + scenes["test"]["images"]
    labels = scenes["train"]["labels"] + scenes["test"]["labels"]
    masks = []
    for image, label in zip(images, labels):
        path = out / "masks" / f"{Path(image).stem}.tif"
        if not path.exists():
            make_mask(image, label, path, **dict(cfg.get("make_mask") or {}))
        masks.append(path)
    patches = out / "patches"
    if not (patches / "index.csv").exists():
        make_patches(images, masks, patches, progress=progress, **dict(cfg.get("make_patches") or {}))
    return patches


def _check_enough_scenes(cfg, folds):
    """Before anything is written: scene-wise folds need at least one scene each."""
    from rsunet.workflow import config_scenes

    scenes = config_scenes(cfg)
    n = len(scenes["train"]["images"]) + len(scenes["test"]["images"])
    if n < folds:
        raise InputError(f"{folds} folds need at least {folds} scenes; the configuration has {n}: "
                         "use by='block' or fewer folds")


def _check_sources(ps):
    missing = [f"{name}: {s[k]}" for name, s in ps.scenes.items() for k in ("image", "mask")
               if not Path(s[k]).exists()]
    if missing:
        raise InputError(f"cross-validation maps each scene from its image and mask, but "
                         f"{len(missing)} file(s) of {ps.path} are gone ({missing[0]}, ...): "
                         "make the patch set again from where the files are now")


def _claim(out, settings, overwrite):
    """Record the settings in ``out/cross_validation.json``; a run with other settings
    needs ``overwrite`` (which clears the folder), the same settings continue."""
    import shutil

    record = out / "cross_validation.json"
    text = json.dumps(settings, indent=1, sort_keys=True, default=str)
    if record.exists() and record.read_text() != text:
        if not overwrite:
            raise OutputExistsError(f"{out} holds a cross-validation with other settings; pass "
                                    "overwrite=True to replace it, or choose another out")
        shutil.rmtree(out)
    elif not record.exists() and out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} exists and is not a cross-validation folder; pass "
                                    "overwrite=True to replace it, or choose another out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(text)


def _files(x):
    """A configuration or patch folder given as a path (not a dict), else None."""
    return None if x is None or isinstance(x, dict) else x


def _jsonable(cfg):
    return json.loads(json.dumps(cfg, default=str))


def _write_csv(table, path):
    from rsunet.io import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)


def _log():
    t0 = time.perf_counter()
    return lambda text: print(f"[{time.perf_counter() - t0:7.1f}s] cross_validate: {text}", flush=True)
