"""The one error hierarchy of thpvm, and its mapping to exit codes.

Exit codes are what `git bisect run` sees, so they are fixed here and nowhere else:

====  =====================================================================
0     every test passed and every workload matched the model
1     a test failed, a workload mismatched, or the kernel crashed in a test
2     bad input (a missing file, an unknown option value, a bad fragment)
125   could not test: build, image, QEMU, boot or SSH infrastructure failed
====  =====================================================================

A real abort, a thpvm bug (any unexpected exception) or the user's Ctrl-C, is
128 or 130: `git bisect run` stops on those instead of judging the commit.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_TEST_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_COULD_NOT_TEST = 125
EXIT_ABORT = 128
EXIT_INTERRUPTED = 130


class ThpvmError(Exception):
    """Base of every error thpvm raises on purpose.

    `detail` carries the output that explains the error (compiler lines,
    console excerpt, ...), shown below the one-line message.
    """

    exit_code = EXIT_ABORT

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UserError(ThpvmError):
    """Bad input: a file, option or value the user gave is wrong. Exit 2."""

    exit_code = EXIT_USER_ERROR


class InfraError(ThpvmError):
    """The infrastructure failed, so the kernel could not be tested. Exit 125."""

    exit_code = EXIT_COULD_NOT_TEST


class BuildError(InfraError):
    """The kernel, selftest or workload driver did not build."""


class ConfigError(UserError):
    """Requested kconfig options did not survive olddefconfig, or fragments conflict."""


class ImageError(InfraError):
    """The guest image could not be built."""


class BootError(InfraError):
    """QEMU failed or the guest did not become ready (panic at boot, hang, no SSH)."""


class GuestError(InfraError):
    """The guest connection was lost or a guest command timed out."""


class GuestLost(GuestError):
    """The guest stopped answering and the crash authority (machine/health.py) found
    no kernel failure: QEMU exited or was stopped on the host, or SSH was lost."""


class GuestOutputError(InfraError):
    """The guest's output could not be used: malformed, or numbers beyond sane bounds."""


class GuestTimeout(GuestError):
    """A guest command did not finish within its deadline (the guest may still be fine)."""


class CounterFormatError(GuestOutputError):
    """The guest's counter output could not be read (a malformed or missing record)."""


class ResultSchemaError(ThpvmError):
    """A result dict does not follow result.schema.json.

    Produced by thpvm's own pipeline this is a thpvm bug (exit 128, like any
    abort); `load_result` turns it into a `UserError` for a file the user gave.
    `problems` lists each violation as 'path: message'.
    """

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message, "\n".join(problems))
        self.problems = problems


# A test that ran and failed is not an exception: jobs return a verdict, and these
# tables turn verdicts into exit codes.
EXIT_FOR_STEP = {"good": EXIT_OK, "bad": EXIT_TEST_FAILED, "skip": EXIT_COULD_NOT_TEST}
EXIT_FOR_VALIDATE = {"no-change": EXIT_OK, "improvement": EXIT_OK,
                     "regression": EXIT_TEST_FAILED, "could-not-test": EXIT_COULD_NOT_TEST}
EXIT_FOR_WORKLOAD = {"match": EXIT_OK, "mismatch": EXIT_TEST_FAILED}


def exit_code_for(exc: BaseException) -> int:
    """Map any exception to the exit code thpvm reports for it (the one mapping)."""
    if isinstance(exc, ThpvmError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ABORT
