"""The shipped workloads: small, valid, and predicted as their descriptions say."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.model import format_prediction, predict
from orchestrator.spec import load_workload, shipped_workloads

NAMES = sorted(shipped_workloads())


def test_at_least_ten_workloads_are_shipped() -> None:
    assert len(NAMES) >= 10


@pytest.mark.parametrize("name", NAMES)
def test_workload_is_small_and_predictable(name: str) -> None:
    spec = load_workload(name)
    assert spec.name == name
    pmds = sum(-(-(r.pages + r.offset_pages) // 512) for r in spec.regions)
    assert pmds <= 8
    assert spec.settings["scan_sleep_millisecs"] == 200
    waits = sum(s.args["count"] for s in spec.steps if s.op == "wait_scans")
    assert waits <= 6
    assert spec.description
    p = predict(spec, version=spec.since or "6.12")
    json.dumps(p.to_json())
    assert format_prediction(p).startswith(f"workload {name}")
    assert len(p.checkpoints) == sum(s.op in ("wait_scans", "checkpoint") for s in spec.steps)
    for cp in p.checkpoints:
        # a checkpoint after a sleep is judged by its position between wake-ups: one
        # outcome per wake-up boundary the sleep may end on (pte-progress-cadence: 9)
        assert 1 <= len(cp.outcomes) <= 10
        for o in cp.outcomes:
            assert not o.observation.timed_out


def facts(name: str, label: str) -> list[dict[str, Any]]:
    """Per outcome of one checkpoint: counters plus 'proc/region' -> (AnonHugePages kB,
    huge PMDs, Swap kB) plus the syscall results."""
    p = predict(load_workload(name))
    cp = next(c for c in p.checkpoints if c.label == label)
    out = []
    for o in cp.outcomes:
        d: dict[str, Any] = dict(o.observation.counters)
        for proc, region, st in o.observation.regions:
            d[f"{proc}/{region}"] = (st.anon_huge_kb, st.huge_pmds, st.swap_kb)
        d["results"] = dict(o.observation.results)
        out.append(d)
    return out


# workload, checkpoint, facts that hold in every admissible outcome
EXPECT: list[tuple[str, str, dict[str, Any]]] = [
    ("full-pmd-collapse", "after-two-passes",
     {"pages_collapsed": 1, "thp_collapse_alloc": 1, "parent/a": (2048, (0,), 0)}),
    ("single-page-collapse", "after-two-passes", {"pages_collapsed": 1}),
    ("max-ptes-none-exceeded", "exceeded",
     {"pages_collapsed": 0, "thp_collapse_alloc": 0, "parent/a": (0, (), 0)}),
    ("max-ptes-none-exceeded", "at-limit", {"pages_collapsed": 1, "parent/a": (2048, (0,), 0)}),
    ("max-ptes-none-at-limit", "after-two-passes",
     {"pages_collapsed": 2, "thp_scan_exceed_none_pte": 0, "parent/a": (4096, (0, 1), 0)}),
    ("zero-page-ptes", "after-two-passes",
     {"pages_collapsed": 1, "parent/a": (0, (), 0), "parent/b": (2048, (0,), 0)}),
    ("swap-limit", "paged-out", {"parent/a": (0, (), 260), "parent/b": (0, (), 256)}),
    ("swap-limit", "after-two-passes",
     {"pages_collapsed": 1, "parent/a": (0, (), 260), "parent/b": (2048, (0,), 0)}),
    ("shared-after-fork", "after-two-passes",
     {"pages_collapsed": 1, "child/a": (0, (), 0), "child/b": (2048, (0,), 0),
      "parent/a": (0, (), 0), "parent/b": (0, (), 0)}),
    ("nohugepage-neighbour", "after-two-passes",
     {"pages_collapsed": 1, "parent/b": (0, (), 0), "thp_scan_exceed_none_pte": 0}),
    ("unaligned-vma", "after-two-passes",
     {"pages_collapsed": 2, "parent/a": (4096, (1, 2), 0)}),
    ("read-only-range", "after-two-passes",
     {"pages_collapsed": 1, "parent/a": (2048, (1,), 0)}),
    ("madv-collapse-ignores-limits", "after-collapse",
     {"thp_collapse_alloc": 1, "pages_collapsed": 0, "full_scans": 0,
      "parent/a": (2048, (0,), 0), "results": {1: "ok", 2: "ok", 3: "EINVAL"}}),
    ("budget-time-series", "pass1", {"pages_collapsed": 6}),
    ("thp-never", "never-1s", {"full_scans": 0, "thp_collapse_alloc": 0}),
    ("thp-never", "collapsed", {"thp_collapse_alloc": 1, "parent/a": (2048, (0,), 0)}),
    ("thp-never", "madvise-again-1s", {"full_scans": 0}),
    ("dontneed-empty-table", "after-two-passes", {"pages_collapsed": 0, "thp_collapse_alloc": 0}),
    ("dontneed-empty-table", "after-madv-collapse", {"results": {1: "ok", 2: "ok", 4: "EINVAL"}}),
]


@pytest.mark.parametrize(("name", "label", "expect"), EXPECT,
                         ids=[f"{n}:{lb}" for n, lb, _ in EXPECT])
def test_workload_prediction(name: str, label: str, expect: dict[str, Any]) -> None:
    for f in facts(name, label):
        for k, v in expect.items():
            assert f[k] == v, (k, f[k], v)


def test_budget_time_series_mid_way_checkpoint() -> None:
    # 300 ms after MADV_HUGEPAGE: judged by position, not time: the state after any
    # whole wake-up of the time series (two collapses each) up to the next step; the
    # first pass may be lost to lock contention (0 collapsed, full_scans 1)
    got = sorted({(f["pages_collapsed"], f["full_scans"])
                  for f in facts("budget-time-series", "t300ms")})
    assert got == [(0, 1), (2, 0), (2, 1), (4, 0), (4, 1), (6, 0), (6, 1)]


def _time_series(pmds: int, sleep_ms: int, every_ms: int, n: int) -> str:
    steps = ''.join(f'''
[[steps]]
op = "sleep"
ms = {every_ms}
[[steps]]
op = "checkpoint"
label = "t{(i + 1) * every_ms}ms"
''' for i in range(n))
    return f'''format = 1
name = "series"
[settings]
pages_to_scan = 1024
scan_sleep_millisecs = {sleep_ms}
[[regions]]
name = "a"
pmds = {pmds}
[[steps]]
op = "touch"
region = "a"
[[steps]]
op = "madvise"
region = "a"
advice = "hugepage"
{steps}
[[steps]]
op = "wait_scans"
count = 1
label = "pass-end"
'''


def test_time_series_every_100ms_is_judged_by_position_not_schedules() -> None:
    """8 PMDs, scan_sleep 500 ms, checkpoints every 100 ms for 3 s: once more than 256
    schedules (one per wake-up near a checkpoint); now a handful, and each checkpoint
    admits exactly the states at the series' wake-up boundaries (2 collapses each)."""
    from orchestrator.spec import parse_spec

    pred = predict(parse_spec(_time_series(8, 500, 100, 30), "series.toml"), "6.12")
    assert len(pred.schedules) <= 8
    states = {(dict(o.observation.counters)["pages_collapsed"],
               dict(o.observation.counters)["full_scans"]) for o in pred.checkpoints[5].outcomes}
    assert {(2, 0), (4, 0), (6, 0), (8, 0), (8, 1)} <= states
    assert all(pc % 2 == 0 for pc, _ in states)  # never mid-wake-up: whole wake-ups only


