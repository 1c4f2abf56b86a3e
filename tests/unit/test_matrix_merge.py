"""Merging matrix job directories: grid, flakiness, JUnit per kernel, summary, HTML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from reports_fixtures import load

from orchestrator.cli import main
from orchestrator.report import matrixmerge, matrixreport
from orchestrator.report import render as report

SUITE = "selftest+workloads"


def job_dir(root: Path, kernel: str, repeat: int, fixture: str | None,
            status: str = "pass", code: int = 0) -> Path:
    """A job directory as `thpvm matrix run` leaves it (a fixture result + job record)."""
    job = f"{kernel}.{SUITE}.r{repeat}"
    d = root / "jobs" / job
    d.mkdir(parents=True)
    if fixture is not None:
        result = load(fixture)
        result["run_id"] = job
        report.write_reports(d, result)
        status, code = result["verdict"], result["exit_code"]
    (d / matrixmerge.JOB_RECORD).write_text(json.dumps({
        "schema": "thpvm-matrix-job/1", "matrix": "m", "job": job, "index": 0,
        "kernel": kernel, "suite": SUITE, "repeat": repeat, "host": "h1",
        "exit_code": code, "status": status, "wall_seconds": 60.0}))
    return d


@pytest.fixture
def two_machines(tmp_path: Path) -> list[Path]:
    """Kernel A: pass + case-fail (flaky); kernel B: pass + pass on another 'machine',
    kernel C: could not test."""
    a, b = tmp_path / "shard-1", tmp_path / "shard-2"
    job_dir(a, "A", 1, "pass")
    job_dir(a, "A", 2, "case-fail")
    job_dir(b, "B", 1, "pass")
    job_dir(b, "B", 2, "pass")
    job_dir(b, "C", 1, "could-not-test")
    job_dir(b, "C", 2, None, status="not-run", code=125)
    return [a, b]


def row(merged: matrixmerge.Merged, kind: str, name: str) -> matrixmerge.Row:
    return next(r for r in merged.rows if r.kind == kind and r.name == name)


def test_grid_marks_flaky_cells_k_of_n(two_machines: list[Path]) -> None:
    merged = matrixmerge.merge_dirs(two_machines)
    assert merged.kernels == ["A", "B", "C"]
    shared = row(merged, "selftest", "collapse_max_ptes_shared(khugepaged:anon)")
    assert shared.cells["A"].status == "flaky" and shared.cells["A"].label == "flaky 1/2"
    assert shared.cells["B"].status == "pass" and shared.cells["B"].label == "pass 2/2"
    wl = row(merged, "workload", "s3_too_many_none")
    assert wl.cells["A"].status == "flaky" and wl.cells["B"].status == "pass"
    assert row(merged, "job", SUITE).cells["C"].status == "could-not-test"
    assert merged.exit_code() == 1 and merged.verdict() == "fail"
    flaky = {(f["case"], f["kernel"]) for f in merged.flaky()}
    assert ("workload s3_too_many_none", "A") in flaky


def test_all_pass_merges_to_exit_0_and_missing_results_to_125(tmp_path: Path) -> None:
    job_dir(tmp_path / "x", "A", 1, "pass")
    assert matrixmerge.merge_dirs([tmp_path / "x"]).exit_code() == 0
    job_dir(tmp_path / "x", "B", 1, None, status="not-run", code=125)
    assert matrixmerge.merge_dirs([tmp_path / "x"]).exit_code() == 125


def test_junit_has_one_testsuite_per_kernel(two_machines: list[Path]) -> None:
    root = ET.fromstring(matrixreport.to_matrix_junit(matrixmerge.merge_dirs(two_machines)))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["A", "B", "C"]
    a = suites[0]
    failures = [tc for tc in a.findall("testcase") if tc.find("failure") is not None]
    assert {tc.get("name") for tc in failures} == {
        "collapse_max_ptes_shared(khugepaged:anon)", "s3_too_many_none"}
    assert "1 of 2 runs failed (flaky)" in failures[0].find("failure").get("message")
    assert suites[1].get("failures") == "0" and int(suites[1].get("tests")) == 48
    assert suites[2].find("testcase/error") is not None


def test_summary_html_and_cli(two_machines: list[Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "merged"
    assert main(["matrix", "merge", *map(str, two_machines), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "flaky: workload s3_too_many_none on A: 1 of 2 failed" in text
    summary = json.loads((out / "matrix-summary.json").read_text())
    assert summary["verdict"] == "fail" and summary["kernels"] == ["A", "B", "C"]
    assert summary["counts"]["flaky"] == 2 and len(summary["jobs"]) == 6
    html = (out / "report.html").read_text()
    assert 'class="badge flaky">flaky 1/2<' in html
    assert "r1 match (default), r2 mismatch" in html  # model verdict per repeat
    assert html.count('class="job-row"') == 6
    assert '../shard-1/jobs/A.selftest+workloads.r1/report.html' in html


def test_plain_run_directories_merge_too(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    report.write_reports(d, load("pass"))
    merged = matrixmerge.merge_dirs([tmp_path])
    assert len(merged.jobs) == 1 and merged.jobs[0].suite == "run"
    assert merged.kernels[0].startswith(load("pass")["metadata"]["kernel_release"])


def test_no_run_directories_is_a_user_error(tmp_path: Path) -> None:
    assert main(["matrix", "merge", str(tmp_path)]) == 2
