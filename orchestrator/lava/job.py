"""`thpvm lava job`: a LAVA job definition that runs thpvm's suites on a LAVA QEMU device.

What LAVA gets (all as `file://` URLs of files thpvm built, under the output directory):

* ``deploy: to: tmpfs`` with three images: the kernel (``-kernel`` plus thpvm's command
  line), the guest root file system (the thpvm qcow2 image) and a small ext4 *tools*
  disk (label ``thpvmtools``) holding the selftest binary, the workload driver, one
  driver input per workload and ``run.sh``;
* ``boot: method: qemu``: the guest init offers a root shell on the serial console (the
  prompt ``# ``), which is LAVA's test shell;
* ``test``: two inline LAVA test definitions, selftest and workloads. Each step calls
  ``run.sh``, which prints its output between ``@@thpvm-lava begin|end`` markers (with
  counter snapshots around each selftest invocation) and exits with the test's status;
  the step reports it with ``lava-test-case``.

`thpvm lava import` reads those markers back out of LAVA's log (see lava/results.py).
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator import proc
from orchestrator.build import image, kernel
from orchestrator.errors import BuildError, UserError
from orchestrator.jobs.vmtest import parse_suite
from orchestrator.machine import qemu
from orchestrator.suites import counters
from orchestrator.suites.selftest import runner as selftest
from orchestrator.suites.workloads import driver
from orchestrator.suites.workloads import runner as workloads

TOOLS_LABEL = "thpvmtools"
TOOLS_MOUNT = "/mnt/thpvm"
WORK_DIR = "/root"
MARK = "@@thpvm-lava"
JOB_NAME = "job.yaml"
PROMPT = "# "


@dataclass
class LavaJobRequest:
    """`thpvm lava job`: the kernel (as for vm-test), the suites, where to write."""

    kernel: kernel.KernelRequest
    suite: list[str]
    out: Path
    machine: str = "default"
    device_type: str = "qemu"
    timeout_minutes: int = 120


@dataclass
class LavaJob:
    definition: dict[str, Any]
    path: Path
    invocations: list[str] = field(default_factory=list)
    workloads: list[str] = field(default_factory=list)


def write_job(req: LavaJobRequest) -> LavaJob:
    """Build (or reuse) kernel, image and tools disk; write `out/job.yaml`."""
    suite = parse_suite(req.suite)
    req.out.mkdir(parents=True, exist_ok=True)
    art = kernel.build_kernel(req.kernel)
    img = image.build_image()
    invs, st_bin = _selftest_parts(art, suite)
    specs = workloads.select(suite.workloads, []) if suite.workloads is not None else []
    tools = _tools_disk(req.out, st_bin, specs)
    shutil.copyfile(art.bzimage, req.out / "bzImage")
    profile = qemu.load_machine_profile(req.machine)
    definition = job_definition(req, art, profile, img, tools, invs, specs)
    path = req.out / JOB_NAME
    path.write_text(yaml.safe_dump(definition, sort_keys=False, width=1000))
    return LavaJob(definition, path, [i.id for i in invs], [s.name for s in specs])


def _selftest_parts(art: kernel.KernelArtifacts, suite: Any
                    ) -> tuple[list[selftest.Invocation], Path | None]:
    if suite.selftest is None:
        return [], None
    iface = selftest.detect_interface(art.tree.path)
    matrix = selftest.load_matrix()
    ids = (selftest.default_ids(matrix, art.tree.path, iface) if suite.selftest == "default"
           else None if suite.selftest == "full" else list(suite.selftest))
    return selftest.select(matrix, iface, ids), selftest.build_selftest(art)


def run_script() -> str:
    """tools/run.sh: `run.sh selftest ID ARG...` | `run.sh workload NAME TIMEOUT`."""
    return f"""#!/bin/sh
# thpvm on LAVA: run one selftest invocation or one workload, output between markers.
T={TOOLS_MOUNT}
snapshot() {{ echo "{MARK} begin snapshot $1"; {counters.snapshot_command()}; \
echo "{MARK} end snapshot $1"; }}
kind=$1; name=$2; shift 2
cd {WORK_DIR}
if [ "$kind" = selftest ]; then
    cp -f $T/khugepaged ./khugepaged 2>/dev/null; mkdir -p {selftest.GUEST_FILEDIR}
    snapshot "before-$name"
    echo "{MARK} begin selftest $name $*"
    ./khugepaged "$@" 2>&1; rc=$?
    echo "{MARK} end selftest $name rc=$rc"
    snapshot "after-$name"
else
    echo "{MARK} begin workload $name"
    $T/thpwork --timeout "$1" --trace-out /tmp/thpwork-$name.trace $T/$name.in 2>/dev/null
    rc=$?
    echo "{MARK} end workload $name rc=$rc"
