"""Shipped data: the one home of every package-data path (found with importlib.resources).

Fragments, image recipes, machine profiles, the selftest matrix, workload specs and the
driver source ship inside the package, so a non-editable `pip install` finds them too. The
repository's top-level `kconfigs/` and `vm-images/` are symlinks into the package, kept for
the paths users type (`--fragment kconfigs/debug.config`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _shipped(package: str, name: str) -> Path:
    """A file or folder of `package`, as a real path (the package is installed on disk)."""
    return Path(str(resources.files(package).joinpath(name)))


KCONFIG_DIR = _shipped("orchestrator.build", "kconfigs")
IMAGES_DIR = _shipped("orchestrator.build", "images")
MACHINE_PROFILES_DIR = _shipped("orchestrator.machine", "profiles")
SELFTEST_MATRIX = _shipped("orchestrator.suites.selftest", "matrix.toml")
WORKLOAD_SPECS_DIR = _shipped("orchestrator.suites.workloads", "specs")
DRIVER_SOURCE = _shipped("orchestrator.suites.workloads", "thpwork.c")
RESULT_SCHEMA = _shipped("orchestrator.report", "schema/result.schema.json")
MATRICES_DIR = _shipped("orchestrator.jobs", "matrices")
LAVA_DEVICES_DIR = _shipped("orchestrator.lava", "devices")
