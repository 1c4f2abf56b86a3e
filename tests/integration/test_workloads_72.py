"""The 7.1/7.2 built-in workloads (mTHP collapse, per-PTE progress) on a real 7.2 kernel
(Debian's linux-source-7.2 with kconfigs/debug.config), against the model's 7.2 profile:
counters including the per-size collapse stats, smaps, the large folios read from pagemap +
kpageflags, and the huge_memory trace per PMD."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.cli import main
from orchestrator.spec import load_workload
from orchestrator.suites.workloads.observation import parse_driver_output
from orchestrator.suites.workloads.runner import builtin_specs

REPO = Path(__file__).resolve().parents[2]
DEBUG = str(REPO / "kconfigs" / "debug.config")
NEW = sorted(s.name for s in builtin_specs() if s.since is not None)


def _run(tmp_path: Path, names: list[str], *extra: str) -> tuple[int, dict]:
    out = tmp_path / "run"
    code = main(["vm-test", "--tree", "debian:7.2", "--suite", "workloads:" + "+".join(names),
                 *extra, "--out", str(out)])
    return code, json.loads((out / "result.json").read_text())


def test_new_workloads_exist() -> None:
    assert all(load_workload(n).applies_to("7.2.13") for n in NEW)
    only_7x = [n for n in NEW if not load_workload(n).applies_to("6.12.117")]
    assert len(only_7x) >= 8  # 7.1/7.2 behaviour (mthp-fault-sizes is since 6.8: runs on 6.12)


def test_72_workloads_match_per_pmd_with_trace(tmp_path: Path, no_leaked_qemu: None) -> None:
    """The new workloads on 7.2 built with kconfigs/debug.config: counters, per-size stats,
    smaps and folios as on any kernel, and per PMD against the kernel's huge_memory trace
    (7.1+ events and fields, read from the guest's tracefs format files). The same kernel
    serves test_kernel_72.py, so a cold `make test` builds 7.2 once."""
    names = NEW + ["dontneed-empty-table"]  # 6.14+ frees the emptied PTE table (PT_RECLAIM)
    code, result = _run(tmp_path, names, "--fragment", DEBUG)
    bad = [(w["name"], w["explanation"]) for w in result["workloads"] if w["verdict"] != "match"]
    assert code == 0 and not bad, bad
    per_pmd = [w["name"] for w in result["workloads"]
               if "per-PMD scans agree" in w["explanation"]]
    traced = [n for n in names if "mm_khugepaged_scan_pmd" in
              (tmp_path / "run" / "workloads" / n / "trace.txt").read_text(errors="replace")]
    print(f"7.2 per-PMD: {len(per_pmd)} of {len(names)} judged per PMD, {len(traced)} traced")
    # every workload in which khugepaged scans is judged per PMD (mthp-fault-sizes: faults only)
    assert len(traced) >= len(names) - 1 and set(traced) <= set(per_pmd)
    # all five events were on from boot (the profile's trace_event=), so the driver patched
    # no kernel text in the running guest (the "Oops: int3" of tests/data/findings)
    for n in names:
        obs = parse_driver_output((tmp_path / "run" / "workloads" / n / "driver.jsonl")
                                  .read_text())
        assert obs.trace_enabled and obs.trace_already_on == obs.trace_events == 5, n
