"""Command line: ``skocc demo`` and ``skocc --version``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _demo(args):
    from ._demo import run_demo

    run_demo(random_state=args.random_state)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="skocc",
        description="scikit-learn compatible deep one-class classifiers for images.",
    )
    parser.add_argument("--version", action="version", version=f"skocc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="one-class protocol on sklearn's bundled digits, against classical detectors",
    )
    demo.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
