"""The done-criterion of matrices: a 2-kernel x 2-suite x 2-repeat matrix (the shipped
`smoke`: Debian 6.12 with and without kconfigs/debug.config, `selftest:anon` and two
workloads) runs here with --jobs 2, merges into one report, and that report reads right
in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from orchestrator import proc
from orchestrator.cli import main
from orchestrator.report.resultfile import validate_result


def _chromium(tmp_path: Path, *args: str) -> str:
    exe = shutil.which("chromium")
    assert exe, "chromium is installed by make setup-test"
    return proc.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp_path / 'profile'}", *args], timeout=120).output


def _qemu_with(path: Path) -> list[int]:
    """QEMU processes whose command line names `path` (ours, not other runs')."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmd.startswith("qemu-system") and str(path) in cmd:
            pids.append(int(pid))
    return pids


def test_smoke_matrix_two_at_a_time_then_merged(tmp_path: Path, capsys) -> None:
    out = Path(os.environ.get("THPVM_MATRIX_TEST_OUT") or tmp_path / "matrix")
    code = main(["matrix", "run", "smoke", "--jobs", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code in (0, 1), printed  # a verdict for every job, no infrastructure failure
    assert _qemu_with(out) == []
    state = json.loads((out / "matrix.json").read_text())
    assert state["parallel"] == 2 and len(state["jobs"]) == 8
    assert [b["exit_code"] for b in state["builds"]] == [0, 0, 0]
    for job in state["jobs"]:
        result = json.loads((out / "jobs" / job["job"] / "result.json").read_text())
        validate_result(result)
        assert job["exit_code"] == result["exit_code"] and result["exit_code"] in (0, 1)
    releases = {json.loads((out / "jobs" / j["job"] / "result.json").read_text())
                ["metadata"]["config_hash"] for j in state["jobs"]}
    assert len(releases) == 2  # two kernels (two configs), each built once

    merged = tmp_path / "merged"
    assert main(["matrix", "merge", str(out), "--out", str(merged)]) == code
    summary = json.loads((merged / "matrix-summary.json").read_text())
    assert summary["kernels"] == ["6.12", "6.12-debug"] and len(summary["jobs"]) == 8
    names = {c["name"] for c in summary["cases"]}
    assert {"full-pmd-collapse", "thp-never"} <= names
    for case in summary["cases"]:
        assert set(case["cells"]) == {"6.12", "6.12-debug"}
        # a selftest run that stops early (the verdict says so) leaves its later cases
        # with one run: every cell has one or two, the workloads always two
        assert all(1 <= c["runs"] <= 2 for c in case["cells"].values())
        if case["name"] in ("full-pmd-collapse", "thp-never"):
            assert all(c["runs"] == 2 for c in case["cells"].values())

    dom = _chromium(tmp_path, "--dump-dom", (merged / "report.html").as_uri())
    assert f'class="banner verdict-{summary["verdict"]}"' in dom
    assert "<th>6.12</th><th>6.12-debug</th>" in dom
    assert dom.count('class="job-row"') == 8
    assert 'id="suite-selftest-anon"' in dom and "full-pmd-collapse" in dom
    assert "model-verdict" in dom and "pages_collapsed" in dom
    png = tmp_path / "merged.png"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,1600",
              (merged / "report.html").as_uri())
    assert png.stat().st_size > 10_000
