"""`thpvm bisect-step`: the `git bisect run` script of thpvm.

It judges the commit checked out in a tree with exactly the exit
codes `git bisect run` understands, and nothing else:

====  ==================================================================
0     good: the (majority of) runs passed
1     bad: a test failed, the model mismatched or the kernel crashed in a
      test (and a boot failure with ``--boot-failure bad``)
125   skip: build, image, QEMU, SSH or boot failure; flaky repeats
128   abort: bad arguments, an unusable tree, a thpvm bug
====  ==================================================================

It appends one JSON line per commit to the step log (``--step-log`` or
``$THPVM_BISECT_LOG``): revision, decision, every run's outcome, verdict and
duration. `thpvm bisect` (module `bisect`) sets that up; the step is also
meant for direct use: ``git bisect run thpvm bisect-step --suite selftest``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.build import git as gitrepo
from orchestrator.errors import EXIT_ABORT, ThpvmError, UserError
from orchestrator.jobs import trials

log = logging.getLogger(__name__)

STEP_LOG_ENV = "THPVM_BISECT_LOG"
STEP_EXIT = {trials.GOOD: 0, trials.BAD: 1, trials.SKIP: 125}
SUITE_HELP = ("what to run (the vm-test syntax): selftest, selftest-full, selftest:ID[+ID], "
              "workloads, workloads:NAME[+NAME] or all, comma-separated or repeated; "
              "default: the vm-test default")


def split_suite(values: list[str] | None) -> list[str]:
    """`--suite a,b --suite c` -> ['a', 'b', 'c']; empty means the pipeline's default."""
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()]


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by `bisect`, `bisect-step` and `validate`."""
    parser.add_argument("--suite", action="append", metavar="NAMES", help=SUITE_HELP)
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="runs per kernel, decided by majority (default 1)")
    parser.add_argument("--fragment", action="append", default=[], type=Path, metavar="FILE",
                        help="extra kconfig fragment (may be repeated)")
    parser.add_argument("--config", action="append", default=[], metavar="CONFIG_X=y",
                        help="extra kconfig option (may be repeated)")
    parser.add_argument("--accel", default="auto", help="QEMU accelerator (default auto)")
    parser.add_argument("--allow-warn", action="append", default=[], metavar="REGEX",
                        help="tolerate kernel warnings matching REGEX (repeatable)")


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """Options saying how boot failures and disagreeing repeats are judged."""
    parser.add_argument("--boot-failure", choices=trials.BOOT_POLICIES, default="skip",
                        help="a kernel that does not boot is skipped (default) or bad")
    parser.add_argument("--flaky", choices=trials.FLAKY_POLICIES, default="skip",
                        help="repeats that disagree: skip the commit (default) or take the "
                             "majority")


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """All options of `thpvm bisect-step`."""
    parser.add_argument("--tree", type=Path, default=Path("."),
                        help="kernel git tree to test as checked out (default: .)")
    add_test_arguments(parser)
    add_policy_arguments(parser)
    parser.add_argument("--step-log", type=Path, default=None,
                        help=f"append a JSON line per step here (default ${STEP_LOG_ENV})")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for this step's run directories")


@dataclass
class StepOptions:
    """A parsed `bisect-step` invocation."""

    tree: Path = Path(".")
    suite: list[str] = field(default_factory=list)
    repeat: int = 1
    fragments: list[Path] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    allow_warn: list[str] = field(default_factory=list)
    accel: str = "auto"
    boot_failure: str = "skip"
    flaky: str = "skip"
    step_log: Path | None = None
    out: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StepOptions:
        """Build from an argparse namespace made with `add_step_arguments`."""
        return cls(tree=args.tree, suite=split_suite(args.suite), repeat=args.repeat,
                   fragments=list(args.fragment), configs=list(args.config),
                   allow_warn=list(args.allow_warn),
                   accel=args.accel, boot_failure=args.boot_failure, flaky=args.flaky,
                   step_log=args.step_log, out=args.out)


def step_from_args(args: argparse.Namespace, tester: trials.Tester | None = None) -> int:
    """Handler for a `bisect-step` subparser built with `add_step_arguments`."""
    return run_step(StepOptions.from_args(args), tester)


class _StepParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # never exit 2: git bisect would mark bad
        raise UserError(f"bisect-step: {message}")


def step_main(argv: list[str], tester: trials.Tester | None = None) -> int:
    """`thpvm bisect-step` as a whole: parse argv, judge the commit, return 0/1/125/128.

    Argument errors give 128 (abort), never argparse's 2 which `git bisect run`
    would take for "bad".
    """
    parser = _StepParser(prog="thpvm bisect-step")
    add_step_arguments(parser)
    try:
        opts = StepOptions.from_args(parser.parse_args(argv))
    except UserError as e:
        print(f"thpvm: {e.message}", file=sys.stderr)
        return EXIT_ABORT
    return run_step(opts, tester)


def run_step(opts: StepOptions, tester: trials.Tester | None = None) -> int:
    """Judge the commit checked out in `opts.tree`; log it; return 0, 1, 125 or 128."""
    start = time.monotonic()
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tree": None,
                             "rev": None, "subject": None}
    try:
        code = _judge(opts, tester or trials.vm_tester, entry)
    except ThpvmError as e:
        kind = "user" if isinstance(e, UserError) else "error"
        entry.update(decision="abort", reason=e.message, detail=e.detail, error_kind=kind)
        print(f"thpvm bisect-step: {e.message}", file=sys.stderr)
        code = EXIT_ABORT
    except Exception as e:  # a thpvm bug must abort the bisect, not judge the commit
        log.exception("bisect-step crashed")
        entry.update(decision="abort", reason=f"thpvm bug: {type(e).__name__}: {e}",
                     error_kind="bug")
        code = EXIT_ABORT
    entry.update(exit_code=code, duration=round(time.monotonic() - start, 1))
    _append_log(opts.step_log, entry)
    return code


def _judge(opts: StepOptions, tester: trials.Tester, entry: dict[str, Any]) -> int:
    if opts.repeat < 1:
        raise UserError(f"--repeat must be at least 1, not {opts.repeat}")
    tree = gitrepo.toplevel(opts.tree.resolve())
    rev = gitrepo.head(tree)
    entry.update(tree=str(tree), rev=rev, subject=gitrepo.subject(tree, rev))
    log.info("bisect-step: testing %s %s", rev[:12], entry["subject"])
    spec = trials.TrialSpec(tree=tree, suite=opts.suite, fragments=opts.fragments,
                            configs=opts.configs, accel=opts.accel, allow_warn=opts.allow_warn,
                            boot_failure=opts.boot_failure)
    out_root = opts.out / rev[:12] if opts.out else None
    runs = trials.run_trials(spec, opts.repeat, out_root, tester, opts.flaky, label="run")
    decision = trials.decide([r.status for r in runs], opts.repeat, opts.flaky)
    entry.update(decision=decision.verdict, flaky=decision.flaky, reason=decision.reason,
                 runs=[r.to_json() for r in runs])
    log.info("bisect-step: %s is %s: %s", rev[:12], decision.verdict, decision.reason)
    return STEP_EXIT[decision.verdict]


def _append_log(path: Path | None, entry: dict[str, Any]) -> None:
    path = path or (Path(os.environ[STEP_LOG_ENV]) if os.environ.get(STEP_LOG_ENV) else None)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=str, sort_keys=True) + "\n")
    except OSError as e:  # the verdict matters more than the log line
        log.error("could not append to step log %s: %s", path, e)


def read_step_log(path: Path) -> list[dict[str, Any]]:
    """The entries of a step log; lines that are not JSON are skipped."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring a corrupt step log line in %s", path)
    return entries
