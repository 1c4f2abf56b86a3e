"""Faults, fork, mprotect, munmap, MADV_PAGEOUT and MADV_COLLAPSE in the model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from model_helpers import machine, pmd

from orchestrator.errors import UserError
from orchestrator.model.machine import Faults
from orchestrator.model.madvise_collapse import madvise_collapse
from orchestrator.model.memory import (
    fork,
    madvise_dontneed,
    madvise_flags,
    madvise_pageout,
    mprotect,
    munmap,
    touch,
)
from orchestrator.model.mm import (
    PMD_EMPTY,
    PMD_HUGE_ZERO,
    PMD_TABLE,
    PMD_THP,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_ZERO,
    STATE_MASK,
    WRITE,
    YOUNG,
)
from orchestrator.model.profile import load_version_profile, parse_profile
from orchestrator.model.results import Scan
from orchestrator.model.scan import C_PMD_NONE, C_PMD_NULL, empty_pmd_code


def row(m, addr):  # type: ignore[no-untyped-def]
    return m.blocks.row_of[addr // 512]


def test_fork_write_protects_both_and_makes_child_ptes_old() -> None:
    m, k, mm, r = machine({"a": 1})
    touch(m, mm, np.arange(r["a"], r["a"] + 4), write=True)
    child = fork(m, mm, "child")
    rw = row(m, r["a"])
    assert (mm.tables.pte[rw, :4] == PTE_PRESENT | YOUNG).all()  # young kept, RO
    assert (child.tables.pte[rw, :4] == PTE_PRESENT).all()  # old and RO
    ids = mm.tables.page[rw, :4]
    assert (m.store.mapcount[ids] == 2).all()
    touch(m, child, np.array([r["a"]]), write=True)  # CoW: a new page for the child
    assert child.tables.page[rw, 0] != ids[0] and m.store.mapcount[ids[0]] == 1
    touch(m, mm, np.array([r["a"]]), write=True)  # the parent's page is exclusive again
    assert mm.tables.page[rw, 0] == ids[0] and mm.tables.pte[rw, 0] & WRITE
    mm.tables.refresh(m.store, "folio_likely_mapped_shared")
    assert mm.tables.n_shared[rw] == 3


def test_fork_does_not_copy_vmas_without_anon_vma() -> None:
    m, k, mm, r = machine({"a": 1, "b": 1})
    touch(m, mm, np.arange(r["a"], r["a"] + 4), write=False)  # zero pages only
    touch(m, mm, np.arange(r["b"], r["b"] + 4), write=True)
    child = fork(m, mm, "child")
    assert child.tables.kind[row(m, r["a"])] == PMD_EMPTY
    assert child.tables.kind[row(m, r["b"])] == PMD_TABLE


def test_thp_fault_paths() -> None:
    m, k, mm, r = machine({"a": 2}, enabled="always", use_zero_page=1)
    touch(m, mm, np.array([r["a"]]), write=True)
    assert mm.tables.kind[row(m, r["a"])] == PMD_THP and m.counters["thp_fault_alloc"] == 1
    assert mm.registered  # do_huge_pmd_anonymous_page() registers before allocating
    b = pmd(r["a"], 1)
    touch(m, mm, np.array([b]), write=False)
    assert mm.tables.kind[row(m, b)] == PMD_HUGE_ZERO
    touch(m, mm, np.array([b + 3]), write=True)  # write to the huge zero page: split
    assert m.counters["thp_split_pmd"] == 1
    st = mm.tables.pte[row(m, b)] & STATE_MASK
    assert st[3] == PTE_PRESENT and (np.delete(st, 3) == PTE_ZERO).all()


def test_mprotect_splits_and_merges_vmas_and_restores_write() -> None:
    m, k, mm, r = machine({"a": 2})
    touch(m, mm, np.arange(r["a"], pmd(r["a"], 2)), write=True)
    mprotect(m, mm, r["a"] + 10, r["a"] + 20, False)
    assert [(v.start - r["a"], v.end - r["a"], v.writable) for v in mm.vmas] == [
        (0, 10, True), (10, 20, False), (20, 1024, True)]
    assert not (mm.tables.pte[row(m, r["a"]), 10:20] & WRITE).any()
    mprotect(m, mm, r["a"] + 10, r["a"] + 20, True)
    assert len(mm.vmas) == 1
    assert (mm.tables.pte[row(m, r["a"]), 10:20] & WRITE).all()  # exclusive: upgraded


def test_munmap_frees_tables_so_empty_pmd_codes_differ() -> None:
    m, k, mm, r = machine({"a": 1, "b": 1})
    touch(m, mm, np.array([r["a"]]), write=True)
    rb = row(m, r["b"])
    assert empty_pmd_code(m, mm, rb) == C_PMD_NONE  # PMD table exists (same 1 GiB)
    munmap(m, mm, r["a"], pmd(r["a"], 1))
    assert mm.tables.kind[row(m, r["a"])] == PMD_EMPTY
    assert empty_pmd_code(m, mm, rb) == C_PMD_NONE  # b's VMA still in that PUD range
    munmap(m, mm, r["b"], pmd(r["b"], 1))
    assert empty_pmd_code(m, mm, rb) == C_PMD_NULL


def test_pageout_skips_shared_pages_and_dontneed_zaps() -> None:
    m, k, mm, r = machine({"a": 1})
    touch(m, mm, np.arange(r["a"], r["a"] + 8), write=True)
    child = fork(m, mm, "child")
    touch(m, child, np.arange(r["a"], r["a"] + 4), write=True)
    madvise_pageout(m, mm, r["a"], r["a"] + 8)
    st = mm.tables.pte[row(m, r["a"]), :8] & STATE_MASK
    assert list(st) == [PTE_SWAP] * 4 + [PTE_PRESENT] * 4
    madvise_dontneed(m, mm, r["a"], r["a"] + 8)
    assert mm.tables.kind[row(m, r["a"])] == PMD_TABLE  # the table stays
    assert not (mm.tables.pte[row(m, r["a"])] & STATE_MASK).any()


@pytest.mark.parametrize(("faults", "expect", "alloc", "failed"), [
    (Faults(), "ok", 1, 0),
    (Faults(alloc_fail=True), "ENOMEM", 0, 1),
    (Faults(charge_fail=True), "EBUSY", 1, 0),
])
def test_madv_collapse_errno(faults: Faults, expect: str, alloc: int, failed: int) -> None:
    m, k, mm, r = machine({"a": 1}, faults=faults)
    touch(m, mm, np.array([r["a"]]), write=True)
    assert madvise_collapse(m, mm, r["a"], pmd(r["a"], 1)) == expect
    assert (m.counters["thp_collapse_alloc"], m.counters["thp_collapse_alloc_failed"]) == (
        alloc, failed)
    assert m.counters["pages_collapsed"] == 0


def test_madv_collapse_ranges_without_a_full_block_and_holes() -> None:
    m, k, mm, r = machine({"a": 1})
    touch(m, mm, np.array([r["a"]]), write=True)
    assert madvise_collapse(m, mm, r["a"], r["a"] + 10) == "ok"  # hstart == hend
    assert madvise_collapse(m, mm, r["a"] + 1, r["a"] + 10) == "EINVAL"  # hend < hstart
    assert madvise_collapse(m, mm, r["a"], pmd(r["a"], 2)) == "ENOMEM"  # hole after the VMA
    assert mm.tables.kind[row(m, r["a"])] == PMD_THP  # the VMA part was collapsed


def test_madv_collapse_swaps_in_and_ignores_limits() -> None:
    m, k, mm, r = machine({"a": 1}, max_ptes_none=0, max_ptes_swap=0)
    touch(m, mm, np.arange(r["a"], r["a"] + 10), write=True)
    madvise_pageout(m, mm, r["a"], r["a"] + 10)
    # all ten are swap entries: no writable PTE -> PAGE_RO, EINVAL, nothing swapped in
    assert madvise_collapse(m, mm, r["a"], pmd(r["a"], 1)) == "EINVAL"
    assert m.log.records()[-1]["result"] == Scan.PAGE_RO.name
    touch(m, mm, np.array([r["a"] + 20]), write=True)
    assert madvise_collapse(m, mm, r["a"], pmd(r["a"], 1)) == "ok"
    assert mm.tables.kind[row(m, r["a"])] == PMD_THP


def test_nohugepage_blocks_madv_collapse() -> None:
    m, k, mm, r = machine({"a": 1})
    touch(m, mm, np.array([r["a"]]), write=True)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), False)
    assert madvise_collapse(m, mm, r["a"], pmd(r["a"], 1)) == "EINVAL"


def test_profiles() -> None:
    p612, p70 = load_version_profile("6.12"), load_version_profile("7.1")
    assert p612.result_value(Scan.EXCEED_NONE_PTE) == 5
    assert p612.result_value(Scan.PAGE_FILLED) == 31
    assert p612.result_value(Scan.NO_PTE_TABLE) == -1
    assert p70.result_value(Scan.NO_PTE_TABLE) == 2
    assert load_version_profile("6.12.117") is p612
    assert load_version_profile("6.1").collapse_exceed_none_errno == "EINVAL"


def test_unknown_version_uses_nearest_profile_with_warning(caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    with caplog.at_level(logging.WARNING):
        assert load_version_profile("6.11").version == "6.12"
    assert "nearest" in caplog.text and "6.11" in caplog.text
    with pytest.raises(UserError, match="MAJOR.MINOR"):
        load_version_profile("latest")


def test_bad_profile_names_file_and_key() -> None:
    with pytest.raises(UserError, match=r"^x.toml: pte_check_order: expected one of"):
        parse_profile({"pmd_enabled_rule": "global",
                       "madv_hugepage_registration": "hugepage_madvise",
                       "pte_check_order": "random"}, "x.toml")
