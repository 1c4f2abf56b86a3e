"""6.14+ (CONFIG_PT_RECLAIM): MADV_DONTNEED over a whole PMD frees its PTE table, so
khugepaged then sees no PTE table (7.2.13, recorded with the debug kernel's trace), where
6.12 keeps the empty table and counts an exceed-none per pass."""

from __future__ import annotations

from pathlib import Path

from orchestrator.judge.rundir import compare_run_dir
from orchestrator.model import predict
from orchestrator.spec import load_workload

RECORDED = Path(__file__).parents[1] / "data/workloads/7.2.13-tcg-debug/dontneed-empty-table"


def _statuses(version: str) -> set[str]:
    spec = load_workload("dontneed-empty-table")
    pred = predict(spec, version=version)
    return {str(d["result"]) for s in pred.schedules for d in s.decisions}


def test_72_frees_the_table_612_keeps_it() -> None:
    assert _statuses("7.2") == {"NO_PTE_TABLE"}
    assert "EXCEED_NONE_PTE" in _statuses("6.12")


def test_recorded_72_run_matches_per_pmd(tmp_path: Path) -> None:
    run = tmp_path / "dontneed-empty-table"
    run.mkdir()
    for f in RECORDED.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    verdict = compare_run_dir(run, repredict="7.2.13")
    assert verdict.status == "match", verdict.explanation
    assert "per-PMD scans agree" in verdict.explanation
