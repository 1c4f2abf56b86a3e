"""vm-test isolation: with --isolation guest (the default) every workload gets a
fresh guest of its own and the selftest another; with shared, one guest for all.
Kernel, image, QEMU and the workload runner are fakes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.build import image, kernel
from orchestrator.jobs import vmtest
from orchestrator.machine import qemu, session
from orchestrator.suites.workloads import runner as workload_suite

NAMES = ["w1", "w2", "w3"]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"guests": [], "ran": []}
    (tmp_path / "config").write_text("CONFIG_X=y\n")
    tree = kernel.KernelTree(tmp_path, "plain", "id", None, "slot")
    art = kernel.KernelArtifacts("key", tmp_path, tree, True, 0.0, {})
    monkeypatch.setattr(kernel, "build_kernel", lambda req, progress=None: art)
    monkeypatch.setattr(image, "build_image", lambda: SimpleNamespace(sha256="img"))
    monkeypatch.setattr(qemu, "qemu_version", lambda: "9.9")

    @contextmanager
    def guest(bz: Path, img: Any, run_dir: Path, accel: str = "auto",
              append: str = "", machine: str = "default") -> Iterator[Any]:
        (run_dir / "rootfs-overlay.qcow2").write_text("")
        g = SimpleNamespace(boot_seconds=1.0, ssh_seconds=0.5, accel="tcg", accel_reason="r",
                            dir=run_dir, shell=object(), lost=None, usable=lambda: True,
                            kernel_failure=lambda: None,
                            vm=SimpleNamespace(console=None, crash=lambda: None,
                                               alive=lambda: True))
        seen["guests"].append(g)
        yield g

    monkeypatch.setattr(session, "guest", guest)
    monkeypatch.setattr(vmtest, "_snapshot", lambda g: None)
    specs = [SimpleNamespace(name=n, applies_to=lambda release: True) for n in NAMES]
    monkeypatch.setattr(workload_suite, "select", lambda sel, files: specs)
    monkeypatch.setattr(vmtest, "check_fits", lambda spec, memory_mb: None)
    monkeypatch.setattr(workload_suite, "prepare_driver", lambda: tmp_path)
    monkeypatch.setattr(workload_suite, "upload", lambda shell: "/root/thpwork")

    def run_one(shell: Any, spec: Any, out_dir: Path, remote: str, version: str) -> dict:
        seen["ran"].append((spec.name, seen["guests"][-1]))
        return {"name": spec.name, "verdict": "match", "explanation": "",
                "chosen_alternative": None, "checkpoints": []}

    monkeypatch.setattr(workload_suite, "run_one", run_one)
    monkeypatch.setattr(vmtest, "_finish", lambda run, verdict, code, reason, detail="": {})
    return seen


def test_each_workload_gets_a_fresh_guest(tmp_path: Path, fakes: dict[str, list[Any]]) -> None:
    out = vmtest.run_vm_test(vmtest.VmTestRequest(suite=["workloads"], out=tmp_path / "run"))
    assert out.exit_code == 0
    assert [n for n, _ in fakes["ran"]] == NAMES
    guests = [g for _, g in fakes["ran"]]
    assert len({id(g) for g in guests}) == len(NAMES) == len(fakes["guests"])
    assert [g.dir for g in guests] == [tmp_path / "run" / "workloads" / n for n in NAMES]
    # the stopped guests' disks are dropped, their logs stay
    assert not list((tmp_path / "run").rglob("rootfs-overlay.qcow2"))


def test_shared_isolation_uses_one_guest(tmp_path: Path, fakes: dict[str, list[Any]]) -> None:
    req = vmtest.VmTestRequest(suite=["workloads"], out=tmp_path / "run", isolation="shared")
    assert vmtest.run_vm_test(req).exit_code == 0
    assert len(fakes["guests"]) == 1 and len(fakes["ran"]) == len(NAMES)


def test_unknown_isolation_is_a_user_error(tmp_path: Path, fakes: dict[str, list[Any]]) -> None:
    from orchestrator.errors import UserError

    req = vmtest.VmTestRequest(suite=["workloads"], out=tmp_path / "run", isolation="snapshot")
    with pytest.raises(UserError, match="--isolation snapshot"):
        vmtest.run_vm_test(req)
