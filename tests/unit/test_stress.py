"""jobs/stress.py: the CPU hog is started and always stopped; the rounds are
counted (runs, mismatches, errors, slowest wait) from what vm-test returned."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InfraError
from orchestrator.jobs import stress as stress_job
from orchestrator.jobs import vmtest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_cpu_hog_starts_and_stops_its_load(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned = []
    real_spawn = stress_job.proc.spawn

    def spawn(argv: list[str]) -> Any:
        p = real_spawn(argv)
        spawned.append(p)
        return p

    monkeypatch.setattr(stress_job.proc, "spawn", spawn)
    with pytest.raises(RuntimeError), stress_job.cpu_hog(cpus=1) as what:
        assert spawned and all(_alive(p.pid) for p in spawned)
        assert "1" in what
        raise RuntimeError("the block fails: the load must still stop")
    assert spawned and not any(_alive(p.pid) for p in spawned)


def _fake_result(run_dir: Path, verdicts: dict[str, str], wait_ms: int) -> dict[str, Any]:
    for name in verdicts:
        d = run_dir / "workloads" / name
        d.mkdir(parents=True)
        (d / "driver.jsonl").write_text(json.dumps(
            {"event": "wait", "step": 3, "elapsed_ms": wait_ms}) + "\nnot json\n")
    return {"exit_code": 0 if set(verdicts.values()) == {"match"} else 1, "reason": "r",
            "metadata": {"guest_boots": [2.5] * len(verdicts)},
            "workloads": [{"name": n, "verdict": v, "explanation": f"{n} {v}"}
                          for n, v in verdicts.items()]}


def test_rounds_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[vmtest.VmTestRequest] = []

    def run_vm_test(req: vmtest.VmTestRequest) -> Any:
        calls.append(req)
        n = len(calls)
        if n == 2:
            raise InfraError("guest did not boot")
        assert req.out is not None
        verdicts = {"a": "match", "b": "mismatch" if n == 3 else "match"}
        return vmtest.VmTestOutcome(0, req.out, _fake_result(req.out, verdicts, 100 * n))

    monkeypatch.setattr(vmtest, "run_vm_test", run_vm_test)
    rep = stress_job.stress(tmp_path, workload_rounds=2, vmtest_rounds=2, hog=False,
                            progress=lambda s: None)
    assert [c.suite for c in calls] == [["workloads"]] * 2 + [["selftest", "workloads"]] * 2
    assert all(c.isolation == "guest" for c in calls)
    assert rep.workload_runs == 6  # round 0 and both vm-tests ran 2 workloads each
    assert len(rep.workload_errors) == 1 and "guest did not boot" in rep.workload_errors[0]
    assert rep.workload_mismatches == ["vm-test 0 b: b mismatch"]
    assert rep.vmtest_runs == 2 and rep.vmtest_failures == ["vm-test 0: r"]
    assert rep.slowest_wait_ms == 400 and rep.slowest_wait == "vm-test 1 a step 3"
    assert rep.guest_boot_seconds == [2.5] * 6 and len(rep.load_average) == 4
    assert "6 runs, 1 mismatches, 1 errors" in rep.summary()


REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "tests/data/patches/seeded.toml"


def test_seeded_catalogue_names_existing_patches_suites_and_fragments() -> None:
    from orchestrator.jobs.vmtest import parse_suite

    bugs = stress_job.load_seeded(CATALOGUE, REPO)
    assert {b.patch.name for b in bugs} == {p.name for p in CATALOGUE.parent.glob("*.patch")}
    for b in bugs:
        assert b.patch.is_file() and all(f.is_file() for f in b.fragments)
        assert b.catch in ("selftest", "mismatch")
        parse_suite(b.suite)  # a valid --suite


def test_seeded_rounds_count_catches_misses_and_errors(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bugs = [b for b in stress_job.load_seeded(CATALOGUE, REPO) if b.catch == "mismatch"][:1]
    outcomes = iter([{"a": "mismatch"}, {"a": "match"}, "infra", {"a": "error"}])

    def run_vm_test(req: vmtest.VmTestRequest) -> Any:
        assert req.kernel.patches == [bugs[0].patch] and req.suite == bugs[0].suite
        verdicts = next(outcomes)
        if verdicts == "infra":
            raise InfraError("guest did not boot")
        result = _fake_result(req.out, verdicts, 1)
        if verdicts == {"a": "error"}:
            result["exit_code"] = 125
        return vmtest.VmTestOutcome(result["exit_code"], req.out, result)

    monkeypatch.setattr(vmtest, "run_vm_test", run_vm_test)
    rep = stress_job.stress(tmp_path, 0, 0, hog=False, progress=lambda s: None,
                            seeded=bugs, seeded_rounds=4)
    assert rep.seeded == {bugs[0].patch.name: {"runs": 2, "caught": 1, "errors": 2}}
    assert len(rep.seeded_misses) == 3 and "exit 0" in rep.seeded_misses[0]
    assert "caught 1 of 2 (2 errors)" in rep.summary()
