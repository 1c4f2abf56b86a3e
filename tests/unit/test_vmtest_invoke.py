"""vmtest._invoke: how a failed guest command during a selftest invocation is judged."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from orchestrator.errors import GuestError, GuestTimeout
from orchestrator.jobs import vmtest
from orchestrator.machine.console import ConsoleEvent
from orchestrator.suites.selftest import runner as selftest

INV = selftest.Invocation("anon", ())


@dataclass
class FakeGuest:
    crash: ConsoleEvent | None
    shell: object = None

    def diagnose_lost(self) -> ConsoleEvent | None:
        return self.crash


def _raise(exc: Exception):
    def run(shell, inv, before=None):
        raise exc
    return run


def test_kernel_crash_during_a_test_is_a_failed_outcome(monkeypatch):
    monkeypatch.setattr(selftest, "run_invocation", _raise(GuestError("lost", "partial out")))
    panic = ConsoleEvent("panic", 1.0, ["Kernel panic - not syncing: x"])
    out = vmtest._invoke(FakeGuest(panic), INV)
    assert out.exit_code is None and out.output == "partial out"
    assert out.error == "kernel panic: Kernel panic - not syncing: x"


def test_timeout_in_a_live_guest_is_a_failed_outcome(monkeypatch):
    monkeypatch.setattr(selftest, "run_invocation",
                        _raise(GuestTimeout("guest command timed out after 900 s: x")))
    out = vmtest._invoke(FakeGuest(None), INV)
    assert out.exit_code is None and "timed out after 900 s" in out.error


def test_lost_connection_without_kernel_crash_is_infrastructure(monkeypatch):
    monkeypatch.setattr(selftest, "run_invocation", _raise(GuestError("connection lost")))
    with pytest.raises(GuestError):
        vmtest._invoke(FakeGuest(None), INV)
