"""write_reports / regenerate / list_runs on temporary run directories."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from reports_fixtures import NAMES, load

from orchestrator.errors import ResultSchemaError, UserError
from orchestrator.report import render as report


@pytest.mark.parametrize("name", NAMES)
def test_write_reports_writes_all_three(tmp_path: Path, name: str) -> None:
    result = load(name)
    report.write_reports(tmp_path, result)
    assert json.loads((tmp_path / "result.json").read_text()) == result
    ET.fromstring((tmp_path / "junit.xml").read_bytes())
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and result["run_id"] in html
    assert not list(tmp_path.glob("*.tmp"))


def test_invalid_result_is_kept_aside_and_raises(tmp_path: Path) -> None:
    result = load("pass")
    result["verdict"] = "passed"
    with pytest.raises(ResultSchemaError, match="verdict"):
        report.write_reports(tmp_path, result)
    assert json.loads((tmp_path / "result.invalid.json").read_text())["verdict"] == "passed"
    assert not (tmp_path / "result.json").exists()
    assert not (tmp_path / "report.html").exists()


def test_regenerate_rebuilds_from_result_json(tmp_path: Path) -> None:
    report.write_reports(tmp_path, load("crash"))
    (tmp_path / "junit.xml").unlink()
    (tmp_path / "report.html").write_text("stale")
    result = report.regenerate(tmp_path)
    assert result["verdict"] == "fail"
    assert (tmp_path / "junit.xml").exists()
    assert "kernel oops during selftest" in (tmp_path / "report.html").read_text()


def test_regenerate_without_result_json_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path / "result.json")):
        report.regenerate(tmp_path)


def _run(root: Path, name: str, fixture: str | None, mtime: float) -> Path:
    d = root / name
    d.mkdir()
    if fixture:
        (d / "result.json").write_text(json.dumps(load(fixture)))
        os.utime(d / "result.json", (mtime, mtime))
    os.utime(d, (mtime, mtime))
    return d


def test_list_runs_newest_first_with_verdicts(tmp_path: Path) -> None:
    _run(tmp_path, "20250602-091403-run-0", "pass", 1000)
    _run(tmp_path, "20250602-093012-run-0", "case-fail", 2000)
    _run(tmp_path, "20250602-110244-run-0", "could-not-test", 3000)
    _run(tmp_path, "20250602-120000-run-0", None, 4000)
    broken = _run(tmp_path, "20250602-130000-run-0", None, 5000)
    (broken / "result.json").write_text("{")
    os.utime(broken / "result.json", (5000, 5000))
    (tmp_path / "stray-file").write_text("x")
    runs = report.list_runs(tmp_path)
    assert [(r.run_id, r.verdict, r.exit_code) for r in runs] == [
        ("20250602-130000-run-0", "invalid", None),
        ("20250602-120000-run-0", "incomplete", None),
        ("20250602-110244-run-0", "could-not-test", 125),
        ("20250602-093012-run-0", "fail", 1),
        ("20250602-091403-run-0", "pass", 0),
    ]
    assert runs[3].kernel_release == "6.12.117-00001-g8e2d1c0b9a8f"
    assert len(report.list_runs(tmp_path, limit=2)) == 2
    text = report.format_runs(runs)
    lines = text.splitlines()
    assert lines[0].split() == ["RUN", "VERDICT", "EXIT", "KERNEL", "STARTED", "REASON"]
    assert "20250602-093012-run-0  fail" in lines[4]
    assert "1 selftest case failed" in lines[4]
    assert lines[2].split()[1:3] == ["incomplete", "-"]


def test_list_runs_of_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no runs directory"):
        report.list_runs(tmp_path / "absent")
    assert report.list_runs(tmp_path) == []
    assert report.format_runs([]) == "no runs yet"


def test_resolve_run_dir_by_path_or_run_id(tmp_path: Path) -> None:
    run = tmp_path / "20250602-091403-run-0"
    run.mkdir()
    assert report.resolve_run_dir(run) == run
    assert report.resolve_run_dir("20250602-091403-run-0", tmp_path) == run
    with pytest.raises(UserError, match="no run directory nope"):
        report.resolve_run_dir("nope", tmp_path)
    with pytest.raises(UserError):
        report.resolve_run_dir("../20250602-091403-run-0", tmp_path / "x")


def test_run_info_to_dict(tmp_path: Path) -> None:
    _run(tmp_path, "r1", "pass", 1000)
    info = report.list_runs(tmp_path)[0].to_dict()
    assert info["verdict"] == "pass" and info["path"] == str(tmp_path / "r1")
    json.dumps(info)
