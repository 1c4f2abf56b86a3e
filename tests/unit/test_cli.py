"""cli.main(argv): usage errors, exit-code mapping, and `kernel build` end to end on the
fake kernel tree (tests/fakes/kernel-tree). errors.exit_code_for for every error class."""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import cli, errors
from orchestrator.build import kernel
from orchestrator.errors import (
    BootError,
    BuildError,
    ConfigError,
    GuestError,
    ImageError,
    InfraError,
    ThpvmError,
    UserError,
    exit_code_for,
)

FAKE_TREE = Path(__file__).resolve().parent.parent / "fakes" / "kernel-tree"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_MAKE_LOG", str(tmp_path / "make-calls"))
    monkeypatch.setenv("CI", "true")  # quiet progress output
    for var in ("FAKE_FAIL", "FAKE_DROP", "THPVM_LOG"):
        monkeypatch.delenv(var, raising=False)
    previous = signal.getsignal(signal.SIGTERM)  # main() installs a SIGTERM handler
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    dest = tmp_path / "linux"
    shutil.copytree(FAKE_TREE, dest)
    return dest


# ---------------------------------------------------------------- usage

@pytest.mark.parametrize("argv", [
    [], ["kernel"], ["no-such-command"], ["kernel", "build", "--no-such-option"],
    ["vm-test", "--accel", "hvf"], ["kernel", "build", "-j", "many"], ["image"],
])
def test_bad_usage_is_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: thpvm" in err and "error:" in err


@pytest.mark.parametrize("argv", [["--help"], ["kernel", "build", "--help"], ["vm-test", "-h"],
                                  ["--version"]])
def test_help_and_version_are_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "usage: thpvm" in out or out.startswith("thpvm ")


