"""One guest-shell interface: `run`, `put`, `get` with deadlines.

`GuestShell` is what every stage that talks to the guest depends on; the SSH
implementation (paramiko) and the serial-console fallback both provide it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass
class CommandResult:
    """Outcome of one guest command."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class GuestShell(Protocol):
    """A shell on the guest. Implementations raise `GuestError` on a lost
    connection or timeout, never return a fake result."""

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        """Run a shell command line in the guest (as root)."""
        ...

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        """Copy a host file into the guest."""
        ...

    def get(self, remote: str, local: Path) -> None:
        """Copy a guest file to the host."""
        ...
