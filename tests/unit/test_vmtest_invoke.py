"""vmtest._invoke: how a failed guest command during a selftest invocation is judged
(the verdict on the guest comes from the crash authority, `Guest.diagnose`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from orchestrator.errors import GuestError, GuestLost, GuestTimeout
from orchestrator.jobs import vmtest
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
