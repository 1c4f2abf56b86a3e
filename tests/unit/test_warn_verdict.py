"""Issue 15 row 7: a kernel warning during a run fails it, naming the first report;
--allow-warn REGEX tolerates known ones. Console events from the recorded LKDTM WARN."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from orchestrator.errors import UserError
from orchestrator.jobs import vmtest
from orchestrator.machine.console import classify_line, classify_log

WARN_LOG = Path(__file__).parent.parent / "data" / "serial" / "warn-lkdtm-6.12.117-tcg.log"


def _run_with_events(tmp_path: Path) -> vmtest.Run:
    run = vmtest.Run(tmp_path / "run", None)
    run.events = [e.to_json() for e in classify_log(WARN_LOG.read_text())]
    return run


def test_a_warn_fails_the_run_naming_it(tmp_path: Path) -> None:
    run = _run_with_events(tmp_path)
    vmtest._judge_warnings(run, [])
    assert run.failures == ["kernel warning: WARNING: CPU: 1 PID: 50 at "
                            "drivers/misc/lkdtm/bugs.c:112 lkdtm_WARNING+0x8/0xb"]


@pytest.mark.parametrize("pattern", ["lkdtm_WARNING", r"bugs\.c:112", "lkdtm_do_action"])
def test_allow_warn_matching_any_line_of_the_report_tolerates_it(tmp_path: Path,
                                                                 pattern: str) -> None:
    run = _run_with_events(tmp_path)
    vmtest._judge_warnings(run, vmtest.compile_allow_warn(["unrelated", pattern]))
    assert run.failures == []


def test_non_matching_allow_warn_still_fails(tmp_path: Path) -> None:
    run = _run_with_events(tmp_path)
    vmtest._judge_warnings(run, vmtest.compile_allow_warn(["mm/khugepaged.c"]))
    assert len(run.failures) == 1


def test_bad_allow_warn_regex_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--allow-warn '\\(': not a regular expression"):
        vmtest.compile_allow_warn(["("])


@pytest.mark.parametrize("line", [
    "WARNING: possible circular locking dependency detected",
    "WARNING: suspicious RCU usage",
    "UBSAN: shift-out-of-bounds in mm/khugepaged.c:100:5",
    "WARNING: CPU: 0 PID: 1 at mm/huge_memory.c:3000 foo+0x1/0x2",
])
def test_lockdep_rcu_and_ubsan_reports_are_warnings(line: str) -> None:
    assert classify_line(line) == "warning"


def test_allow_warn_is_repeatable_on_vm_test() -> None:
    args = build_parser().parse_args(["vm-test", "--allow-warn", "a", "--allow-warn", "b.c"])
    assert args.allow_warn == ["a", "b.c"]
    assert build_parser().parse_args(["vm-test"]).allow_warn == []


def test_allow_warn_reaches_every_bisect_step_and_validate() -> None:
    from orchestrator import cli
    from orchestrator.jobs import bisection
    from orchestrator.jobs.vmtest import VmTestRequest

    args = build_parser().parse_args(["bisect", "--tree", "/t", "--good", "a", "--bad", "b",
                                      "--allow-warn", "x.c:1"])
    req = cli.bisect_request(args)
    assert req.test.allow_warn == ["x.c:1"]
    step = cli.step_options(build_parser().parse_args(
        ["bisect-step", *bisection.step_arguments(req, Path("/r"))]))
    assert step.test.allow_warn == ["x.c:1"]
    va = cli.validate_request(build_parser().parse_args(
        ["validate", "--tree", "/t", "--base", "a", "--head", "b", "--allow-warn", "y"]))
    assert va.test.allow_warn == ["y"]
    with pytest.raises(UserError, match="--allow-warn"):
        bisection.check_request(bisection.BisectRequest(
            Path("/t"), "a", "b", test=VmTestRequest(allow_warn=["("])))
