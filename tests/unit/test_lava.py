"""LAVA job definitions (validated by LAVA's own schema and pipeline) and importing a
LAVA job log into a judged run directory (no VM: a recorded log)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.lava import job as lava_job
from orchestrator.lava import results, validate
from orchestrator.machine import qemu
from orchestrator.report.resultfile import load_result
from orchestrator.suites.selftest import runner as selftest
from orchestrator.suites.workloads import runner as workloads

RECORDED = Path(__file__).resolve().parents[1] / "data" / "lava"
needs_lava_common = pytest.mark.skipif(not validate.have_lava_common(),
                                       reason="Debian's lava-common is not installed")


def definition(tmp_path: Path, suite: list[str]) -> Path:
    """A job for fake artifacts (paths only: LAVA validation does not open them)."""
    for name in ("bzImage", "rootfs.qcow2", "tools.ext4"):
        (tmp_path / name).write_text("x")
    art = NS(release="6.12.117", key="k", metadata={"config_hash": "c"},
             tree=NS(path=Path("/t")))
    img = NS(qcow2=tmp_path / "rootfs.qcow2", sha256="abc")
    req = lava_job.LavaJobRequest(kernel=None, suite=suite, out=tmp_path)  # type: ignore
    parsed = lava_job.parse_suite(suite)
    invs = [i for i in selftest.load_matrix() if i.id in (parsed.selftest or [])]
    specs = workloads.select(parsed.workloads, []) if parsed.workloads else []
    d = lava_job.job_definition(req, art, qemu.load_machine_profile(), img,  # type: ignore
                                tmp_path / "tools.ext4", invs, specs)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def test_job_shape(tmp_path: Path) -> None:
    d = yaml.safe_load(definition(tmp_path, ["selftest:anon", "workloads:thp-never"])
                       .read_text())
    deploy, boot, test = (next(iter(a.values())) for a in d["actions"])
    assert deploy["to"] == "tmpfs" and set(deploy["images"]) == {"kernel", "rootfs", "tools"}
    assert "-kernel {kernel}" in deploy["images"]["kernel"]["image_arg"]
    assert "trace_event=huge_memory:mm_khugepaged_scan_pmd," in \
        deploy["images"]["kernel"]["image_arg"]  # no tracepoint patched at run time
    assert boot["method"] == "qemu" and boot["prompts"] == ["# "]
    names = [t["name"] for t in test["definitions"]]
    assert names == ["thpvm-selftest", "thpvm-workloads"]
    steps = test["definitions"][0]["repository"]["run"]["steps"]
    assert "lava-test-case selftest-anon --result pass" in steps[1]
    assert d["metadata"]["thpvm.kernel_release"] == "6.12.117"


@needs_lava_common
def test_job_passes_lava_commons_schema(tmp_path: Path) -> None:
    path = definition(tmp_path, ["selftest:anon", "workloads:thp-never+full-pmd-collapse"])
    assert validate.schema_errors(path) == ""
    broken = yaml.safe_load(path.read_text())
    broken["actions"][1]["boot"]["method"] = "teleport"
    path.write_text(yaml.safe_dump(broken))
    assert validate.schema_errors(path) != ""


@pytest.mark.skipif(shutil.which("lava-run") is None, reason="lava-dispatcher not installed")
def test_job_builds_lava_dispatchers_pipeline(tmp_path: Path) -> None:
    path = definition(tmp_path, ["selftest:anon", "workloads:thp-never"])
    assert validate.pipeline_errors(path, tmp_path / "validate") == ""
    described = (tmp_path / "validate" / "description.yaml").read_text()
    assert "boot-qemu-image" in described and "lava-test-shell" in described


def test_blocks_survive_printk_lines_and_mark_a_cut_block() -> None:
    target = [("2026-01-01T00:00:00", "# @@thpvm-lava begin selftest anon"),  # after a prompt
              ("2026-01-01T00:00:01", "[   12.345678] random kernel line"),
              ("2026-01-01T00:00:02", "some output"),
              ("2026-01-01T00:00:03", "@@thpvm-lava end selftest anon rc=0"),
              ("2026-01-01T00:00:04", "@@thpvm-lava begin workload thp-never")]
    found = results.blocks(target)
    assert [(b.kind, b.name, b.rc, b.closed) for b in found] == [
        ("selftest", "anon", 0, True), ("workload", "thp-never", None, False)]
    assert found[0].lines == ["some output"] and found[0].seconds == 3.0


@pytest.mark.skipif(not (RECORDED / "real-guest").is_dir(), reason="no recorded LAVA log")
def test_import_of_a_recorded_lava_log_is_judged_by_the_model(tmp_path: Path,
                                                              capsys) -> None:
    out = tmp_path / "run"
    code = main(["lava", "import", str(RECORDED / "real-guest"), "--out", str(out)])
    result = load_result(out)  # schema-validated
    assert code == result["exit_code"]
    assert result["metadata"]["host"] == "lava"
    inv = result["selftest"]["invocations"][0]
    assert inv["argv"] == ["./khugepaged"] and len(inv["cases"]) > 10
    assert inv["counter_deltas"]  # snapshots around the invocation were read back
    verdicts = {w["name"]: w["verdict"] for w in result["workloads"]}
    assert set(verdicts) == {"thp-never", "full-pmd-collapse"}
    assert all(v in ("match", "mismatch") for v in verdicts.values())
    assert (out / "workloads/full-pmd-collapse/predicted.json").is_file()  # the model ran
    assert json.loads((out / "counters.json").read_text())
    assert (out / "report.html").is_file() and (out / "junit.xml").is_file()


def test_import_without_a_log_is_a_user_error(tmp_path: Path) -> None:
    assert main(["lava", "import", str(tmp_path)]) == 2


def test_lava_job_that_never_ran_the_tests_could_not_test(tmp_path: Path) -> None:
    (tmp_path / "output.yaml").write_text(
        '- {"dt": "2026-01-01T00:00:00", "lvl": "error", "msg": "QEMU failed to start"}\n'
        '- {"dt": "2026-01-01T00:00:01", "lvl": "results", "msg": {"definition": "lava", '
        '"case": "job", "result": "fail"}}\n')
    assert main(["lava", "import", str(tmp_path), "--out", str(tmp_path / "run")]) == 125
    assert "QEMU failed to start" in load_result(tmp_path / "run")["reason"]
