"""The order of a `make test` session around its background kernel builds (tests/prebuild.py)."""

from __future__ import annotations

from pathlib import Path

import prebuild

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"


def test_every_file_the_chain_names_exists() -> None:
    named = {f for _, files in prebuild.CHAIN for f in files}
    assert named and all((INTEGRATION / f).is_file() for f in named)


def test_unit_first_then_the_default_kernel_then_in_chain_order() -> None:
    assert prebuild.stage("tests/unit/test_proc.py") == 0
    assert prebuild.stage("tests/integration/test_guest.py") == 1
    assert prebuild.stage("tests/integration/test_hang_real.py") == 2
    assert prebuild.stage("tests/integration/test_workloads_72.py") == 3


def test_no_integration_test_selected_starts_nothing(tmp_path: Path) -> None:
    assert prebuild.start(["tests/unit/test_proc.py"], tmp_path / "log") is None
