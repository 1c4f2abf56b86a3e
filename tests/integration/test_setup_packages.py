"""`make vm-test`'s set-up installs no desktop: the run-time package list, closed over its
dependencies on an empty system with --no-install-recommends, has no X11/GTK packages.

apt resolves the closure against a status file that says nothing is installed (a fresh machine
as far as dependencies go), in simulation mode: the host's apt state is not touched.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
DESKTOP = re.compile(r"gtk|libx11|libxcb|xorg|x11-common|xserver|gnome|adwaita|dconf|"
                     r"qemu-system-gui|chromium|libsdl|pulseaudio")


def wanted(name: str) -> list[str]:
    text = (SCRIPTS / name).read_text()
    return [w for line in text.splitlines() for w in line.split("#")[0].split()]


def closure(packages: list[str]) -> list[str]:
    res = subprocess.run(["apt-get", "-s", "-o", "Dir::State::status=/dev/null",
                          "-o", "Debug::NoLocking=1", "install", "--no-install-recommends",
                          *packages], capture_output=True, text=True, timeout=300)
    if "Unable to locate package" in res.stdout + res.stderr:
        pytest.skip("apt package lists are empty here (run apt-get update)")
    assert res.returncode == 0, res.stdout + res.stderr
    return [line.split()[1] for line in res.stdout.splitlines() if line.startswith("Inst ")]


def test_run_time_setup_pulls_no_desktop() -> None:
    run_time = wanted("apt-packages.txt")
    assert "chromium" not in run_time  # test-only: apt-packages-test.txt
    pulled = closure(run_time)
    assert "qemu-system-x86" in pulled and len(pulled) > len(run_time)
    assert [p for p in pulled if DESKTOP.search(p)] == []


def test_test_only_packages_are_listed_apart() -> None:
    assert "chromium" in wanted("apt-packages-test.txt")
