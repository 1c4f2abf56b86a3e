"""Shared fixtures. Integration fixtures build the real default kernel and image once
per session (cached under the thpvm cache, so later sessions reuse them)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def default_kernel():
    """The default Debian 6.12 kernel with the shipped fragments (real build, cached)."""
    from orchestrator import kernel

    return kernel.build_kernel(kernel.KernelRequest())


@pytest.fixture(scope="session")
def guest_image():
    """The default guest image (real mmdebstrap build, cached)."""
    from orchestrator import image

    return image.build_image()