def test_thp_never_second_madv_hugepage_does_not_register_in_6_12() -> None:
    # 6.12.117 registers in madvise_update_vma only when the flags change; 6.1 registers
    # from hugepage_madvise on every call
    f612 = predict(load_workload("thp-never"), "6.12")
    f61 = predict(load_workload("thp-never"), "6.1")
    cp612 = next(c for c in f612.checkpoints if c.label == "madvise-again-1s")
    cp61 = next(c for c in f61.checkpoints if c.label == "madvise-again-1s")
    assert {dict(o.observation.counters)["full_scans"] for o in cp612.outcomes} == {0}
    # a time series is judged by position: any wake-up of the 1 s sleep, up to >= 4 passes
    assert max(dict(o.observation.counters)["full_scans"] for o in cp61.outcomes) >= 4


def test_waits_are_aligned_with_the_passes_the_driver_saw() -> None:
    """dontneed-empty-table waits 2 passes (step 3). Unaligned, the exceed counter at a
    given full_scans has two values per 'pass in flight' choice; with the wait's observed
    start the model counts the kernel's passes: exact per schedule, schedules that
    contradict the start are ruled out, and a late start (periodic wake-ups inside slow
    steps) is run before the wait and said so."""
    spec = load_workload("dontneed-empty-table")

    def pairs(starts: dict[int, int] | None) -> set[tuple[int, int]]:
        cp = predict(spec, "6.12", wait_starts=starts).checkpoints[0]
        return {(dict(o.observation.counters)["full_scans"],
                 dict(o.observation.counters)["thp_scan_exceed_none_pte"]) for o in cp.outcomes}

    assert pairs(None) == {(2, 1), (2, 2), (3, 2), (3, 3)}
    # began after the registration pass: 3 passes; 2 or 3 exceed only by lock contention
    assert pairs({3: 1}) == {(3, 2), (3, 3)}
    assert pairs({3: 0}) == {(2, 1), (2, 2)}  # the pass was still running
    late = predict(spec, "6.12", wait_starts={3: 2})
    assert {dict(o.observation.counters)["full_scans"]
            for o in late.checkpoints[0].outcomes} == {4}
    assert "began at full_scans 2 (observed)" in late.checkpoints[0].outcomes[0].reasons[0]
