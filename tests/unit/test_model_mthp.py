"""7.1/7.2 model rules against hand-computed scenarios: per-order limits, the
mthp_collapse() descent, per-PTE scan progress, version profiles."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from orchestrator.model import predict
from orchestrator.model.machine import PMD_BIT
from orchestrator.model.memory import touch
from orchestrator.model.mthp import (
    WARN_MAX_PTES_NONE,
    max_order_from_offset,
    max_ptes_none,
    max_ptes_shared,
    max_ptes_swap,
)
from orchestrator.model.profile import load_version_profile
from orchestrator.spec import load_workload, parse_spec
from tests.unit.model_helpers import machine, run_scan


def last(name: str, version: str = "7.2") -> Any:
    """The first outcome (no lock contention, pass after the step) of the last checkpoint."""
    p = predict(load_workload(name), version=version)
    return p, p.checkpoints[-1].outcomes[0].observation


def folios(obs: Any) -> tuple[tuple[int, int], ...]:
    return next(st.folios for proc, name, st in obs.regions if proc == "parent")


@pytest.mark.parametrize(("value", "order", "want"), [
    (511, 9, 511), (511, 4, 15), (511, 2, 3), (0, 4, 0), (0, 9, 0), (256, 9, 256), (256, 4, 0),
])
def test_max_ptes_none_per_order(value: int, order: int, want: int) -> None:
    m, *_ = machine({"a": 1}, version="7.2", max_ptes_none=value)
    assert max_ptes_none(m, order) == want
    assert max_ptes_none(m, order, is_khugepaged=False) == 512


def test_other_max_ptes_none_warns_once() -> None:
    m, *_ = machine({"a": 1}, version="7.2", max_ptes_none=100)
    assert max_ptes_none(m, 4) == 0 and max_ptes_none(m, 3) == 0
    assert m.warnings == [WARN_MAX_PTES_NONE]


def test_swap_and_shared_limits_are_zero_below_pmd() -> None:
    m, *_ = machine({"a": 1}, version="7.2", max_ptes_swap=64, max_ptes_shared=256)
    assert (max_ptes_swap(m, 9), max_ptes_shared(m, 9)) == (64, 256)
    assert (max_ptes_swap(m, 8), max_ptes_shared(m, 2)) == (0, 0)
    assert max_ptes_swap(m, 4, is_khugepaged=False) == 512


@pytest.mark.parametrize(("offset", "order"), [(0, 9), (16, 4), (64, 6), (80, 4), (256, 8),
                                               (4, 2), (48, 4)])
def test_max_order_from_offset(offset: int, order: int) -> None:
    assert max_order_from_offset(offset) == order


def test_descent_takes_the_largest_fitting_order() -> None:
    # 0-83 written, max_ptes_none 0, 256k/64k/16k enabled: 256k@0, 64k@64, 16k@80
    p, obs = last("mthp-descent")
    assert folios(obs) == ((0, 256), (64, 64), (80, 16))
    first = [c for c in p.schedules[0].collapses if c["result"] == "SUCCEED"]
    assert [(c["page"], 4 << c["order"]) for c in first] == [(0, 256), (64, 64), (80, 16)]


def test_511_scales_to_the_order() -> None:
    _, obs = last("mthp-none-511-scales")
    assert folios(obs) == tuple((i, 64) for i in range(0, 512, 32))


def test_zero_and_warning_values_need_full_ranges() -> None:
    _, obs = last("mthp-none-zero")
    assert folios(obs) == ((0, 64),)
    p, obs = last("mthp-none-warning-value")
    assert folios(obs) == ((0, 64),) and p.warnings == [WARN_MAX_PTES_NONE]


def test_swap_at_small_order_allocates_then_bails() -> None:
    p, obs = last("mthp-swap-small-order")
    c = dict(obs.counters)
    first_pass = [x for x in p.schedules[0].collapses if x["time_ms"] == 0]
    assert [x["result"] for x in first_pass].count("EXCEED_SWAP_PTE") == 1
    assert len(first_pass) == 19  # 19 ranges of 16 pages hold pages 0-299
    assert folios(obs)[0] == (16, 64) and len(folios(obs)) == 18
    assert c["mthp/64kB/collapse_exceed_swap_pte"] >= 1
    assert c["thp_collapse_alloc"] == 0


def test_shared_at_small_order_never_collapses() -> None:
    _, obs = last("mthp-shared-small-order")
    c = dict(obs.counters)
    assert c["mthp/64kB/collapse_exceed_shared_pte"] == c["mthp/64kB/collapse_alloc"] > 0
    assert c["pages_collapsed"] == 0 and folios(obs) == ()


def test_pmd_disabled_mthp_only_registers_and_collapses() -> None:
    _, obs = last("mthp-pmd-disabled-only")
    assert folios(obs) == ((0, 128), (32, 128), (96, 128))
    assert dict(obs.counters)["thp_collapse_alloc"] == 0


def test_creep_rescan_allocates_and_new_pages_collapse_later() -> None:
    p = predict(load_workload("mthp-creep-across-passes"), version="7.2")
    first = p.checkpoints[0].outcomes[0].observation
    later = p.checkpoints[1].outcomes[0].observation
    assert folios(first) == ((0, 64), (32, 64))
    assert folios(later) == ((0, 64), (16, 64), (32, 64))
    assert dict(first.counters)["pages_collapsed"] == 1


def test_madv_collapse_stays_pmd_only_on_72() -> None:
    text = """format = 1
