"""The guest shell over a real paramiko transport (an in-process SSH server on a
socket pair): an exit status passes through other requests, a channel closed
without one is a lost guest, and a session sshd refuses (MaxSessions) is retried."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import paramiko
import pytest
from paramiko.common import cMSG_CHANNEL_REQUEST

from orchestrator.errors import GuestError
from orchestrator.machine import guest


class Server(paramiko.ServerInterface):
    def __init__(self) -> None:
        self.command = b""
        self.exec_seen = threading.Event()
        self.refuse = 0  # session opens to refuse first, as sshd past MaxSessions

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if self.refuse:
            self.refuse -= 1
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        return paramiko.OPEN_SUCCEEDED

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.command = command
        self.exec_seen.set()
        return True


def send_request(chan: paramiko.Channel, name: str, *fields: str | bool | int) -> None:
    m = paramiko.Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string(name)
    m.add_boolean(False)
    for f in fields:
        if isinstance(f, bool):
            m.add_boolean(f)
        elif isinstance(f, int):
            m.add_int(f)
        else:
            m.add_string(f)
    chan.transport._send_user_message(m)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def host_key() -> paramiko.RSAKey:
    return paramiko.RSAKey.generate(1024)


@pytest.fixture
def pair(host_key: paramiko.RSAKey) -> Iterator[tuple[paramiko.Transport, paramiko.Transport,
                                                       Server]]:
    a, b = socket.socketpair()
    server_t, client_t = paramiko.Transport(a), paramiko.Transport(b)
    server_t.add_server_key(host_key)
    srv = Server()
    started = threading.Event()
    server_t.start_server(event=started, server=srv)  # negotiates in its own thread
    client_t.start_client(timeout=10)
    assert started.wait(10)
    client_t.auth_none("root")
    try:
        yield client_t, server_t, srv
    finally:
        client_t.close()
        server_t.close()


def run(pair: tuple[paramiko.Transport, paramiko.Transport, Server],
        serve: Callable[[paramiko.Channel], None]) -> guest.CommandResult:
    client_t, server_t, srv = pair
    chan = client_t.open_session(timeout=10)
    chan.exec_command(guest.framed("x"))
    schan = server_t.accept(10)
    assert schan is not None and srv.exec_seen.wait(10)
    serve(schan)
    return guest._collect(chan, "x", timeout=10)


def test_exit_status_and_other_requests_pass_through(pair) -> None:  # type: ignore[no-untyped-def]
    def serve(ch: paramiko.Channel) -> None:
        send_request(ch, "keepalive@openssh.com")
        ch.sendall(b"out")
        ch.send_exit_status(3)
        ch.shutdown_write()
        ch.close()

    res = run(pair, serve)
    assert (res.exit_code, res.signal, res.stdout) == (3, None, "out")


def test_closed_without_status_or_signal_is_a_lost_guest(pair) -> None:  # type: ignore[no-untyped-def]
    def serve(ch: paramiko.Channel) -> None:
        ch.sendall(b"half")
        ch.close()

    with pytest.raises(GuestError, match="connection lost") as info:
        run(pair, serve)
    assert info.value.detail == "half"


def test_a_refused_session_is_retried_on_a_live_connection(pair) -> None:  # type: ignore[no-untyped-def]
    client_t, server_t, srv = pair
    srv.refuse = 3
    chan = guest._open_session(client_t, 10, "running 'x'")
    assert srv.refuse == 0 and not chan.closed
    srv.refuse = 1000
    with pytest.raises(GuestError, match=r"sshd refused a session channel for 1 s before "
                                         r"running 'x': Connect failed \(code 2\)"):
        guest._open_session(client_t, 1, "running 'x'")
