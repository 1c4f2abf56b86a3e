"""One guest-shell interface: `run`, `put`, `get`, each with a deadline.

`GuestShell` is what every stage that talks to the guest depends on; `SshShell`
(paramiko) provides it. Every operation ends within its deadline: paramiko's own
waits (channel open, exec request, SFTP replies) have none that hold against a
frozen peer, so a watchdog closes the whole connection when an operation
overruns, and the operation raises `GuestTimeout`. A command is read to EOF on
stdout and stderr (not only to its exit status: sshd may send the status before
the last output), and it runs in a child shell, so a command killed by a signal
still ends with an exit status (128+N, as the shell reports it) and is named
(`CommandResult.signal`). No exit status at all means the channel was lost.

When the guest stops answering, `machine/health.py` (the one crash authority)
decides whether the kernel died or the connection did; the serial console's
root shell is its second channel into the guest.
"""

from __future__ import annotations

import base64
import logging
import shlex
import signal as signals
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from orchestrator.errors import GuestError, GuestTimeout

log = logging.getLogger(__name__)

TRANSFER_TIMEOUT = 120.0  # one SFTP put/get (the largest is the ~1 MB selftest binary)
LIVENESS_EVERY = 2.0  # seconds between host-side liveness checks while a command runs
DETAIL_CHARS = 2000


