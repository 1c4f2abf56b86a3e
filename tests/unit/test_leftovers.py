"""machine/leftovers.py: leases and the reaper, with real processes (`sleep` plays QEMU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_helpers import gone, wait_gone

from orchestrator import cache
from orchestrator.cli import main
from orchestrator.machine import leftovers
from orchestrator.machine.leftovers import ProcId


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Socket directories go to a private temp dir (never the host's /tmp)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    yield tmp


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def _sleeper(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    procs.append(p)
    return p


def _dead(procs: list[subprocess.Popen[bytes]]) -> ProcId:
    p = _sleeper(procs)
    me = ProcId.of(p.pid)
    assert me is not None
    p.kill()
    p.wait()
    return me


def _guest(run_dir: Path, qemu_pid: int, owner: ProcId | None) -> Path:
    """A run directory and socket directory as a Vm leaves them, owned by `owner`."""
    run_dir.mkdir(parents=True)
    for disk in leftovers.RUN_DISKS:
        (run_dir / disk).write_bytes(b"\0" * 4096)
    (run_dir / "serial.log").write_text("boot\n")
    socks = leftovers.socks_dir()
    leftovers.write_lease(socks, run_dir, qemu_pid)
    if owner is not None:
        for d in (socks, run_dir):
            lease = json.loads((d / leftovers.LEASE).read_text())
            lease["thpvm"] = [owner.pid, owner.start]
            (d / leftovers.LEASE).write_text(json.dumps(lease))
    return socks


def test_procid_tells_a_reused_pid_apart(procs: list[subprocess.Popen[bytes]]) -> None:
    p = _sleeper(procs)
    me = ProcId.of(p.pid)
    assert me is not None and me.alive()
    assert not ProcId(p.pid, me.start + 1).alive()
    p.kill()
    p.wait()
    assert not me.alive() and ProcId.of(p.pid) is None


def test_lease_of_a_dead_thpvm_is_reaped(tmp_path: Path,
                                         procs: list[subprocess.Popen[bytes]]) -> None:
    qemu = _sleeper(procs)
    run = tmp_path / "out" / "run"
    socks = _guest(run, qemu.pid, owner=_dead(procs))
    done = leftovers.reap()
    assert wait_gone([qemu.pid])
    assert any(f"killed orphaned QEMU {qemu.pid}" in d for d in done)
    assert f"removed socket directory {socks}" in done
    assert any(d.startswith(f"reaped abandoned run {run}") for d in done)
    assert not socks.exists()
    assert not any((run / d).exists() for d in leftovers.RUN_DISKS)
    assert (run / "serial.log").exists() and (run / leftovers.REAPED).exists()
    assert not (run / leftovers.LEASE).exists()
    assert leftovers.reap() == []  # idempotent


def test_live_thpvm_keeps_its_guest(tmp_path: Path,
                                    procs: list[subprocess.Popen[bytes]]) -> None:
    qemu = _sleeper(procs)
    run = tmp_path / "run"
    socks = _guest(run, qemu.pid, owner=None)  # owned by this very process
    assert leftovers.in_use(run)
    assert leftovers.reap() == []
    assert not gone(qemu.pid) and socks.exists() and (run / "swap.img").exists()
    leftovers.release(run)
    assert not leftovers.in_use(run)


def test_a_reused_qemu_pid_is_never_killed(tmp_path: Path,
                                           procs: list[subprocess.Popen[bytes]]) -> None:
    other = _sleeper(procs)  # some unrelated process now holding the old QEMU pid
    run = tmp_path / "run"
    socks = _guest(run, other.pid, owner=_dead(procs))
    lease = json.loads((socks / leftovers.LEASE).read_text())
    lease["qemu"][1] -= 1  # the QEMU that had this pid started at another time
    (socks / leftovers.LEASE).write_text(json.dumps(lease))
    (run / leftovers.LEASE).write_text(json.dumps(lease))
    done = leftovers.reap()
    assert not any("killed" in d for d in done)
    assert not gone(other.pid)
    assert not socks.exists()


def test_run_dir_lease_under_the_cache_is_reaped_without_its_socket_dir(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    runs = cache.cache_dir("runs")
    run = runs / "20260101-000000-vm-test-0"
    socks = _guest(run, _dead(procs).pid, owner=_dead(procs))
    import shutil

    shutil.rmtree(socks)  # e.g. /tmp was cleaned at reboot
    done = leftovers.reap(runs)
    assert any(d.startswith(f"reaped abandoned run {run}") for d in done)
    assert (run / leftovers.REAPED).exists()


def _dead_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens


def test_leaseless_socket_dir_is_reaped_only_when_dead_and_old(private_tmp: Path) -> None:
    dead = private_tmp / "thpvm-abcd1234"
    dead.mkdir()
    _dead_socket(dead / "qmp.sock")
    young = private_tmp / "thpvm-qemu-young"
    young.mkdir()
    _dead_socket(young / "qmp.sock")
    live = private_tmp / "thpvm-qemu-live"
    live.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(live / "qmp.sock"))
    listener.listen(1)
    unrelated = private_tmp / "thpvm-t-other"
    unrelated.mkdir()
    old = time.time() - 2 * leftovers.LEASELESS_GRACE_S
    for d in (dead, live, unrelated):
        os.utime(d, (old, old))
    try:
        assert leftovers.reap() == [f"removed stale socket directory {dead}"]
        assert not dead.exists() and young.exists() and live.exists() and unrelated.exists()
    finally:
        listener.close()


def test_runs_prune_reaps_then_keeps_live_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               procs: list[subprocess.Popen[bytes]]) -> None:
    runs = cache.cache_dir("runs")
    dead_run, live_run = runs / "a-dead", runs / "b-live"
    socks = _guest(dead_run, _sleeper(procs).pid, owner=_dead(procs))
    _guest(live_run, _sleeper(procs).pid, owner=None)
    old = time.time() - 3600
    os.utime(live_run, (old, old))  # the oldest: pruned first, were it not in use
    assert main(["runs", "--prune", "0"]) == 0
    out = capsys.readouterr().out
    assert f"reaped abandoned run {dead_run}" in out and not socks.exists()
    assert f"deleted {dead_run}" in out
    assert live_run.exists() and f"deleted {live_run}" not in out
