"""Verdicts that hold under load (the shortened `make stress`): two rounds of every
built-in workload, each in a fresh guest, while a CPU hog keeps every host core
busy; not one mismatch or error."""

from __future__ import annotations

from orchestrator.jobs.stress import stress
from orchestrator.suites.workloads.runner import builtin_specs


def test_two_rounds_of_all_workloads_under_a_cpu_hog(tmp_path, no_leaked_qemu):
    rep = stress(tmp_path, workload_rounds=2, vmtest_rounds=0, progress=lambda s: None)
    assert rep.load  # the hog ran (stress-ng, or busy loops without it)
    # the default kernel (Debian 6.12) runs every built-in workload that applies to it
    applicable = [s for s in builtin_specs() if s.applies_to("6.12")]
    assert rep.workload_runs == 2 * len(applicable), rep.summary()
    assert not rep.workload_mismatches, rep.workload_mismatches
    assert not rep.workload_errors, rep.workload_errors
    assert rep.slowest_wait_ms > 0  # the waits were observed
