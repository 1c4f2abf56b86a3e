"""guest.SshShell's command protocol without a guest: output is read to EOF (not to
the exit status), signals are named, a lost channel is an error, and every paramiko
wait ends at its deadline (a watchdog closes the connection)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orchestrator.errors import GuestError, GuestTimeout
from orchestrator.machine import guest


class FakeChannel:
    """Delivers `chunks` of stdout one poll at a time; the exit status arrives
    *before* the last output (as sshd may send it), EOF after it."""

    def __init__(self, chunks: list[bytes], status: int | None = 0, eof: bool = True) -> None:
        self.chunks, self.status, self.eof = list(chunks), status, eof
        self.polls = 0
        self.closed = False
        self.eof_received = False

    def recv_ready(self) -> bool:
        self.polls += 1
        return bool(self.chunks) and (self.closed or self.polls % 3 == 0)  # data trickles in

    def recv(self, n: int) -> bytes:
        return self.chunks.pop(0)

    def recv_stderr_ready(self) -> bool:
        if not self.chunks and self.eof:
            self.eof_received = True
        return False

    def recv_stderr(self, n: int) -> bytes:
        return b""

    def exit_status_ready(self) -> bool:
        return self.status is not None

    @property
    def exit_status(self) -> int:
        return -1 if self.status is None else self.status

    def close(self) -> None:
        self.closed = True


def test_output_is_read_to_eof_not_to_the_exit_status() -> None:
    chunks = [bytes([65 + i]) * 4096 for i in range(5)]
    res = guest._collect(FakeChannel(chunks, status=0), "cat big", timeout=10)  # type: ignore[arg-type]
    assert res.ok and res.stdout == b"".join(chunks).decode()


def test_exit_status_128_plus_n_names_the_signal() -> None:
    res = guest._collect(FakeChannel([b"partial"], status=139), "./crash", timeout=10)  # type: ignore[arg-type]
    assert (res.exit_code, res.signal) == (139, "SIGSEGV")
    assert res.describe() == "killed by SIGSEGV (exit status 139)"
    assert guest.CommandResult(137, "", "").signal == "SIGKILL"  # the OOM killer
    assert guest.CommandResult(1, "", "").signal is None
    assert guest.CommandResult(4, "", "").describe() == "exit status 4"


def test_channel_closed_without_exit_status_is_a_lost_guest() -> None:
    chan = FakeChannel([b"half"], status=None)
    chan.closed = True
    with pytest.raises(GuestError, match="connection lost") as info:
        guest._collect(chan, "x", timeout=10)  # type: ignore[arg-type]
    assert info.value.detail == "half"


def test_command_deadline() -> None:
    with pytest.raises(GuestTimeout, match="timed out after 0 s"):
        guest._collect(FakeChannel([], status=None, eof=False), "sleep", timeout=0.2)  # type: ignore[arg-type]


def test_framing_keeps_the_session_shell_alive() -> None:
    assert guest.framed("kill -SEGV $$") == "sh -c 'kill -SEGV $$'; exit $?"


class BlockingClient:
    """A paramiko client whose every call blocks until it is closed (a frozen peer)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def open_sftp(self) -> BlockingClient:
        self.closed.wait()
        raise EOFError("closed")

    def close(self) -> None:
        self.closed.set()


def test_watchdog_ends_a_blocked_transfer(tmp_path: Path) -> None:
    shell = guest.SshShell("127.0.0.1", 1, tmp_path / "k", tmp_path / "k.pub")
    client = BlockingClient()
    shell.client = client  # type: ignore[assignment]
    with pytest.raises(GuestTimeout, match="no answer from the guest within 0 s"):
        shell.put(tmp_path / "f", "/root/f", timeout=0.2)
    assert client.closed.is_set() and shell.client is None
    with pytest.raises(GuestError, match="not connected"):
        shell.run("true")


def test_watchdog_stops_waiting_once_liveness_fails(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped() -> None:
        raise GuestError("guest lost: QEMU was stopped on the host")

    monkeypatch.setattr(guest, "LIVENESS_EVERY", 0.05)
    shell = guest.SshShell("127.0.0.1", 1, tmp_path / "k", tmp_path / "k.pub", liveness=stopped)
    client = BlockingClient()
    shell.client = client  # type: ignore[assignment]
    with pytest.raises(GuestError, match="stopped on the host") as info:
        shell.get("/root/trace", tmp_path / "trace", timeout=3600)
    assert not isinstance(info.value, GuestTimeout)
    assert client.closed.is_set() and shell.client is None
