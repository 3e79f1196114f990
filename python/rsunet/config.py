"""Checking a workflow configuration before anything runs.

Each section of a configuration is named after the function it configures and its keys
are that function's arguments, so a section is checked against the function's signature:
unknown keys (with the nearest argument name), arguments the workflow sets itself, and
values of the wrong type or out of range. The checks are generic: a new section needs
only its function in the workflow's table of steps.
"""

from __future__ import annotations

import difflib
import inspect
from importlib import import_module
from pathlib import Path

from rsunet.errors import ConfigError, InputError
from rsunet.normalization import NORMALIZE

# arguments the workflow passes itself (with the required ones: inputs and outputs)
WORKFLOW_OWNED = {"out", "out_dir", "overwrite", "seed", "png", "csv", "callbacks",
                  "cluster"}  # cluster: one top-level key for every step that takes it
# value ranges by argument name: the same name means the same thing in every function
POSITIVE = {"size", "stride", "epochs", "batch_size", "patience", "window", "filters", "depth",
            "n_trees", "n_per_class", "block", "sample", "n_boot", "thin"}
NON_NEGATIVE = {"overlap"}
UNIT_INTERVAL = {"min_labelled", "min_valid", "dropout"}
# flags that also take a mapping of settings (train_unet's augmentation: True, False or a
# dict of rsunet.augment's settings, checked here so a misspelt one is found before step 1)
FLAG_OR_SETTINGS = {"augmentation"}
# arguments that take one of a few values (train_unet's, train_baseline's normalize: a misspelt
# one is found before step 1)
CHOICES = {"sampling": ("uniform", "balanced"), "strategy": ("auto", "mirrored", "default"),
           "stream": ("auto", True, False), "normalize": NORMALIZE}


def read_text_config(path: Path) -> dict:
    """A YAML or TOML file as a dict; a syntax error names the file, line and column."""
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: TOML syntax error: {exc}") from exc
    else:
        import yaml

        try:
            cfg = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(cfg).__name__}")
    return cfg


def resolve(target: str):
    """``"module.function"`` (under ``rsunet``) -> the function."""
    module, name = target.rsplit(".", 1)
    return getattr(import_module(f"rsunet.{module}"), name)


def check_sections(cfg: dict, steps: dict, source="the configuration"):
    """Check every section of ``cfg`` named in ``steps`` (section -> ``"module.function"``)."""
    for section, target in steps.items():
        options = cfg.get(section)
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ConfigError(f"{source}: section {section} must be a mapping of arguments, got "
                              f"{options!r}")
        params = inspect.signature(resolve(target)).parameters
        for key, value in options.items():
            _check_key(section, key, params, source)
            _check_value(section, key, value, params[key].default, source)


def _check_key(section, key, params, source):
    free = [n for n, p in params.items()
            if p.default is not inspect.Parameter.empty and n not in WORKFLOW_OWNED]
    if key in free:
        return
    if key in params:
        raise ConfigError(f"{source}: {section}.{key} is set by the workflow itself; remove it")
    near = difflib.get_close_matches(str(key), free, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ConfigError(f"{source}: {section} has no argument {key!r}; {hint}"
                      f"its arguments are {', '.join(free)}")


def _check_value(section, key, value, default, source):
    name = f"{source}: {section}.{key}"
    if isinstance(default, str) and value == default:  # e.g. batch_size: auto
        return
    if key in CHOICES:
        if not any(value is choice or value == choice and type(value) is type(choice)
                   for choice in CHOICES[key]):
            raise ConfigError(f"{name} must be one of {', '.join(map(str, CHOICES[key]))}, got {value!r}")
        return
    if isinstance(default, bool):
        if key in FLAG_OR_SETTINGS and isinstance(value, dict):
            _check_augmentation(name, value)
            return
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return
    whole = isinstance(value, int) and not isinstance(value, bool)
    number = whole or isinstance(value, float)
    if isinstance(default, int) and not whole and not (default is None):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if isinstance(default, float) and not number:
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value is None or not number:
        if key in POSITIVE | NON_NEGATIVE | UNIT_INTERVAL and value is not None:
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return
    if key in POSITIVE and value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value!r}")
    if key in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {value!r}")
    if key in UNIT_INTERVAL and not 0 <= value <= 1:
        raise ConfigError(f"{name} must be between 0 and 1, got {value!r}")


def check_cluster(cluster, source="the configuration"):
    """The top-level ``cluster:`` is one of the forms ``cluster=`` takes (nothing started)."""
    from rsunet.cluster import check_spec

    try:
        check_spec(cluster)
    except InputError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check_scenes(scenes: dict, source="the configuration"):
    """Every image and label file of ``scenes`` exists."""
    for part, files in scenes.items():
        for kind, paths in files.items():
            for path in paths:
                if not Path(path).exists():
                    raise ConfigError(f"{source}: scenes.{part}.{kind}: {path} not found")


def _check_augmentation(name, settings):
    from rsunet.augmentation import AugmentParams

    try:
        AugmentParams.from_any(settings)
    except InputError as exc:
        raise ConfigError(f"{name}: {exc}") from None
