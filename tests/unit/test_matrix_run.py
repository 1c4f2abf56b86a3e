"""`thpvm matrix run` scheduling with a fake thpvm child (no VM): N at a time, one build
per kernel first, records per job, and Ctrl-C stopping every running job."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.jobs import matrix

FAKE = r'''
import json, os, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
state = Path(os.environ["FAKE_STATE"])
(state / "calls").open("a").write(" ".join(args[:2]) + "\n")
if args[0] in ("kernel", "image"):
    sys.exit(int(os.environ.get("FAKE_BUILD_EXIT", "0")) if "debug.config" in " ".join(args)
             else 0)
out = Path(args[args.index("--out") + 1])
def stop(signum, frame):
    (out / "stopped").write_text("SIGTERM\n")
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
mine = state / ("running." + out.name)
mine.write_text("")
peers = len(list(state.glob("running.*")))
(out / "peers-at-start").write_text(str(peers))
deadline = time.monotonic() + float(os.environ.get("FAKE_WAIT", "20"))
while time.monotonic() < deadline and len(list(state.glob("running.*"))) < 2:
    time.sleep(0.05)
(out / "saw-peer").write_text(str(len(list(state.glob("running.*"))) >= 2))
if os.environ.get("FAKE_HANG"):
    time.sleep(600)
mine.unlink()
sys.exit(1 if "workloads" in " ".join(args) and out.name.endswith("r2") else 0)
'''

MATRIX = """
format = 1
name = "t"
repeats = 2
suites = ["selftest:anon", "workloads:thp-never"]
[[kernels]]
name = "plain"
source = "debian:6.12"
[[kernels]]
name = "debug"
source = "debian:6.12"
fragments = ["{frag}"]
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_thpvm.py"
    script.write_text(FAKE)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setattr(matrix, "thpvm_argv", lambda *a: [sys.executable, str(script), *a])
    frag = Path(matrix.__file__).parents[1] / "build/kconfigs/debug.config"
    (tmp_path / "m.toml").write_text(MATRIX.format(frag=frag))
    return tmp_path


def test_two_at_a_time_builds_once_per_kernel_and_records_every_job(
        fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_WAIT", "5")  # a peer shows up at once; the last job waits alone
    lines: list[str] = []
    outcome = matrix.run_matrix(matrix.MatrixRunRequest(
        str(fake / "m.toml"), parallel=2, out=fake / "out"), say=lines.append)
    calls = (fake / "state/calls").read_text().splitlines()
    assert calls[:3] == ["kernel build", "kernel build", "image build"]  # builds first, once
    assert sum(1 for c in calls if c.startswith("vm-test ")) == 8
    recs = [json.loads((fake / "out/jobs" / r["job"] / matrix.JOB_RECORD).read_text())
            for r in outcome.records]
    assert len(recs) == 8 and all(r["status"] in ("pass", "fail") for r in recs)
    failed = sorted(r["job"] for r in recs if r["status"] == "fail")
    assert failed == ["debug.workloads-thp-never.r2", "plain.workloads-thp-never.r2"]
    assert outcome.exit_code == 1
    peers = [int((fake / "out/jobs" / r["job"] / "peers-at-start").read_text()) for r in recs]
    assert max(peers) <= 2  # never more than --jobs guests at a time
    assert any((fake / "out/jobs" / r["job"] / "saw-peer").read_text() == "True" for r in recs)
    state = json.loads((fake / "out" / matrix.MATRIX_RECORD).read_text())
    assert [b["what"] for b in state["builds"]] == ["kernel plain", "kernel debug", "image"]
    assert len(state["jobs"]) == 8


def test_failed_kernel_build_marks_its_jobs_not_run(fake: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BUILD_EXIT", "125")
    monkeypatch.setenv("FAKE_WAIT", "0")
    outcome = matrix.run_matrix(matrix.MatrixRunRequest(
        str(fake / "m.toml"), parallel=1, shard="2/2", out=fake / "out"), say=lambda s: None)
    assert [r["status"] for r in outcome.records] == ["not-run"] * 4
    assert outcome.exit_code == 125


def test_ctrl_c_stops_every_running_job(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HANG", "1")
    started: list[str] = []

    def say(line: str) -> None:
        if line.endswith(": started"):
            started.append(line)
            if len(started) == 2:
                # both children must be up (their SIGTERM handler set) before Ctrl-C
                jobs, deadline = fake / "out/jobs", proc.Deadline.after(120)
                while len(list(jobs.glob("*/saw-peer"))) < 2 and not deadline.expired():
                    time.sleep(0.05)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        matrix.run_matrix(matrix.MatrixRunRequest(str(fake / "m.toml"), parallel=2,
                                                  out=fake / "out"), say=say)
    state = json.loads((fake / "out" / matrix.MATRIX_RECORD).read_text())
    statuses = [j["status"] for j in state["jobs"]]
    assert statuses == ["interrupted"] * 8
    stopped = sorted(p.parent.name for p in (fake / "out/jobs").glob("*/stopped"))
    assert stopped == ["plain.selftest-anon.r1", "plain.selftest-anon.r2"]
    for rec in state["jobs"][:2]:
        pid_gone = not any(str(rec["job"]) in _cmdline(p) for p in _pids())
        assert pid_gone


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
