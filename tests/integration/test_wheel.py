"""The wheel carries every piece of shipped data: a non-editable install works on its own.

Builds the wheel from a copy of the tracked files with `python -m build`, installs it into a fresh
venv that borrows the project venv's third-party packages (a plain path entry, so the editable
install of the repo is not visible), and runs thpvm from outside the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0, f"{argv} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res


def test_wheel_installs_and_runs_outside_the_repo(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = run(["git", "ls-files", "-z"], REPO).stdout.split("\0")
    run(["tar", "-cf", str(tmp_path / "src.tar"), *[f for f in files if f]], REPO)
    run(["tar", "-xf", str(tmp_path / "src.tar")], src)
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), "."], src)
    wheels = list((tmp_path / "dist").glob("thpvm-*.whl"))
    assert len(wheels) == 1

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    vpy = venv / "bin" / "python"
    purelib = run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  tmp_path).stdout.strip()
    # third-party packages from the project venv, without processing its .pth files
    Path(purelib, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(vpy), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])], tmp_path)

    where = run([str(vpy), "-c", "import orchestrator; print(orchestrator.__file__)"],
                tmp_path).stdout
    assert where.startswith(purelib), where  # the wheel's copy, not the repository
    data = run([str(vpy), "-c", (
        "from orchestrator import data\n"
        "for name in ('KCONFIG_DIR', 'IMAGES_DIR', 'MACHINE_PROFILES_DIR', 'SELFTEST_MATRIX',"
        " 'WORKLOAD_SPECS_DIR', 'DRIVER_SOURCE', 'RESULT_SCHEMA'):\n"
        "    p = getattr(data, name); assert p.exists(), (name, p); print(name, p)\n"
        "print(sorted(p.name for p in data.KCONFIG_DIR.iterdir()))")], tmp_path).stdout
    assert "thp.config" in data and "base.config" in data
    thpvm = str(venv / "bin" / "thpvm")
    predicted = run([thpvm, "model", "predict", "full-pmd-collapse"], tmp_path).stdout
    assert "full-pmd-collapse" in predicted and "pages_collapsed" in predicted
    assert "--suite" in run([thpvm, "vm-test", "--help"], tmp_path).stdout