@dataclass
class CommandResult:
    """Outcome of one guest command. `signal` names the signal that killed it
    (e.g. "SIGSEGV"), from the shell's 128+N exit status."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def signal(self) -> str | None:
        return signal_name(self.exit_code)

    def describe(self) -> str:
        """'exit status 3' or 'killed by SIGSEGV (exit status 139)'."""
        sig = self.signal
        return f"killed by {sig} (exit status {self.exit_code})" if sig \
            else f"exit status {self.exit_code}"


def signal_name(exit_code: int | None) -> str | None:
    """The signal a shell exit status 128+N stands for, or None."""
    if exit_code is None or not 128 < exit_code < 128 + 65:
        return None
    try:
        return signals.Signals(exit_code - 128).name
    except ValueError:
        return f"signal {exit_code - 128}"


class GuestShell(Protocol):
    """A shell on the guest. Implementations raise `GuestError` on a lost
    connection and `GuestTimeout` past a deadline, never return a fake result."""

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        """Run a shell command line in the guest (as root)."""
        ...

    def put(self, local: Path, remote: str, mode: int = 0o755,
            timeout: float = TRANSFER_TIMEOUT) -> None:
        """Copy a host file into the guest."""
        ...

    def get(self, remote: str, local: Path, timeout: float = TRANSFER_TIMEOUT) -> None:
        """Copy a guest file to the host."""
        ...


def framed(cmd: str) -> str:
    """The command line sent to sshd: `cmd` in a child sh, the session shell exiting
    with its status. The session shell itself is never the one a signal kills, so an
    exit status always arrives (128+N for a signal), even for `kill -SEGV $$`."""
    return f"sh -c {shlex.quote(cmd)}; exit $?"


def quiet_paramiko() -> None:
    """paramiko logs a traceback per failed packet when a guest goes away; thpvm
    reports each such event once itself, so paramiko speaks only with --verbose."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class SshShell:
    """`GuestShell` over SSH (paramiko): key auth, pinned host key, deadlines.
    `liveness`, if set, is called every few seconds while a command runs and raises
    `GuestError` when the guest cannot answer any more (QEMU exited or stopped);
    the watchdog of every operation calls it every LIVENESS_EVERY s."""

    def __init__(self, host: str, port: int, key_path: Path, host_key_pub: Path,
                 liveness: Callable[[], None] | None = None) -> None:
        self.host, self.port = host, port
        self.key_path, self.host_key_pub = key_path, host_key_pub
        self.client: paramiko.SSHClient | None = None
        self.liveness = liveness
        quiet_paramiko()

    def connect(self, timeout: float = 30.0) -> float:
        """Connect, retrying while sshd comes up; return the seconds it took."""
        start = time.monotonic()
        last: Exception | None = None
        while time.monotonic() - start < timeout:
            try:
                self.client = self._connect_once(max(1.0, timeout - (time.monotonic() - start)))
                return time.monotonic() - start
            except (OSError, paramiko.SSHException, EOFError) as e:
                if isinstance(e, paramiko.BadHostKeyException):
                    raise GuestError(f"guest host key does not match the pinned key "
                                     f"{self.host_key_pub}") from e
                last = e
                time.sleep(0.1)
        raise GuestError(f"could not reach the guest over SSH at {self.host}:{self.port} "
                         f"within {timeout:.0f} s: {last}")

    def _connect_once(self, left: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        kind, blob = self.host_key_pub.read_text().split()[:2]
        key = paramiko.Ed25519Key(data=base64.b64decode(blob))
        client.get_host_keys().add(f"[{self.host}]:{self.port}", kind, key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, port=self.port, username="root",
                           key_filename=str(self.key_path), timeout=min(5.0, left),
                           banner_timeout=min(10.0, left), auth_timeout=min(10.0, left),
                           channel_timeout=min(10.0, left),
                           look_for_keys=False, allow_agent=False)
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(5)
        return client

    def _require(self) -> paramiko.SSHClient:
        if self.client is None:
            raise GuestError("SSH session is not connected (closed after an earlier failure)")
        return self.client

    @contextmanager
    def _deadline(self, timeout: float, what: str) -> Iterator[None]:
        """Run the block within `timeout` s. A watchdog thread closes the connection
        (which unblocks every paramiko wait) past the deadline (GuestTimeout) or as
        soon as `liveness` says the guest cannot answer (GuestError)."""
        client = self._require()
        done = threading.Event()
        fired: list[GuestError] = []

        def watch() -> None:
            end = time.monotonic() + timeout
            while not done.wait(min(LIVENESS_EVERY, max(0.0, end - time.monotonic()))):
                if time.monotonic() >= end:
                    fired.append(GuestTimeout(f"no answer from the guest within "
                                              f"{timeout:.0f} s while {what}"))
                    break
                try:
                    if self.liveness is not None:
                        self.liveness()
                except GuestError as e:
                    fired.append(GuestError(f"{e.message} (while {what})"))
                    break
            else:
                return
            client.close()

        threading.Thread(target=watch, name="ssh-watchdog", daemon=True).start()
        try:
            yield
        except (OSError, paramiko.SSHException, EOFError, GuestError) as e:
            done.set()
            if fired:
                self.client = None
                raise fired[0] from e
            if isinstance(e, GuestError):
                raise
            raise GuestError(f"SSH connection lost while {what}: {e}") from e
        finally:
            done.set()
        if fired:
            self.client = None
            raise fired[0]

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        """Run `cmd` with sh in the guest, output read to EOF. GuestTimeout past
        `timeout` (the guest may be fine), GuestError if the connection is lost."""
        what = f"running {cmd[:80]!r}"
        with self._deadline(timeout + 15, what):  # the command's own deadline is below
            transport = self._require().get_transport()
            if transport is None or not transport.is_active():
                raise GuestError(f"SSH connection lost before {what}")
            chan = _open_session(transport, min(timeout, 15.0), what)
            chan.exec_command(framed(cmd))
            return _collect(chan, cmd, timeout)
        raise AssertionError("unreachable")  # pragma: no cover  (for mypy)

    def put(self, local: Path, remote: str, mode: int = 0o755,
            timeout: float = TRANSFER_TIMEOUT) -> None:
        """Copy a host file to the guest over SFTP."""
        with self._deadline(timeout, f"copying {local.name} to guest:{remote}"):
            with self._require().open_sftp() as sftp:
                sftp.put(str(local), remote)
                sftp.chmod(remote, mode)

    def get(self, remote: str, local: Path, timeout: float = TRANSFER_TIMEOUT) -> None:
        """Copy a guest file to the host over SFTP."""
        with self._deadline(timeout, f"copying guest:{remote} to {local}"):
            with self._require().open_sftp() as sftp:
                sftp.get(remote, str(local))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _open_session(transport: paramiko.Transport, timeout: float, what: str) -> paramiko.Channel:
    """A session channel. sshd refuses one while MaxSessions (10) of this connection's
    sessions are open on its side, which, with parallel commands, includes ones whose
    close it has not processed yet: a refusal on a live connection is retried until
    `timeout` (the command was not started); a connection lost is not."""
    end = time.monotonic() + timeout
    pause = 0.02
    while True:
        try:
            return transport.open_session(timeout=max(0.1, end - time.monotonic()))
        except paramiko.ChannelException as e:
            if not transport.is_active() or time.monotonic() + pause > end:
                raise GuestError(f"sshd refused a session channel for {timeout:.0f} s "
                                 f"before {what}: {e.text} (code {e.code})") from e
            log.debug("sshd refused a session channel (%s); retrying", e.text)
            time.sleep(pause)
            pause = min(0.5, pause * 2)


def _collect(chan: paramiko.Channel, cmd: str, timeout: float) -> CommandResult:
    """Read stdout and stderr to EOF, then the exit status."""
    out: list[bytes] = []
    err: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while not _drained(chan, out, err):
            if time.monotonic() > deadline:
                raise GuestTimeout(f"guest command timed out after {timeout:.0f} s: "
                                   f"{cmd[:120]!r}", _tail(out))
        _await_status(chan, min(time.monotonic() + 5.0, deadline), cmd)
    except GuestError as e:
        e.detail = e.detail or _tail(out)
        raise
    finally:
        chan.close()
    code = chan.exit_status
    if code == -1:  # the channel closed without an exit status: the guest went away
        raise GuestError(f"guest connection lost while running {cmd[:120]!r}", _tail(out))
    return CommandResult(code, b"".join(out).decode(errors="replace"),
                         b"".join(err).decode(errors="replace"))


def _await_status(chan: paramiko.Channel, until: float, cmd: str) -> None:
    """Wait for the exit status (or the channel's close) that follows EOF."""
    while not chan.exit_status_ready() and not chan.closed:
        if time.monotonic() > until:
            raise GuestError(f"guest command ended without an exit status: {cmd[:120]!r}")
        time.sleep(0.005)


def _drained(chan: paramiko.Channel, out: list[bytes], err: list[bytes]) -> bool:
    """Move what arrived into `out`/`err`; True once both streams are at EOF
    (or the channel closed) and nothing is left to read."""
    busy = False
    while chan.recv_ready():
        out.append(chan.recv(65536))
        busy = True
    while chan.recv_stderr_ready():
        err.append(chan.recv_stderr(65536))
        busy = True
    if (chan.eof_received or chan.closed) and not chan.recv_ready() \
            and not chan.recv_stderr_ready():
        return True
    if not busy:
        time.sleep(0.005)
    return False


def _tail(out: list[bytes]) -> str:
    return b"".join(out)[-DETAIL_CHARS:].decode(errors="replace")