name = "c"
[settings]
"hugepages-64kB/enabled" = "always"
"hugepages-2048kB/enabled" = "never"
[[regions]]
name = "a"
pmds = 1
[[steps]]
op = "touch"
region = "a"
pages = "0-63"
[[steps]]
op = "madvise"
region = "a"
advice = "collapse"
[[steps]]
op = "checkpoint"
"""
    p = predict(parse_spec(text, "<c>"), version="7.2")
    obs = p.checkpoints[0].outcomes[0].observation
    st = obs.regions[0][2]
    assert st.huge_pmds == (0,) and dict(obs.results) == {1: "ok"}
    c = dict(obs.counters)
    assert c["mthp/2048kB/collapse_alloc"] == 1 and c["mthp/64kB/collapse_alloc"] == 0


def test_write_fault_maps_an_mthp_when_enabled() -> None:
    m, k, mm, start = machine({"a": 1}, version="7.2", **{"hugepages-64kB/enabled": "always"})
    touch(m, mm, np.array([start["a"] + 20]), write=True)
    row = m.blocks.row_of[start["a"] // 512]
    assert int((mm.tables.pte[row] != 0).sum()) == 16  # pages 16-31: one 64 kB folio
    assert int(m.store.nr[mm.tables.page[row, 16]]) == 16


@pytest.mark.parametrize(("version", "full_after_one_wakeup"), [("6.12", 0), ("7.1", 1)])
def test_per_pte_progress(version: str, full_after_one_wakeup: int) -> None:
    # 64 PMDs, only PMD 0 PMD-mapped (fault THP); the rest have no PTE table. 7.1 charges
    # 1 per such PMD (65 units < 4096): one wakeup ends the pass; 6.12 charges 512 each.
    m, k, mm, start = machine({"a": 64}, version=version, enabled="always")
    touch(m, mm, np.array([start["a"]]), write=True)
    assert mm.registered
    run_scan(k)
    assert m.counters["full_scans"] == full_after_one_wakeup


def test_collapse_orders_follow_the_size_knobs() -> None:
    m, k, mm, start = machine({"a": 1}, version="7.2", **{"hugepages-64kB/enabled": "madvise",
                                                          "hugepages-2048kB/enabled": "never"})
    vma = mm.vmas[0]
    vma.anon_vma = 1
    assert m.collapse_orders(mm, vma) == 0
    vma.hugepage = True
    assert m.collapse_orders(mm, vma) == 1 << 4
    m12, _, mm12, _ = machine({"a": 1}, version="6.12")
    v12 = mm12.vmas[0]
    v12.anon_vma, v12.hugepage = 1, True
    assert m12.collapse_orders(mm12, v12) == PMD_BIT


def test_profiles_and_nearest(caplog: pytest.LogCaptureFixture) -> None:
    assert load_version_profile("7.2").mthp_collapse
    assert load_version_profile("7.1").progress == "pte"
    assert load_version_profile("6.12").progress == "pmd"
    with caplog.at_level(logging.WARNING):
        assert load_version_profile("7.0").version == "7.1"
    assert "nearest" in caplog.text
    assert load_version_profile("7.2.13").version == "7.2"


@pytest.mark.parametrize("version", ["6.12", "7.2"])
@pytest.mark.parametrize("pages_to_scan", [4096, 1500, 100000])
def test_batched_collapses_equal_one_by_one(version: str, pages_to_scan: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """do_scan() collapses runs of PMDs at once; the outcome per wakeup must equal the
    kernel's one-collapse-per-scan_mm_slot loop (batching switched off)."""
    from orchestrator.model import khugepaged as kh
    from orchestrator.model.memory import madvise_flags, madvise_pageout

    def run(batch: bool) -> list[Any]:
        if not batch:
            monkeypatch.setattr(kh, "batch_collapsible", lambda m, mm: False)
        m, k, mm, start = machine({"a": 24}, version=version, pages_to_scan=pages_to_scan)
        a = start["a"]
        touch(m, mm, np.arange(a, a + 24 * 512), write=True)
        madvise_pageout(m, mm, a + 5 * 512, a + 5 * 512 + 3)  # one PMD needs swap-in
        madvise_flags(m, mm, a, a + 24 * 512, True)
        snaps = []
        for _ in range(12):
            run_scan(k)
            snaps.append((dict(m.counters), mm.tables.kind.tolist(), k.scan_address,
                          m.log.records()))
        monkeypatch.undo()
        return snaps

    assert run(True) == run(False)
