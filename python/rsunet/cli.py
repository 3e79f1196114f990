"""The ``rsunet`` command: one subcommand per step of the workflow.

Errors are printed as one clear line (``rsunet: error: ...``) and exit with status 2;
``--traceback`` shows the full Python traceback for bug reports.
"""

from __future__ import annotations

import argparse
import sys

import rsunet
from rsunet.errors import RsunetError


def _cmd_check(args) -> int:
    from rsunet.check import check

    for key, value in check(import_backend=not args.quick).items():
        print(f"{key:>16}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsunet",
        description="U-Net semantic segmentation of remote-sensing images: "
        "samples -> patches -> training -> prediction -> assessment.",
    )
    parser.add_argument("--version", action="store_true",
                        help="print the versions of rsunet and its stack, then exit")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
        return args.func(args) or 0
    except (RsunetError, FileNotFoundError) as exc:
        if args.traceback:
            raise
        print(f"rsunet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
