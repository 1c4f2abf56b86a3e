"""Issue 15 rows 10-11: every input is checked before any build or boot.

Each case runs the real CLI (`main(argv)`) against an empty private THPVM_CACHE and
asserts exit 2, a message naming the file and key (or the bad value), and that
nothing was built: the cache holds no trees, build dirs, kernels, images or runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.data import WORKLOAD_SPECS_DIR
from orchestrator.errors import UserError
from orchestrator.jobs import bisection, validate, vmtest
from orchestrator.jobs.vmtest import parse_suite

GOOD_SPEC = WORKLOAD_SPECS_DIR / "full-pmd-collapse.toml"


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from orchestrator.build import image, kernel

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a build started before the inputs were checked")

    cache = tmp_path / "cache"
    monkeypatch.setenv("THPVM_CACHE", str(cache))
    monkeypatch.setattr(kernel, "build_kernel", no_build)
    monkeypatch.setattr(image, "build_image", no_build)
    return cache


def _built(cache: Path) -> list[str]:
    """Whatever a build or boot would have left in the cache."""
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _spec(tmp_path: Path, old: str, new: str) -> Path:
    text = GOOD_SPEC.read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("old, new, key, expected", [
    ("pmds = 1", "pmds = 9223372036854775807", "regions[0].pmds", "in 1..2048"),
    ("pmds = 1", "pmds = 1000000000", "regions[0].pmds", "in 1..2048"),
    ("pmds = 1", "pmds = 1025", "regions", "do not fit in the guest's"),
    ('op = "wait_scans"', 'op = "wait_scans"\ntimeout_s = inf', "timeout_s", "finite"),
    ('op = "wait_scans"', 'op = "wait_scans"\ntimeout_s = nan', "timeout_s", "finite"),
])
def test_bad_workload_values_exit_2_before_any_build(
        tmp_path: Path, empty_cache: Path, capsys: pytest.CaptureFixture[str],
        old: str, new: str, key: str, expected: str) -> None:
    spec = _spec(tmp_path, old, new)
    code, err = _run(["vm-test", "--suite", "selftest", "--workload", str(spec)], capsys)
    assert code == 2, err
    assert f"{spec}: " in err and key in err and expected in err, err
    assert "Traceback" not in err
    assert _built(empty_cache) == []


@pytest.mark.parametrize("argv, expected", [
    (["vm-test", "--workload", "/missing/spec.toml"], "/missing/spec.toml"),
    (["vm-test", "--suite", "workloads:typo"], "unknown workload(s) ['typo']"),
    (["vm-test", "--suite", "selftest:typo"], "unknown selftest invocation(s) ['typo']"),
    (["vm-test", "--suite", "selftest:"], "--suite selftest:"),
    (["vm-test", "--suite", "workloads:"], "--suite workloads:"),
    (["vm-test", "--suite", "selftest:anon++anon-s2"], "'+'-separated"),
    (["vm-test", "--fragment", "/missing.config"], "/missing.config"),
    (["vm-test", "--patch", "/missing.patch"], "/missing.patch"),
    (["workload", "run", "/missing/spec.toml"], "/missing/spec.toml"),
])
def test_bad_inputs_exit_2_before_any_build(
        empty_cache: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        expected: str) -> None:
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert expected in err
    assert _built(empty_cache) == []


@pytest.mark.parametrize("items", [["selftest:"], ["workloads:"], ["selftest:a+"],
                                   ["workloads:+b"]])
def test_empty_suite_lists_are_errors(items: list[str]) -> None:
    with pytest.raises(UserError, match="'\\+'-separated list"):
        parse_suite(items)


def test_check_inputs_accepts_the_shipped_inputs() -> None:
    suite = vmtest.check_inputs(vmtest.VmTestRequest(
        suite=["selftest:anon", "workloads:max-ptes-none-at-limit"], workload_files=[GOOD_SPEC]))
    assert suite.selftest == ["anon"]
    assert suite.workloads == ["max-ptes-none-at-limit"]


def test_bisect_and_validate_check_suites_before_building(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown workload"):
        bisection.check_request(bisection.BisectRequest(
            tmp_path, "a", "b", test=vmtest.VmTestRequest(suite=["workloads:typo"])))
    with pytest.raises(UserError, match="--suite selftest:"):
        validate.check_request(validate.ValidateRequest(
            tmp_path, "a", head="b", test=vmtest.VmTestRequest(suite=["selftest:"])))
