"""The `thpvm` command line: one handler per subcommand.

This is the only place that turns errors into exit codes (see errors.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import EXIT_OK, ThpvmError, exit_code_for

log = logging.getLogger("thpvm")

Handler = Callable[[argparse.Namespace], int]


def _tree_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", type=Path, help="kernel source tree (default: Debian linux-source-6.12)")
    p.add_argument("--rev", help="git revision of --tree to build (checked out in a scratch worktree)")
    p.add_argument("--fragment", type=Path, action="append", default=[],
                   help="extra kconfig fragment on top of kconfigs/{base,thp}.config (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="CONFIG_X=y",
                   help="one-off kconfig option (repeatable)")
    p.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")


def cmd_kernel_build(args: argparse.Namespace) -> int:
    from . import kernel
    from .progress import Progress

    progress = Progress()
    req = kernel.KernelRequest(args.tree, args.rev, args.fragment, args.config, args.jobs)
    with progress.stage("kernel build"):
        art = kernel.build_kernel(req, progress.update)
    state = "cache hit" if art.cached else f"built in {art.build_seconds:.0f} s"
    print(f"kernel {art.release} ({state})\n  bzImage: {art.bzimage}\n  config:  {art.config}")
    if args.json:
        print(json.dumps(kernel.describe(art), indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(prog="thpvm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"thpvm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    kern = sub.add_parser("kernel", help="kernel builds").add_subparsers(dest="sub", required=True)
    kb = kern.add_parser("build", help="build (or reuse) a THP-ready kernel")
    _tree_args(kb)
    kb.add_argument("--json", action="store_true", help="print build metadata as JSON")
    kb.set_defaults(handler=cmd_kernel_build)
    return parser


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    if os.environ.get("THPVM_LOG"):
        level = getattr(logging, os.environ["THPVM_LOG"].upper(), level)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run thpvm with `argv`; return the exit code (never raises for expected errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help is 0, bad usage is 2
        return int(e.code or 0)
    _setup_logging(args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ThpvmError as e:
        print(f"thpvm: error: {e.message}", file=sys.stderr)
        if e.detail:
            print(e.detail, file=sys.stderr)
        return exit_code_for(e)
    except KeyboardInterrupt as e:
        print("thpvm: interrupted", file=sys.stderr)
        return exit_code_for(e)
    except Exception as e:  # a thpvm bug: abort (128), never a verdict
        log.exception("internal error")
        print(f"thpvm: internal error: {e!r}", file=sys.stderr)
        return exit_code_for(e)


if __name__ == "__main__":
    sys.exit(main())
