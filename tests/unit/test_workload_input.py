"""driver_input (spec -> driver line format) and run_workload against a fake guest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import GuestError
from orchestrator.machine.guest import CommandResult
from orchestrator.spec import parse_spec
from orchestrator.suites.workloads.driver import driver_input, page_runs, run_workload, time_budget

SPEC = """
format = 1
name = "input-test"
[settings]
enabled = "always"
max_ptes_none = 100
[[regions]]
name = "a"
pmds = 2
[[regions]]
name = "b"
pages = 10
offset_pages = 7
prot = "r"
[[steps]]
op = "touch"
region = "a"
pages = { every = 100, offset = 1 }
[[steps]]
op = "madvise"
region = "a"
advice = "pageout"
pages = "0-3,5,7-8"
[[steps]]
op = "fork"
[[steps]]
op = "mprotect"
proc = "child"
region = "b"
prot = "rw"
[[steps]]
op = "munmap"
region = "b"
pages = { random = 0 }
[[steps]]
op = "set"
set = { enabled = "never", max_ptes_swap = 3 }  # file order differs
[[steps]]
op = "wait_scans"
count = 2
timeout_s = 1.5
label = "w"
[[steps]]
op = "sleep"
ms = 250
[[steps]]
op = "checkpoint"
"""


def spec():
    return parse_spec(SPEC, "input-test.toml")


def test_page_runs() -> None:
    assert page_runs([]) == "-"
    assert page_runs([4]) == "4-4"
    assert page_runs([0, 1, 2, 5, 7, 8]) == "0-2,5-5,7-8"


@given(st.lists(st.integers(0, 2000), unique=True).map(sorted))
def test_page_runs_round_trip(pages: list[int]) -> None:
    back: list[int] = []
    text = page_runs(pages)
    if text != "-":
        for part in text.split(","):
            a, b = map(int, part.split("-"))
            assert a <= b
            back.extend(range(a, b + 1))
    assert back == pages


def test_driver_input_lines() -> None:
    lines = driver_input(spec()).splitlines()
    assert lines[0] == "thpwork 1"
    sets = [ln for ln in lines if ln.startswith("set ")]
    assert sets == [  # spec.SETTINGS_WRITE_ORDER: limits, then the waking knobs, enabled last
        "set defrag madvise", "set use_zero_page 1", "set khugepaged/defrag 1",
        "set khugepaged/pages_to_scan 4096", "set khugepaged/max_ptes_none 100",
        "set khugepaged/max_ptes_swap 64", "set khugepaged/max_ptes_shared 256",
        "set khugepaged/alloc_sleep_millisecs 60000", "set khugepaged/scan_sleep_millisecs 200",
        "set enabled always"]
    assert "region 0 0x10000000000 1024 rw" in lines
    # b: base after a (2 PMDs) + 1 PMD gap = 1 TiB + 6 MiB, start misaligned by 7 pages
    assert f"region 1 {(1 << 40) + (6 << 20) + 7 * 4096:#x} 10 r" in lines
    steps = [ln for ln in lines if ln.startswith("step ")]
    assert steps == [
        "step 0 parent touch 0 write 1-1,101-101,201-201,301-301,401-401,501-501,601-601,"
        "701-701,801-801,901-901,1001-1001",
        "step 1 parent madvise 0 pageout 0-3,5-5,7-8",
        "step 2 parent fork",
        "step 3 child mprotect 1 rw 0-9",
        "step 4 parent munmap 1 -",
        "step 5 parent set khugepaged/max_ptes_swap 3 enabled never",  # in write order
        "step 6 parent wait_scans 2 1500",
        "step 7 parent sleep 250",
        "step 8 parent checkpoint",
    ]


def test_time_budget_covers_waits_and_sleeps() -> None:
    assert time_budget(spec()) >= 1.5 + 0.25 + 30


class FakeShell:
    """GuestShell double: records uploads and commands, returns a canned result."""

    def __init__(self, stdout: str, exit_code: int = 0, trace: str = "") -> None:
        self.result = CommandResult(exit_code, stdout, "")
        self.trace = trace
        self.puts: list[tuple[str, str]] = []
        self.cmds: list[tuple[str, float]] = []

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        self.cmds.append((cmd, timeout))
        return self.result

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        self.puts.append((local.read_text(), remote))

    def get(self, remote: str, local: Path) -> None:
        local.write_text(self.trace)


def _good_output() -> str:
    ev = [
        {"event": "start", "pid": 10, "regions": 2, "steps": 9},
        {"event": "trace", "enabled": True},
        {"event": "region", "region": 0, "start": 1 << 40, "pages": 1024},
        {"event": "checkpoint", "step": -1, "time_ns": 1, "counters": {"full_scans": 5},
         "procs": []},
        {"event": "step", "step": 1, "proc": "parent", "op": "madvise", "region": 0,
         "calls": [[0, 3, -1, 11]], "time_ns": 2},
        {"event": "trace_saved", "path": "/x", "ok": True},
        {"event": "end", "child_status": 0, "restored": 3},
    ]
    return "\n".join(json.dumps(e) for e in ev) + "\n"


def test_run_workload_writes_run_files(tmp_path: Path) -> None:
    shell = FakeShell(_good_output(), trace="# tracer: nop\n")
    obs = run_workload(shell, spec(), tmp_path, "/root/thpwork")
    assert obs.complete and obs.step_result(1).result == "EAGAIN"  # type: ignore[union-attr]
    assert shell.puts[0][1] == "/root/thpwork-input-test.in"
    assert shell.puts[0][0] == driver_input(spec())
    cmd, timeout = shell.cmds[0]
    assert cmd.startswith("/root/thpwork --timeout ")
    assert cmd.endswith(" /root/thpwork-input-test.in")
    assert timeout > time_budget(spec())
    assert not (tmp_path / "spec.toml").exists()  # parsed from text: no file to keep
    for name in ("driver-input.txt", "driver.jsonl", "observed.json", "trace.txt"):
        assert (tmp_path / name).exists(), name
    observed = json.loads((tmp_path / "observed.json").read_text())
    assert observed["complete"] is True


def test_run_workload_keeps_the_spec_file(tmp_path: Path) -> None:
    src = tmp_path / "input-test.toml"
    src.write_text(SPEC)
    from orchestrator.spec import load_spec

    run_workload(FakeShell(_good_output()), load_spec(src), tmp_path / "out")
    assert (tmp_path / "out" / "spec.toml").read_text() == SPEC


def test_run_workload_driver_failure_raises_with_output(tmp_path: Path) -> None:
    out = '{"event":"error","line":0,"message":"killed by signal"}\n'
    with pytest.raises(GuestError) as exc:
        run_workload(FakeShell(out, exit_code=137), spec(), tmp_path)
    assert "killed by signal" in exc.value.message and "137" in exc.value.message
    assert "killed by signal" in exc.value.detail
    assert (tmp_path / "driver.jsonl").read_text() == out


def test_run_workload_truncated_output_raises(tmp_path: Path) -> None:
    truncated = _good_output().rsplit("\n", 2)[0]  # no end event
    with pytest.raises(GuestError, match="before the 'end' event"):
        run_workload(FakeShell(truncated), spec(), tmp_path)
