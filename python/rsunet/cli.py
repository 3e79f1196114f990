"""The ``rsunet`` command: one subcommand per step of the workflow, and ``run CONFIG``.

Each step's subcommand is made from its Python function: required arguments become
positional ones, the others ``--options`` (values are read as YAML, so ``--window 512``,
``--classes '{1: forest}'`` and ``--images '[a.tif, b.tif]'`` work), and the help text is
the function's docstring. The command line therefore never drifts from the API.

Every error is printed as one line (``rsunet: error: ...``): status 2 for what the user can
fix (a typed rsunet error, a missing file), status 1 for anything else (an internal error,
a bug to report); ``--traceback`` shows the full Python traceback for bug reports.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from importlib import import_module

from rsunet.errors import RsunetError

# arguments that take Python objects, not something a shell can pass
PYTHON_ONLY = {"callbacks"}

# subcommand -> (module, function)
STEPS = {
    "mask": ("samples", "make_mask"),
    "patches": ("patches", "make_patches"),
    "split": ("patches", "split_patches"),
    "preview": ("augmentation", "preview_augmentation"),
    "train": ("training", "train_unet"),
    "baseline": ("baseline", "train_baseline"),
    "predict": ("prediction", "predict_raster"),
    "assess": ("assessment", "assess_map"),
    "count": ("assessment", "count_objects"),
    "polygonize": ("assessment", "polygonize"),
    "sample": ("estimation", "sample_points"),
    "compare": ("estimation", "compare_maps"),
    "suggest": ("labelling", "suggest_labels"),
    "cv": ("validation", "cross_validate"),
}


def _doc_parts(func):
    """(summary, {argument: help}) from a Google-style docstring."""
    doc = inspect.getdoc(func) or ""
    summary = doc.split("\n\n")[0]
    helps, current = {}, None
    in_args = False
    for line in doc.splitlines():
        if re.match(r"^(Args|Arguments|Parameters):\s*$", line):
            in_args = True
            continue
        if in_args and re.match(r"^\S", line):
            in_args = False
        if not in_args:
            continue
        m = re.match(r"^\s{4}(\*{0,2}\w+)(?:\s*\(.*?\))?:\s*(.*)$", line)
        if m:
            current = m.group(1).lstrip("*")
            helps[current] = m.group(2)
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return summary, helps


def _plain(text: str) -> str:
    """Docstring markup as plain text for the terminal: ``x`` -> x, :func:`rsunet.f` -> f()."""
    text = re.sub(r":func:`~?(?:[\w.]+\.)?(\w+)`", r"\1()", text)
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", text)
    return text.replace("``", "")


def _yaml_value(text):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _add_step(sub, name, module, funcname):
    """A subparser for one workflow function, built from its signature and docstring."""
    try:
        func = getattr(import_module(f"rsunet.{module}"), funcname)
    except (ImportError, AttributeError):
        return  # that stage is not installed in this build
    summary, helps = _doc_parts(func)
    summary = _plain(summary)
    p = sub.add_parser(name, help=summary.splitlines()[0] if summary else funcname,
                       description=f"{funcname}(): {summary}",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=textwrap.dedent(f"""\
                           Python: rsunet.{funcname}(...)   R: rsunet::{funcname}(...)
                           Option values are YAML: numbers, true/false, [lists], {{maps}}."""))
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name in PYTHON_ONLY:
            continue
        text = _plain(helps.get(param.name, "")).replace("%", "%%")  # argparse formats help with %
        flag = f"--{param.name.replace('_', '-')}"
        if param.default is inspect.Parameter.empty:
            p.add_argument(param.name, type=_yaml_value, help=text)
        elif isinstance(param.default, bool):
            p.add_argument(flag, dest=param.name, action=argparse.BooleanOptionalAction,
                           default=param.default, help=text)
        else:
            p.add_argument(flag, dest=param.name, type=_yaml_value, default=param.default,
                           help=f"{text} (default: {param.default!r})")
    p.set_defaults(func=func, step=True)


def _show(result):
    import pandas as pd

    if result is None:
        return
    if hasattr(result, "savefig"):  # a figure: the shell can only see it as a file
        print("a figure; pass --out FILE.png to write it")
        return
    if isinstance(result, pd.DataFrame):
        print(result.to_string(max_rows=40))
    elif isinstance(result, dict):
        for key, value in result.items():
            print(f"{key}: {value}")
    else:
        print(result)


def _cmd_check(args) -> int:
    from rsunet.check import check

    for key, value in check(import_backend=not args.quick).items():
        print(f"{key:>16}: {value}")
    return 0


def _cmd_run(args) -> int:
    from rsunet.workflow import run_workflow

    run_workflow(args.config, out=args.out, overwrite=args.overwrite)
    return 0


def _cmd_demo(args) -> int:
    from rsunet.workflow import example_config, run_workflow

    config = example_config(full=args.full, quick=args.quick)
    run_workflow(config, out=args.out, overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsunet",
        description="U-Net semantic segmentation of remote-sensing images.\n"
        "The workflow: mask -> patches -> split -> train -> predict -> assess.\n"
        "Start with `rsunet demo`, then copy its configuration for your own scenes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true",
                        help="print the versions of rsunet and its stack, then exit")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="run the whole workflow on the bundled Amazon chips")
    p.add_argument("--out", default=None,
                   help="output folder (default: the configuration's: rsunet-demo, rsunet-full, rsunet-quick)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true",
                      help="the longer 'full' configuration (better map, takes longer)")
    size.add_argument("--quick", action="store_true",
                      help="a one-minute configuration to try an installation (a rough map)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="run the whole workflow from a YAML or TOML config file")
    p.add_argument("config", help="configuration file (see `rsunet demo` and config/example.yaml)")
    p.add_argument("--out", default=None, help="output folder (overrides the config's `out`)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    p.set_defaults(func=_cmd_run)

    for name, (module, funcname) in STEPS.items():
        _add_step(sub, name, module, funcname)

    p = sub.add_parser("check", help="report versions and prove the backend runs")
    p.add_argument("--quick", action="store_true", help="skip importing TensorFlow/Keras")
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from rsunet.check import versions

        print(" ".join(f"{k}={v}" for k, v in versions().items() if k != "executable"))
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        if getattr(args, "step", False):
            kwargs = {k: v for k, v in vars(args).items()
                      if k not in ("func", "step", "command", "version", "traceback")}
            _show(args.func(**kwargs))
            return 0
        return args.func(args) or 0
    except Exception as exc:  # every error is one line; --traceback shows the rest
        if args.traceback:
            raise
        user = isinstance(exc, (RsunetError, FileNotFoundError))
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not user:
            text = f"internal error ({type(exc).__name__}: {text}); rerun with --traceback and report it"
        print(f"rsunet: error: {text}", file=sys.stderr)
        return 2 if user else 1


if __name__ == "__main__":
    sys.exit(main())
