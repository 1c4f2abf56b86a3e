"""Progress display (TTY vs quiet) and the final summary table."""

from __future__ import annotations

import io

import pytest
from reports_fixtures import load

from orchestrator.report.progress import Progress, format_summary, is_quiet


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_is_quiet_in_ci_or_without_a_tty() -> None:
    assert is_quiet(Tty(), {"CI": "true"})
    assert is_quiet(Tty(), {"CI": "1"})
    assert not is_quiet(Tty(), {"CI": "false"})
    assert not is_quiet(Tty(), {})
    assert is_quiet(io.StringIO(), {})


def test_quiet_prints_only_stage_lines() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress(out, quiet=True, clock=clock)
    with p.stage("build"):
        p.update("CC mm/khugepaged.o [1 files]")
        clock.now += 241.7
    assert out.getvalue() == "[build] started\n[build] done in 4m02s\n"
    assert p.durations() == {"build": 241.7}


def test_tty_shows_a_moving_line_cleared_before_stage_lines() -> None:
    out, clock = Tty(), Clock()
    p = Progress(out, quiet=False, clock=clock, min_interval=0.1)
    with p.stage("build"):
        clock.now += 1
        p.update("CC mm/khugepaged.o [1234 files]")
        p.update("CC mm/huge_memory.o [1235 files]")  # throttled: same instant
        clock.now += 0.5
        p.update("LD vmlinux [1236 files]")
    text = out.getvalue()
    assert "\r\x1b[K  build 1.0s  CC mm/khugepaged.o [1234 files]" in text
    assert "huge_memory" not in text
    assert "\r\x1b[K  build 1.5s  LD vmlinux [1236 files]" in text
    assert text.endswith("\r\x1b[K[build] done in 1.5s\n")


def test_failed_stage_says_so_and_reraises() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress(out, quiet=True, clock=clock)
    with pytest.raises(RuntimeError), p.stage("boot"):
        clock.now += 3.25
        raise RuntimeError("no")
    assert out.getvalue().splitlines()[-1] == "[boot] FAILED after 3.2s (RuntimeError)"
    assert p.stages[0].status == "failed"
    assert p.durations() == {"boot": 3.25}


def test_nested_stages_restore_the_outer_one() -> None:
    out, clock = Tty(), Clock()
    p = Progress(out, quiet=False, clock=clock, min_interval=0)
    with p.stage("workloads"):
        with p.stage("s1"):
            clock.now += 1
        clock.now += 1
        p.update("s9")
    assert "  workloads 2.0s  s9" in out.getvalue()


def test_summary_of_a_failed_run() -> None:
    text = format_summary(load("case-fail"))
    lines = text.splitlines()
    assert lines[1] == "thpvm run 20250602-093012-run-0: FAIL (exit code 1)"
    assert "selftest   42 passed   1 failed   2 skipped" in lines
    assert any(line.startswith("  FAIL     collapse_max_ptes_shared(khugepaged:anon)")
               for line in lines)
    assert "workloads  2 match   1 mismatch   0 error" in lines
    assert any(line.startswith("  MISMATCH s3_too_many_none") for line in lines)
    counters = next(line for line in lines if line.startswith("counters"))
    assert "pages_collapsed" in counters and "35" in counters
    assert any(line.startswith("console    warning: WARNING: CPU: 1 PID: 38") for line in lines)
    assert lines[-1] == "verdict    FAIL, exit code 1"
    assert all(len(line) <= 100 for line in lines)


def test_summary_fits_one_screen() -> None:
    for name in ("pass", "case-fail", "crash", "could-not-test"):
        assert len(format_summary(load(name)).splitlines()) <= 30, name


def test_summary_of_could_not_test_shows_the_detail() -> None:
    text = format_summary(load("could-not-test"))
    assert "COULD NOT TEST (exit code 125)" in text
    assert "selftest   did not run" in text and "counters   not read" in text
    assert "  | make[4]: *** [scripts/Makefile.build:229: mm/khugepaged.o] Error 1" in text
    assert text.splitlines()[-1] == "verdict    COULD NOT TEST, exit code 125"


def test_summary_lists_crash_and_limits_long_lists() -> None:
    result = load("crash")
    text = format_summary(result)
    assert "  CRASH    collapse_compound_extreme(khugepaged:anon)" in text
    assert "console    oops: BUG: kernel NULL pointer dereference" in text
    result = load("pass")
    for case in result["selftest"]["invocations"][0]["cases"]:
        case["status"] = "fail"
    text = format_summary(result, limit=5)
    assert "  ... and 21 more (see report.html)" in text


def test_clear_erases_the_moving_line_once() -> None:
    out = Tty()
    p = Progress(out, quiet=False, clock=Clock(), min_interval=0)
    p.update("selftest khugepaged:anon")
    p.clear()
    p.clear()
    assert out.getvalue() == "\r\x1b[K  selftest khugepaged:anon\r\x1b[K"
