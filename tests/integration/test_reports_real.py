"""Reports of real runs: the HTML of a real vm-test opens in headless Chromium, and two
runs on the same kernel diff with no status change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from orchestrator import proc
from orchestrator.cli import main
from orchestrator.judge.rundiff import diff_runs
from orchestrator.report.resultfile import validate_result


def _chromium_dom(tmp_path: Path, url: str) -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium is installed by make setup"
    return proc.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                    timeout=60).output


def test_two_real_runs_report_and_diff(tmp_path, capsys, no_leaked_qemu):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code = main(["vm-test", "--suite", "selftest:anon", "--suite", "workloads",
                     "--out", str(out)])
        result = json.loads((out / "result.json").read_text())
        validate_result(result)
        assert code == 0, result["reason"]
        runs.append(result)
    diff = diff_runs(runs[0], runs[1])
    assert [c for c in diff.cases if c[1] != c[2]] == []
    assert [w for w in diff.workloads if w[1] != w[2]] == []
    assert diff.kind() == "no-change"
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "no-change" in capsys.readouterr().out.lower().replace(" ", "-")

    dom = _chromium_dom(tmp_path, (tmp_path / "a" / "report.html").as_uri())
    assert "verdict-pass" in dom
    assert "collapse_max_ptes_swap" in dom and "max-ptes-none-exceeded" in dom
    assert '<a href="serial.log">serial.log</a>' in dom
    # `thpvm report` regenerates the three files from the run directory
    (tmp_path / "a" / "report.html").unlink()
    assert main(["report", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "report.html").stat().st_size > 1000
