"""One guest-shell interface: `run`, `put`, `get` with deadlines.

`GuestShell` is what every stage that talks to the guest depends on; the SSH
implementation (paramiko) and the serial-console fallback both provide it.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from orchestrator.errors import GuestError, GuestTimeout

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


class SshShell:
    """`GuestShell` over SSH (paramiko): key auth, pinned host key, keepalive."""

    def __init__(self, host: str, port: int, key_path: Path, host_key_pub: Path) -> None:
        self.host, self.port = host, port
        self.key_path, self.host_key_pub = key_path, host_key_pub
        self.client: paramiko.SSHClient | None = None

    def connect(self, timeout: float = 30.0) -> float:
        """Connect, retrying while sshd comes up; return the seconds it took."""
        start = time.monotonic()
        last: Exception | None = None
        while time.monotonic() - start < timeout:
            try:
                self.client = self._connect_once()
                return time.monotonic() - start
            except (OSError, paramiko.SSHException, EOFError) as e:
                if isinstance(e, paramiko.BadHostKeyException):
                    raise GuestError(f"guest host key does not match the pinned key "
                                     f"{self.host_key_pub}") from e
                last = e
                time.sleep(0.1)
        raise GuestError(f"could not reach the guest over SSH at {self.host}:{self.port} "
                         f"within {timeout:.0f} s: {last}")

    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        kind, blob = self.host_key_pub.read_text().split()[:2]
        key = paramiko.Ed25519Key(data=base64.b64decode(blob))
        client.get_host_keys().add(f"[{self.host}]:{self.port}", kind, key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(self.host, port=self.port, username="root",
                       key_filename=str(self.key_path), timeout=5, banner_timeout=10,
                       auth_timeout=10, look_for_keys=False, allow_agent=False)
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(5)
        return client

    def _require(self) -> paramiko.SSHClient:
        if self.client is None:
            raise GuestError("SSH session is not connected")
        return self.client

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        """Run `cmd` with sh in the guest; GuestError on timeout or lost connection."""
        try:
            chan = self._require().get_transport().open_session()  # type: ignore[union-attr]
            chan.exec_command(cmd)
            return _collect(chan, cmd, timeout)
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise GuestError(f"SSH connection lost while running {cmd[:80]!r}: {e}") from e

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        """Copy a host file to the guest over SFTP."""
        try:
            with self._require().open_sftp() as sftp:
                sftp.put(str(local), remote)
                sftp.chmod(remote, mode)
        except (OSError, paramiko.SSHException) as e:
            raise GuestError(f"copying {local} to guest:{remote} failed: {e}") from e

    def get(self, remote: str, local: Path) -> None:
        """Copy a guest file to the host over SFTP."""
        try:
            with self._require().open_sftp() as sftp:
                sftp.get(remote, str(local))
        except (OSError, paramiko.SSHException) as e:
            raise GuestError(f"copying guest:{remote} to {local} failed: {e}") from e

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _collect(chan: paramiko.Channel, cmd: str, timeout: float) -> CommandResult:
    out: list[bytes] = []
    err: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        busy = False
        while chan.recv_ready():
            out.append(chan.recv(65536))
            busy = True
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(65536))
            busy = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        if time.monotonic() > deadline:
            chan.close()
            raise GuestTimeout(f"guest command timed out after {timeout:.0f} s: {cmd[:120]!r}",
                             b"".join(out)[-2000:].decode(errors="replace"))
        if not busy:
            time.sleep(0.005)
    code = chan.recv_exit_status()
    chan.close()
    if code == -1:  # the channel closed without an exit status: the guest went away
        raise GuestError(f"guest connection lost while running {cmd[:120]!r}",
                         b"".join(out)[-2000:].decode(errors="replace"))
    return CommandResult(code, b"".join(out).decode(errors="replace"),
                         b"".join(err).decode(errors="replace"))