def test_missing_fragment_is_2_and_named(fake: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo.config"
    assert cli.main(["kernel", "build", "--tree", str(fake), "--fragment", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"thpvm: error: cannot read kconfig fragment {missing}" in err
    assert not (tmp_path / "make-calls").exists()  # nothing was built


def test_bad_config_value_is_2(fake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel", "build", "--tree", str(fake), "--config", "CONFIG_X y"]) == 2
    assert "not a kconfig line" in capsys.readouterr().err


def test_not_a_tree_is_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel", "build", "--tree", str(tmp_path)]) == 2
    assert "not a Linux kernel source tree" in capsys.readouterr().err


# ---------------------------------------------------------------- kernel build end to end

def test_kernel_build_on_fake_tree(fake: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel", "build", "--tree", str(fake), "-j", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kernel 6.12.0-fake (built in ")
    bz = next((tmp_path / "cache" / "kernels").glob("*/bzImage"))
    assert f"bzImage: {bz}" in out
    assert cli.main(["kernel", "build", "--tree", str(fake), "-j", "1", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kernel 6.12.0-fake (cache hit)")
    assert '"cached": true' in out and '"kernel_release": "6.12.0-fake"' in out


def test_kernel_build_failure_is_125_with_compiler_error(
        fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_FAIL", "bzImage")
    assert cli.main(["kernel", "build", "--tree", str(fake), "-j", "1"]) == 125
    err = capsys.readouterr().err
    assert "thpvm: error: kernel build failed (log: " in err
    assert "mm/khugepaged.c:12:3: error: expected ';' before '}' token" in err


def test_dropped_option_is_2(fake: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_DROP", "CONFIG_USERFAULTFD")
    assert cli.main(["kernel", "build", "--tree", str(fake)]) == 2
    err = capsys.readouterr().err
    assert "did not survive olddefconfig" in err and "CONFIG_USERFAULTFD=y" in err


def test_tree_options_become_the_kernel_request(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    seen: list[kernel.KernelRequest] = []

    def fake_build(req: kernel.KernelRequest, progress: object = None) -> object:
        seen.append(req)
        raise BuildError("stop here")

    monkeypatch.setattr(kernel, "build_kernel", fake_build)
    code = cli.main(["kernel", "build", "--tree", "/t", "--rev", "v6.12", "--fragment", "a.config",
                     "--fragment", "b.config", "--config", "CONFIG_X=y", "--config", "Y=m",
                     "--patch", "p.patch", "-j", "3"])
    assert code == 125
    assert seen == [kernel.KernelRequest(Path("/t"), "v6.12", [Path("a.config"), Path("b.config")],
                                         ["CONFIG_X=y", "Y=m"], 3, [Path("p.patch")])]


# ---------------------------------------------------------------- exit-code mapping in main

def test_infra_error_is_125(monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    def boom(req: object, progress: object = None) -> None:
        raise BuildError("kernel build failed (log: /x/build.log)", "mm/a.c:1:1: error: x")

    monkeypatch.setattr(kernel, "build_kernel", boom)
    assert cli.main(["kernel", "build"]) == 125
    err = capsys.readouterr().err
    assert "thpvm: error: kernel build failed (log: /x/build.log)\nmm/a.c:1:1: error: x" in err


@pytest.mark.parametrize("exc, code", [
    (UserError("bad"), 2), (ConfigError("dropped"), 2), (InfraError("infra"), 125),
    (BootError("no boot"), 125), (GuestError("ssh lost"), 125), (ImageError("img"), 125),
    (ThpvmError("plain"), 128),
])
def test_thpvm_errors_map_through_main(exc: ThpvmError, code: int,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_kernel_build", handler)
    assert cli.main(["kernel", "build"]) == code
    assert f"thpvm: error: {exc.message}" in capsys.readouterr().err


def test_internal_error_is_128(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: object) -> int:
        raise RuntimeError("a thpvm bug")

    monkeypatch.setattr(cli, "cmd_kernel_build", handler)
    assert cli.main(["kernel", "build"]) == 128
    assert "thpvm: internal error: RuntimeError('a thpvm bug')" in capsys.readouterr().err


def test_keyboard_interrupt_is_130(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_kernel_build", handler)
    assert cli.main(["kernel", "build"]) == 130
    assert "thpvm: interrupted" in capsys.readouterr().err


def test_sigterm_unwinds_like_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    unwound: list[bool] = []

    def handler(args: object) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises in here
            return 0
        finally:
            unwound.append(True)

    monkeypatch.setattr(cli, "cmd_kernel_build", handler)
    assert cli.main(["kernel", "build"]) == 130
    assert unwound == [True]  # the `finally` ran: QEMU would have been killed


def test_handler_return_value_is_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "cmd_kernel_build", lambda args: 1)
    assert cli.main(["kernel", "build"]) == 1


# ---------------------------------------------------------------- errors.exit_code_for

def error_classes() -> list[type[ThpvmError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, ThpvmError) and c.__module__ == errors.__name__]


EXPECTED = {"ThpvmError": 128, "UserError": 2, "ConfigError": 2, "InfraError": 125,
            "BuildError": 125, "ImageError": 125, "BootError": 125, "GuestError": 125,
            "GuestTimeout": 125, "GuestLost": 125, "GuestOutputError": 125,
            "CounterFormatError": 125, "ResultSchemaError": 128}


def test_every_error_class_has_a_known_code() -> None:
    classes = error_classes()
    assert {c.__name__ for c in classes} == set(EXPECTED), \
        "a new error class needs its exit code pinned here"
    for cls in classes:
        detail = ["detail"] if cls is errors.ResultSchemaError else "detail"
        err = cls("message", detail)  # type: ignore[arg-type]
        assert exit_code_for(err) == EXPECTED[cls.__name__] == err.exit_code, cls
        assert err.message == "message" and err.detail == "detail" and str(err) == "message"


@pytest.mark.parametrize("exc, code", [
    (KeyboardInterrupt(), 130), (RuntimeError("x"), 128), (ValueError("x"), 128),
    (OSError("x"), 128), (SystemExit(3), 128),
])
def test_exit_code_for_other_exceptions(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_exit_codes_are_bisect_safe() -> None:
    """125 = skip, 1/2 = bad, 128/130 abort `git bisect run`; nothing maps to 255 or 127."""
    assert errors.EXIT_COULD_NOT_TEST == 125
    assert {errors.EXIT_OK, errors.EXIT_TEST_FAILED, errors.EXIT_USER_ERROR} == {0, 1, 2}
    assert errors.EXIT_ABORT == 128 and errors.EXIT_INTERRUPTED == 130
    assert all(c.exit_code not in (127, 255) for c in error_classes())
