"""vmtest._invoke and vmtest._guest: how a failed guest command during a selftest
invocation, or between tests (uploads, snapshots), is judged (the verdict on the
guest comes from the crash authority, `Guest.diagnose`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.errors import GuestError, GuestLost, GuestTimeout
from orchestrator.jobs import vmtest
from orchestrator.machine import session
from orchestrator.machine.console import ConsoleEvent
from orchestrator.machine.health import Diagnosis
from orchestrator.suites.selftest import runner as selftest

INV = selftest.Invocation("anon", ())


@dataclass
class FakeGuest:
    diagnosis: Diagnosis
    shell: object = None

    def diagnose(self) -> Diagnosis:
        return self.diagnosis

    def kernel_failure(self) -> ConsoleEvent | None:
        return None


def _raise(exc: Exception):
    def run(shell, inv, before=None):
        raise exc
    return run


def test_kernel_crash_during_a_test_is_a_failed_outcome(monkeypatch):
    monkeypatch.setattr(selftest, "run_invocation", _raise(GuestError("lost", "partial out")))
    panic = Diagnosis("panic", "kernel panic: Kernel panic - not syncing: x")
    out = vmtest._invoke(FakeGuest(panic), INV)
    assert out.exit_code is None and out.output == "partial out"
    assert out.error == "kernel panic: Kernel panic - not syncing: x"


def test_kernel_hang_during_a_test_is_a_failed_outcome(monkeypatch):
    monkeypatch.setattr(selftest, "run_invocation", _raise(GuestTimeout("no answer")))
    out = vmtest._invoke(FakeGuest(Diagnosis("hang", "kernel hang: console silent")), INV)
    assert out.exit_code is None and out.error == "kernel hang: console silent"


def test_timeout_in_a_live_guest_is_a_failed_outcome(monkeypatch):
    monkeypatch.setattr(selftest, "run_invocation",
                        _raise(GuestTimeout("guest command timed out after 900 s: x")))
    out = vmtest._invoke(FakeGuest(Diagnosis("alive", "answers")), INV)
    assert out.exit_code is None and "timed out after 900 s" in out.error


@pytest.mark.parametrize("kind", ["ssh-lost", "qemu-stopped", "qemu-exited", "qemu-paused",
                                  "qemu-unresponsive"])
def test_lost_guest_without_kernel_failure_is_infrastructure(monkeypatch, kind):
    monkeypatch.setattr(selftest, "run_invocation", _raise(GuestError("connection lost")))
    with pytest.raises(GuestLost) as info:
        vmtest._invoke(FakeGuest(Diagnosis(kind, f"because {kind}")), INV)
    assert info.value.exit_code == 125
    assert f"guest lost ({kind}: because {kind})" in info.value.message


def test_selftest_killed_by_a_signal_is_a_failure_naming_it(monkeypatch, tmp_path):
    """A test program that crashes (SEGV) in a live guest: a test failure with its signal."""
    monkeypatch.setattr(selftest, "prepare_guest", lambda shell, binary, invocations: None)
    crashed = selftest.InvocationOutcome(INV, ["./khugepaged"], 139, "Run test: x\n", 1.0)
    monkeypatch.setattr(vmtest, "_invoke", lambda g, inv, before=None: crashed)
    run = vmtest.Run(tmp_path / "run", None)
    vmtest._run_selftest(FakeGuest(Diagnosis("alive", "")), tmp_path / "bin", [INV], run, None)
    [entry] = run.selftest["invocations"]
    assert entry["status"] == "fail" and entry["exit_code"] == 139
    assert entry["explanation"] == "killed by SIGSEGV (exit status 139)"
    assert run.failures == ["selftest ./khugepaged: fail (killed by SIGSEGV (exit status 139))"]


def _between_tests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, d: Diagnosis,
                   error: GuestError) -> vmtest.Run:
    """A guest command outside any test (an upload) fails; the authority says `d`."""
    @contextmanager
    def guest(*args: Any, **kwargs: Any) -> Iterator[Any]:
        g = SimpleNamespace(boot_seconds=1.0, ssh_seconds=0.5, accel="tcg", accel_reason="r",
                            vm=SimpleNamespace(console=None), lost=None)

        def diagnose() -> Diagnosis:
            g.lost = d
            return d
        g.diagnose = diagnose
        yield g

    monkeypatch.setattr(session, "guest", guest)
    run = vmtest.Run(tmp_path / "run", None)
    with vmtest._guest(vmtest.VmTestRequest(), run, tmp_path, object(), tmp_path, "the guest"):
        raise error
    return run


def test_kernel_hang_between_tests_is_a_test_failure(monkeypatch, tmp_path):
    """Issue 15 row 4: a real hang is exit 1 wherever it strikes, also while thpvm
    uploads the workload driver (not 125: the kernel, not thpvm, stopped answering)."""
    hang = Diagnosis("hang", "kernel hang: console silent")
    run = _between_tests(monkeypatch, tmp_path, hang,
                         GuestError("guest lost: kernel hang: console silent (while uploading)"))
    assert run.failures == ["kernel hang in the guest, outside a test: guest lost: kernel "
                            "hang: console silent (while uploading)"]
    assert run.meta["crashed"] and run.meta["guest_lost"]["kind"] == "hang"


def test_kernel_panic_between_tests_names_the_failed_command(monkeypatch, tmp_path):
    panic = Diagnosis("panic", "kernel panic: Kernel panic - not syncing: x")
    run = _between_tests(monkeypatch, tmp_path, panic, GuestTimeout("upload timed out"))
    assert run.failures == ["kernel panic in the guest, outside a test: kernel panic: Kernel "
                            "panic - not syncing: x (upload timed out)"]


@pytest.mark.parametrize("kind", ["ssh-lost", "qemu-stopped", "qemu-exited"])
def test_guest_lost_between_tests_is_infrastructure(monkeypatch, tmp_path, kind):
    with pytest.raises(GuestLost) as info:
        _between_tests(monkeypatch, tmp_path, Diagnosis(kind, f"because {kind}"),
                       GuestError("connection lost"))
    assert info.value.exit_code == 125