fi
exit $rc
"""


def _tools_disk(out: Path, st_bin: Path | None, specs: list[Any]) -> Path:
    """An ext4 image (mkfs.ext4 -d, no root needed) with the guest-side tools."""
    tree = out / "tools"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    if st_bin is not None:
        shutil.copy2(st_bin, tree / "khugepaged")
    if specs:
        shutil.copy2(driver.driver_binary(), tree / "thpwork")
        for spec in specs:
            (tree / f"{spec.name}.in").write_text(driver.driver_input(spec))
            shutil.copyfile(spec.source, tree / f"{spec.name}.toml")
    (tree / "run.sh").write_text(run_script())
    (tree / "run.sh").chmod(0o755)
    disk = out / "tools.ext4"
    disk.unlink(missing_ok=True)
    proc.run(["mkfs.ext4", "-q", "-F", "-L", TOOLS_LABEL, "-d", tree, disk, "32M"],
             timeout=120, error=BuildError)
    return disk


def _definition(name: str, description: str, steps: list[str]) -> dict[str, Any]:
    return {"from": "inline", "name": name, "path": f"inline/{name}.yaml",
            "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0",
                                        "name": name, "description": description},
                           "run": {"steps": steps}}}


def _case_step(case: str, command: str) -> str:
    return (f"{command} && lava-test-case {case} --result pass "
            f"|| lava-test-case {case} --result fail")


def test_definitions(invs: list[selftest.Invocation], specs: list[Any]) -> list[dict[str, Any]]:
    """The inline LAVA test definitions: mount the tools disk, one case per test."""
    mount = f"mkdir -p {TOOLS_MOUNT} && (mountpoint -q {TOOLS_MOUNT} || " \
            f"mount -o ro LABEL={TOOLS_LABEL} {TOOLS_MOUNT})"
    defs = []
    if invs:
        steps = [mount] + [_case_step(f"selftest-{i.id}", shlex.join(
            ["sh", f"{TOOLS_MOUNT}/run.sh", "selftest", i.id, *selftest.guest_argv(i)[1:]]))
            for i in invs]
        defs.append(_definition("thpvm-selftest", "the kernel's khugepaged selftest", steps))
    if specs:
        steps = [mount] + [_case_step(f"workload-{s.name}", shlex.join(
            ["sh", f"{TOOLS_MOUNT}/run.sh", "workload", s.name,
             str(int(driver.time_budget(s)) + 1)])) for s in specs]
        defs.append(_definition("thpvm-workloads", "thpvm workloads (judged offline by "
                                "the model after `thpvm lava import`)", steps))
    return defs


def job_definition(req: LavaJobRequest, art: kernel.KernelArtifacts, profile: Any,
                   img: image.Image, tools: Path, invs: list[selftest.Invocation],
                   specs: list[Any]) -> dict[str, Any]:
    """The LAVA job as a dict (validated by lava/validate.py)."""
    if not invs and not specs:
        raise UserError(f"--suite {req.suite}: nothing to run on LAVA")
    cmdline = f"{profile.cmdline} root=/dev/vda rw rootfstype=ext4 init=/sbin/thpvm-init"
    drive = "-drive file={%s},if=none,id=%s,format=%s -device virtio-blk-pci,drive=%s"
    return {
        "device_type": req.device_type,
        "job_name": f"thpvm {art.release} {' '.join(req.suite)}",
        "timeouts": {"job": {"minutes": req.timeout_minutes}, "action": {"minutes": 60},
                     "connection": {"minutes": 5}},
        "priority": "medium", "visibility": "public",
        "context": {"arch": "amd64", "memory": profile.memory_mb, "cpu": profile.tcg_cpu,
                    "machine": profile.machine, "netdevice": "user",
                    "extra_options": [f"-smp {profile.cpus}", "-nographic"]},
        "metadata": {"thpvm.kernel_release": art.release, "thpvm.kernel_key": art.key,
                     "thpvm.config_hash": str(art.metadata.get("config_hash", "")),
                     "thpvm.tree": str(art.tree.path), "thpvm.suite": ",".join(req.suite),
                     "thpvm.image_hash": img.sha256},
        "actions": [
            {"deploy": {"to": "tmpfs", "timeout": {"minutes": 15}, "images": {
                "kernel": {"url": (req.out / "bzImage").resolve().as_uri(),
                           "image_arg": f"-kernel {{kernel}} -append \"{cmdline}\""},
                "rootfs": {"url": img.qcow2.resolve().as_uri(),
                           "image_arg": drive % ("rootfs", "root", "qcow2", "root")},
                "tools": {"url": tools.resolve().as_uri(),
                          "image_arg": drive % ("tools", "tools", "raw", "tools")}}}},
            {"boot": {"method": "qemu", "media": "tmpfs", "timeout": {"minutes": 15},
                      "prompts": [PROMPT]}},
            {"test": {"timeout": {"minutes": 90},
                      "definitions": test_definitions(invs, specs)}},
        ],
    }
