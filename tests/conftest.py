"""Shared fixtures. Integration fixtures build the real default kernel and image once
per session (cached under the thpvm cache, so later sessions reuse them)."""

from __future__ import annotations

import os
from pathlib import Path

import prebuild
import pytest

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(items):
    """Unit tests first, integration tests in the order of the kernels they need."""
    items.sort(key=lambda item: prebuild.stage(str(item.fspath)))  # stable within a stage


CACHE_AT_START = os.environ.get("THPVM_CACHE")


def pytest_runtest_setup(item):
    """The unit tests run first: one that switched the cache for good would send every
    integration test after it to another, cold cache (and past the background builds)."""
    if prebuild.is_integration(str(item.fspath)) and \
            os.environ.get("THPVM_CACHE") != CACHE_AT_START:
        pytest.fail(f"an earlier test left THPVM_CACHE={os.environ.get('THPVM_CACHE')} "
                    f"(was {CACHE_AT_START}) in the environment")


@pytest.fixture(scope="session", autouse=True)
def prebuilt_kernels(request, tmp_path_factory):
    """The background kernel builds of prebuild.py, for the session's integration tests."""
    chain = prebuild.start([str(i.fspath) for i in request.session.items],
                           tmp_path_factory.mktemp("prebuild") / "builds.log")
    yield chain
    prebuild.stop(chain)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def default_kernel():
    """The default Debian 6.12 kernel with the shipped fragments (real build, cached)."""
    from orchestrator.build import kernel

    return kernel.build_kernel(kernel.KernelRequest())


@pytest.fixture(scope="session")
def guest_image():
    """The default guest image (real mmdebstrap build, cached)."""
    from orchestrator.build import image

    return image.build_image()


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"}


@pytest.fixture
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private thpvm cache, no user/system git config, a fixed git identity."""
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for k, v in GIT_IDENTITY.items():
        monkeypatch.setenv(k, v)
