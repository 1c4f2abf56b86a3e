"""`thpvm vm-test` end to end on real kernels: the default tree passes; a kernel whose
khugepaged no longer collapses anonymous memory fails with the cases named."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.cli import main
from orchestrator.report.resultfile import validate_result

PATCHES = Path(__file__).parent.parent / "data" / "patches"


def _result(run_dir: Path) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    validate_result(result)
    return result


def test_default_vm_test_passes(default_kernel, tmp_path, capsys, no_leaked_qemu):
    out = tmp_path / "run"
    code = main(["vm-test", "--out", str(out)])
    printed = capsys.readouterr().out
    result = _result(out)
    assert code == 0, result["reason"]
    assert result["verdict"] == "pass"
    invocations = result["selftest"]["invocations"]
    assert [inv["argv"] for inv in invocations] == [["./khugepaged"], ["./khugepaged", "-s", "2"]]
    for inv in invocations:
        assert inv["exit_code"] == 0 and inv["status"] == "pass"
        assert len(inv["cases"]) >= 20
        names = {c["name"] for c in inv["cases"]}
        assert {"collapse_full", "collapse_max_ptes_swap", "collapse_fork"} <= names
        assert inv["counter_deltas"]["thp_collapse_alloc"] > 0
    assert result["workloads"], "built-in workloads did not run"
    assert all(w["verdict"] == "match" for w in result["workloads"]), \
        [(w["name"], w["explanation"]) for w in result["workloads"] if w["verdict"] != "match"]
    assert result["metadata"]["accel"] in ("kvm", "tcg")
    assert result["metadata"]["kernel_release"] == default_kernel.release
    suites = ET.parse(out / "junit.xml").getroot()
    cases = suites.findall(".//testcase")
    assert len(cases) >= sum(len(i["cases"]) for i in invocations)
    assert (out / "report.html").stat().st_size > 1000
    assert (out / "dmesg.txt").read_text().strip()
    assert "pass" in printed.lower()


def test_broken_anon_collapse_exits_1_naming_cases(tmp_path, capsys, no_leaked_qemu):
    out = tmp_path / "run"
    code = main(["vm-test", "--out", str(out), "--suite", "selftest:anon",
                 "--patch", str(PATCHES / "break-anon-collapse.patch")])
    result = _result(out)
    assert code == 1, result["reason"]
    assert result["verdict"] == "fail"
    [inv] = result["selftest"]["invocations"]
    failed = {(c["name"], c["context"]) for c in inv["cases"] if c["status"] == "fail"}
    assert ("collapse_full", "khugepaged") in failed
    assert ("collapse_single_pte_entry", "khugepaged") in failed
    # MADV_COLLAPSE does not go through khugepaged's path: still passes
    passed = {(c["name"], c["context"]) for c in inv["cases"] if c["status"] == "pass"}
    assert ("collapse_full", "madvise") in passed
    assert inv["counter_deltas"].get("pages_collapsed", 0) == 0
    err = capsys.readouterr()
    assert "collapse_full" in err.out + err.err or "khugepaged" in result["reason"]
