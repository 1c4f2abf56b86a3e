"""Validate a LAVA job definition with LAVA's own code.

`schema_errors`: `lava_common.schemas.validate` (Debian package lava-common, the schema
lava-server checks submissions with). It lives in Debian's python3, not in thpvm's venv,
so it runs as a child of that interpreter (THPVM_LAVA_PYTHON, default python3 on PATH
outside the venv: /usr/bin/python3).

`pipeline_errors`: `lava-run --validate` (lava-dispatcher) with a device configuration:
builds the dispatcher's whole action pipeline for the job without running it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchestrator import proc
from orchestrator.data import LAVA_DEVICES_DIR
from orchestrator.errors import InfraError

DEBIAN_PYTHON = "/usr/bin/python3"  # where Debian's python3-* packages are importable
_CHECK = """
import sys, yaml
from voluptuous import Invalid
from lava_common.schemas import validate
try:
    validate(yaml.safe_load(open(sys.argv[1])), strict=True)
except Invalid as e:
    print("/".join(str(p) for p in e.path) + ": " + e.msg)
    sys.exit(1)
"""


def lava_python() -> str:
    return os.environ.get("THPVM_LAVA_PYTHON", DEBIAN_PYTHON)


def have_lava_common() -> bool:
    py = lava_python()
    if not Path(py).exists():
        return False
    return proc.run([py, "-c", "import lava_common.schemas"], check=False,
                    timeout=60).returncode == 0


def schema_errors(job: Path) -> str:
    """'' if `job` passes lava_common's job schema, else 'path: message'."""
    if not have_lava_common():
        raise InfraError("lava_common is not importable: apt-get install "
                         "--no-install-recommends lava-common (or set THPVM_LAVA_PYTHON; "
                         f"tried {lava_python()})")
    res = proc.run([lava_python(), "-c", _CHECK, str(job)], check=False, timeout=120)
    return "" if res.returncode == 0 else (res.output.strip() or f"exit {res.returncode}")


def pipeline_errors(job: Path, out: Path, device: Path | None = None) -> str:
    """'' if `lava-run --validate` accepts the job for the device, else its log tail."""
    exe = shutil.which("lava-run")
    if exe is None:
        raise InfraError("lava-run not found: apt-get install --no-install-recommends "
                         "lava-dispatcher")
    device = device or LAVA_DEVICES_DIR / "qemu.yaml"
    out.mkdir(parents=True, exist_ok=True)
    res = proc.run([exe, "--validate", "--job-id", "thpvm-validate", "--output-dir", out,
                    "--device", device, job], check=False, timeout=300,
                   log_path=out / "validate.log")
    return "" if res.returncode == 0 else "\n".join(res.tail[-25:])
