"""Issue 15 row 7 on a real kernel: LKDTM provokes a real WARN in a guest booted with
kconfigs/debug.config during a vm-test run. The run fails (exit 1) naming the WARN;
with --allow-warn matching it, the same run passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cachecopy import make_private_cache

from orchestrator.cli import main
from orchestrator.data import KCONFIG_DIR
from orchestrator.jobs import vmtest


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_private_cache(tmp_path, monkeypatch)

PROVOKE = ("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; "
           "echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT")


@pytest.fixture
def warn_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first counter snapshot of the run (right after boot) provokes a WARN first."""
    fired: list[int] = []
    real = vmtest._snapshot

    def snapshot_after_warn(g: Any) -> Any:
        if not fired:
            res = g.shell.run(PROVOKE, timeout=120)
            fired.append(res.exit_code)
        return real(g)

    monkeypatch.setattr(vmtest, "_snapshot", snapshot_after_warn)
    return fired


def _vm_test(out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    # one shared guest: its first counter snapshot is where warn_once provokes the WARN
    code = main(["vm-test", "--fragment", str(KCONFIG_DIR / "debug.config"),
                 "--suite", "workloads:full-pmd-collapse", "--isolation", "shared",
                 "--out", str(out), *extra])
    return code, json.loads((out / "result.json").read_text())


def test_real_warn_fails_the_run_and_allow_warn_tolerates_it(
        private_cache: Path, tmp_path: Path, warn_once: list[int],
        no_leaked_qemu: None) -> None:
    code, result = _vm_test(tmp_path / "warn")
    assert warn_once == [0]
    assert code == 1 and result["verdict"] == "fail", result["reason"]
    assert "kernel warning: WARNING: CPU: " in result["reason"]
    assert "lkdtm" in result["reason"]
    assert [e["kind"] for e in result["console"]["events"]].count("warning") == 1
    assert (tmp_path / "warn" / "junit.xml").exists()

    warn_once.clear()
    code, result = _vm_test(tmp_path / "allowed", "--allow-warn", r"lkdtm_WARNING")
    assert warn_once == [0]
    assert code == 0 and result["verdict"] == "pass", result["reason"]
    assert "warning" in [e["kind"] for e in result["console"]["events"]]
