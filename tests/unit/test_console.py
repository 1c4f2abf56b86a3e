"""console.py: classification of recorded and synthetic serial logs, the line
buffer of ConsoleMonitor, and ConsoleMonitor against a real unix socket server.

Recorded logs (tests/data/serial/, real TCG boots of the Debian 6.12.117 kernel at
loglevel=5): a clean boot, a panic for init=/nonexistent, and a sysrq crash after
readiness. Note how the console really looks after boot: the init shell's prompt
"# " has no newline, so the next kernel line is glued to it.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.machine import console
from orchestrator.machine.console import ConsoleMonitor, classify_line, classify_log, clean_line

SERIAL = Path(__file__).resolve().parent.parent / "data" / "serial"
CLEAN_BOOT = SERIAL / "clean-boot-6.12.117-tcg.log"
PANIC_INIT = SERIAL / "panic-init-nonexistent-6.12.117-tcg.log"
SYSRQ = SERIAL / "sysrq-crash-6.12.117-tcg.log"
MARKER_RE = re.compile(r"^THPVM-READY-[0-9a-f]{12}$", re.M)


def read(path: Path) -> str:
    """A recorded log as the monitor sees it (no newline translation: CRs kept)."""
    return path.read_bytes().decode("utf-8", errors="replace")


def marker_of(text: str) -> str:
    m = MARKER_RE.search(text.replace("\r", ""))
    assert m, "no readiness marker in the log"
    return m.group(0)


# A 6.12 page-fault oops in khugepaged that ends in a panic (panic_on_oops), as printed
# on the serial console (CRLF line ends, printk timestamps).
OOPS_LOG = "\r\n".join([
    "[   12.345678] BUG: unable to handle page fault for address: ffffc90000a1b000",
    "[   12.345900] #PF: supervisor read access in kernel mode",
    "[   12.346000] #PF: error_code(0x0000) - not-present page",
    "[   12.346100] PGD 100000067 P4D 100000067 PUD 1001b0067 PMD 0",
    "[   12.346200] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI",
    "[   12.346300] CPU: 1 UID: 0 PID: 42 Comm: khugepaged Not tainted 6.12.57 #1",
    "[   12.346400] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 0.0.0 02/06/2015",
    "[   12.346500] RIP: 0010:hpage_collapse_scan_pmd+0x1a2/0x5c0",
    "[   12.346600] Call Trace:",
    "[   12.346700]  <TASK>",
    "[   12.346800]  ? __die+0x23/0x70",
    "[   12.346900]  khugepaged+0x2f1/0x600",
    "[   12.347000]  kthread+0xd2/0x100",
    "[   12.347100]  </TASK>",
    "[   12.347200] ---[ end trace 0000000000000000 ]---",
    "[   12.347300] Kernel panic - not syncing: Fatal exception",
    "[   12.347400] Kernel Offset: disabled",
]) + "\r\n"

WARN_LOG = "\r\n".join([
    "[    5.100000] ------------[ cut here ]------------",
    "[    5.100001] WARNING: CPU: 1 PID: 42 at mm/khugepaged.c:123 foo+0x1/0x2",
    "[    5.100002] Modules linked in:",
    "[    5.100003] CPU: 1 UID: 0 PID: 42 Comm: khugepaged Not tainted 6.12.57 #1",
    "[    5.100004] RIP: 0010:foo+0x1/0x2",
    "[    5.100005] Call Trace:",
    "[    5.100006]  <TASK>",
    "[    5.100007]  khugepaged+0x2f1/0x600",
    "[    5.100008]  </TASK>",
    "[    5.100009] ---[ end trace 0000000000000000 ]---",
]) + "\r\n"


def kinds(events: list[console.ConsoleEvent]) -> list[str]:
    return [e.kind for e in events]


# ---------------------------------------------------------------- recorded logs

def test_recorded_clean_boot_is_ready_and_clean() -> None:
    text = read(CLEAN_BOOT)
    assert "\r\n" in text  # really recorded: the serial console sends CRLF
    marker = marker_of(text)
    events = classify_log(text, marker)
    assert kinds(events) == ["ready"]
    assert events[0].lines == [marker]
    # another boot's marker is not readiness
    assert classify_log(text, "THPVM-READY-000000000000") == []
    # 'probably buggy MP table', the clocksource watchdog and 'TSC found unstable' are
    # not problems
    assert classify_log(text) == []


def test_recorded_panic_init_nonexistent() -> None:
    text = read(PANIC_INIT)
    assert MARKER_RE.search(text.replace("\r", "")) is None
    events = classify_log(text, "THPVM-READY-0123456789ab")
    assert kinds(events) == ["panic"]
    (panic,) = events
    assert panic.lines[0] == \
        "Kernel panic - not syncing: Requested init /nonexistent failed (error -2)."
    assert panic.lines[1] == "CPU: 1 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.117 #1"
    assert panic.lines[-1] == "Kernel Offset: disabled"
    assert len(panic.lines) == 12  # the whole report, cleaned


def test_recorded_sysrq_crash_after_ready() -> None:
    text = read(SYSRQ)
    marker = marker_of(text)
    events = classify_log(text, marker)
    assert kinds(events) == ["ready", "panic"]
    panic = events[1]
    assert panic.lines[0] == "Kernel panic - not syncing: sysrq triggered crash"
    assert "CPU: 0 UID: 0 PID: 48 Comm: bash Not tainted 6.12.117 #1" in panic.lines
    assert " ? sysrq_handle_crash+0xc/0xc" in panic.lines
    # the first kernel line after the prompt really arrives glued to it
    assert "\r\n# [    3.636189] sysrq: Trigger a crash\r\n" in text


@pytest.mark.parametrize("path", sorted(SERIAL.glob("*.log")), ids=lambda p: p.name)
def test_every_recorded_log_classifies_cleanly(path: Path) -> None:
    text = read(path)
    for ev in classify_log(text, marker_of(text) if MARKER_RE.search(text.replace("\r", ""))
                           else None):
        assert ev.lines and all("\r" not in line and "\x1b" not in line for line in ev.lines)


# ---------------------------------------------------------------- cleaning

@pytest.mark.parametrize("raw, clean", [
    ("[    1.234567] foo bar\r", "foo bar"),
    ("[12345.000001] x", "x"),
    ("\x1b[0;32mOK\x1b[0m done\r\r", "OK done"),
    ("\x1b[?25l\x1b[2Khello", "hello"),
    ("\x1b(Bplain", "plain"),
    ("no timestamp  ", "no timestamp"),
    # a kernel line glued to a partial console line (the init shell's prompt)
    ("# [    3.636189] sysrq: Trigger a crash\r", "sysrq: Trigger a crash"),
    ("\x1b[1m[    3.000000] Kernel panic - not syncing: x\x1b[0m\r",
     "Kernel panic - not syncing: x"),
])
def test_clean_line(raw: str, clean: str) -> None:
    assert clean_line(raw) == clean


@pytest.mark.parametrize("line, kind", [
    ("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", "panic"),
    ("Kernel panic - not syncing: Requested init /nonexistent failed (error -2).", "panic"),
    ("Kernel panic - not syncing: sysrq triggered crash", "panic"),
    ("BUG: unable to handle page fault for address: ffffc90000a1b000", "oops"),
    ("BUG: kernel NULL pointer dereference, address: 0000000000000008", "oops"),
    ("Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1]",
     "oops"),
    ("kernel BUG at mm/khugepaged.c:1234!", "oops"),
    ("BUG: Bad page state in process khugepaged  pfn:1a2b3", "oops"),
    ("Bad page map in process a.out  pte:8000000102b8e225 pmd:10a4c3067", "oops"),
    ("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [khugepaged:42]", "lockup"),
    ("Watchdog detected hard LOCKUP on cpu 1", "lockup"),
    ("rcu: INFO: rcu_preempt self-detected stall on CPU", "lockup"),
    ("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "lockup"),
    ("INFO: task khugepaged:42 blocked for more than 122 seconds.", "lockup"),
    ("WARNING: CPU: 1 PID: 42 at mm/khugepaged.c:123 foo+0x1/0x2", "warning"),
    ("------------[ cut here ]------------", "warning"),
    ("virtio-pci 0000:00:01.0: can't find IRQ for PCI INT A; probably buggy MP table", None),
    ("THPVM-READY-f332133e906a", None),  # readiness is the Classifier's job, not a rule
    ("sh: 0: can't access tty; job control turned off", None),
    ("Run /sbin/thpvm-init as init process", None),
    ("  with arguments: WARNING: CPU: 1 PID: 2 at", None),  # WARNING only at line start
    ("echo BUG: nothing", None),
])
def test_classify_line(line: str, kind: str | None) -> None:
    assert classify_line(line) == kind


# ---------------------------------------------------------------- synthetic logs

def test_oops_then_panic_with_context() -> None:
    events = classify_log(OOPS_LOG)
    assert kinds(events) == ["oops", "panic"]
    oops, panic = events
    assert oops.lines[0] == "BUG: unable to handle page fault for address: ffffc90000a1b000"
    # the "Oops:" line is part of the open oops, not a second event; context is kept
    assert "Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI" in oops.lines
    assert "RIP: 0010:hpage_collapse_scan_pmd+0x1a2/0x5c0" in oops.lines
    assert all("\r" not in line and not line.startswith("[") for line in oops.lines)
    assert panic.lines[0] == "Kernel panic - not syncing: Fatal exception"
    assert panic.lines[1] == "Kernel Offset: disabled"


def test_context_is_bounded() -> None:
    text = "BUG: kernel NULL pointer dereference\n" + "".join(f"line {i}\n" for i in range(100))
    (ev,) = classify_log(text)
    assert len(ev.lines) == 1 + console.CONTEXT_LINES
    assert ev.lines[-1] == f"line {console.CONTEXT_LINES - 1}"


def test_warning_block_starts_at_the_warning_line() -> None:
    events = classify_log(WARN_LOG)
    assert kinds(events) == ["warning"]
    (warn,) = events
    assert warn.lines[0] == "WARNING: CPU: 1 PID: 42 at mm/khugepaged.c:123 foo+0x1/0x2"
    assert warn.lines[-1] == "---[ end trace 0000000000000000 ]---"
    assert len(warn.lines) == 9


def test_warning_is_not_severe_but_a_lockup_is() -> None:
    c = console.Classifier("M")
    for line in WARN_LOG.splitlines():
        c.feed(line)
    assert [e.kind for e in c.events if e.kind in console.SEVERE] == []
    ev = c.feed("[   30.0] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [a.out:99]\r")
    assert ev is not None and ev.kind == "lockup" and ev.kind in console.SEVERE
    assert ev.lines == ["watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [a.out:99]"]


def test_rcu_stall_is_a_lockup_with_context() -> None:
    text = ("[ 60.1] rcu: INFO: rcu_preempt self-detected stall on CPU\r\n"
            "[ 60.2] rcu: \t1-....: (21002 ticks this GP) idle=9a4c/1/0x4000000000000000\r\n"
            "[ 60.3] rcu: \t(t=21003 jiffies g=2617 q=310 ncpus=2)\r\n")
    (ev,) = classify_log(text)
    assert ev.kind == "lockup"
    assert ev.lines == ["rcu: INFO: rcu_preempt self-detected stall on CPU",
                        "rcu: \t1-....: (21002 ticks this GP) idle=9a4c/1/0x4000000000000000",
                        "rcu: \t(t=21003 jiffies g=2617 q=310 ncpus=2)"]


def test_separate_lockups_are_separate_events() -> None:
    text = ("rcu: INFO: rcu_preempt self-detected stall on CPU\n" + "filler\n" * 30 +
            "watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [khugepaged:42]\n")
    assert kinds(classify_log(text)) == ["lockup", "lockup"]


# the hung task report of 6.12 (kernel/hung_task.c check_hung_task)
HUNG_TASK = "\r\n".join([
    "[  245.760130] INFO: task khugepaged:42 blocked for more than 122 seconds.",
    "[  245.760771]       Not tainted 6.12.57 #1",
    '[  245.761020] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
    "[  245.761530] task:khugepaged      state:D stack:0     pid:42    tgid:42    ppid:2",
    "[  245.762100] Call Trace:",
]) + "\r\n"


def test_hung_task_report_is_one_lockup_event() -> None:
    events = classify_log(HUNG_TASK)
    assert kinds(events) == ["lockup"]
    assert events[0].lines[0] == "INFO: task khugepaged:42 blocked for more than 122 seconds."


def test_warning_inside_an_oops_is_part_of_it() -> None:
    text = "BUG: Bad page state in process x\nWARNING: CPU: 0 PID: 1 at mm/a.c:1 f+0x0/0x1\n"
    assert kinds(classify_log(text)) == ["oops"]


def test_ready_marker_in_dirty_line_and_in_event_context() -> None:
    c = console.Classifier("THPVM-READY-abc")
    assert c.feed("\x1b[0m[    1.0] noise\r") is None
    ev = c.feed("\x1b[0mTHPVM-READY-abc\r", at=1.5)
    assert ev is not None and ev.kind == "ready" and ev.at == 1.5
    assert ev.lines == ["THPVM-READY-abc"]
    assert ev.to_json() == {"kind": "ready", "at": 1.5, "lines": ["THPVM-READY-abc"]}


def test_marker_echoed_in_kernel_command_line_is_not_readiness() -> None:
    marker = "THPVM-READY-0123456789ab"
    text = (f"[    0.000000] Command line: console=ttyS0 loglevel=7 root=/dev/vda "
            f"thpvm.marker={marker} thpvm.swap=/dev/vdb\r\n"
            f"[    0.051234] Kernel command line: console=ttyS0 loglevel=7 root=/dev/vda "
            f"thpvm.marker={marker} thpvm.swap=/dev/vdb\r\n"
            f'[    0.051300] Unknown kernel command line parameters "thpvm.marker={marker}", '
            "will be passed to user space.\r\n")
    assert "ready" not in kinds(classify_log(text, marker))


def test_panic_trailer_is_part_of_the_panic() -> None:
    text = ("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on "
            "unknown-block(0,0)\r\n"
            "[ 1.0] CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.57 #1\r\n"
            "[ 1.0] Kernel Offset: disabled\r\n"
            "[ 1.0] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on "
            "unknown-block(0,0) ]---\r\n")
    assert kinds(classify_log(text)) == ["panic"]


def test_kernel_line_after_prompt_is_classified() -> None:
    boot = read(CLEAN_BOOT).split("# [")[0] + "# "  # the real boot up to the shell prompt
    assert boot.endswith("job control turned off\r\n# ")
    text = boot + ("[   12.345678] BUG: Bad page state in process khugepaged  pfn:1a2b3\r\n"
                   "[   12.345700] page: refcount:0 mapcount:1 mapping:0 index:0x0 pfn:0x1a2b3\r\n")
    events = classify_log(text, marker_of(boot))
    assert kinds(events) == ["ready", "oops"]
    assert events[1].lines[0] == "BUG: Bad page state in process khugepaged  pfn:1a2b3"


# ---------------------------------------------------------------- ConsoleMonitor._lines

def monitor(tmp_path: Path, marker: str = "THPVM-READY-abc") -> ConsoleMonitor:
    return ConsoleMonitor(tmp_path / "serial.sock", tmp_path / "serial.log", marker)


def test_lines_keeps_partial_line_until_complete(tmp_path: Path) -> None:
    m = monitor(tmp_path)
    rest = m._lines("[    1.0] booting\r\nKernel panic - not sync")
    assert rest == "Kernel panic - not sync"
    assert m.events == []
    rest = m._lines(rest + "ing: VFS: Unable to mount root fs\r\nnext")
    assert rest == "next"
    assert kinds(m.events) == ["panic"]
    assert m.events[0].lines[0] == "Kernel panic - not syncing: VFS: Unable to mount root fs"


def test_marker_split_across_reads(tmp_path: Path) -> None:
    m = monitor(tmp_path)
    buf = ""
    chunks = ["[ 0.9] virtio\r\nTHPV", "M-REA", "DY-a", "bc\r", "\nsh: 0: can't access tty\r\n# "]
    for chunk in chunks:
        buf = m._lines(buf + chunk)
    assert kinds(m.events) == ["ready"]
    assert m.events[0].lines == ["THPVM-READY-abc"]
    assert m.severe() is None


def test_marker_without_newline_is_seen_at_once(tmp_path: Path) -> None:
    m = monitor(tmp_path)
    assert m._lines("noise\nTHPVM-READY-abc") == ""
    assert kinds(m.events) == ["ready"]


def test_severe_returns_first_severe_event(tmp_path: Path) -> None:
    m = monitor(tmp_path)
    m._lines(WARN_LOG + OOPS_LOG)
    assert kinds(m.events) == ["warning", "oops", "panic"]
    sev = m.severe()
    assert sev is not None and sev.kind == "oops"


# ---------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None)
@given(st.text(), st.one_of(st.none(), st.text(min_size=1, max_size=20)))
def test_arbitrary_text_never_raises(text: str, marker: str | None) -> None:
    events = classify_log(text, marker)
    for ev in events:
        assert ev.kind in ("ready", "panic", "oops", "lockup", "warning")
        assert all("\r" not in line for line in ev.lines)


_LINES = st.sampled_from([
    "[    1.000000] noise", "THPVM-READY-abc", "Kernel panic - not syncing: x",
    "BUG: unable to handle page fault for address: 0", "WARNING: CPU: 0 PID: 1 at a.c:1 f",
    "------------[ cut here ]------------", "rcu: INFO: rcu_sched self-detected stall on CPU",
    "\x1b[0mplain\x1b[0m", "",
])


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINES, max_size=40), st.lists(st.integers(1, 40), max_size=30))
def test_chunking_does_not_change_classification(lines: list[str], cuts: list[int]) -> None:
    """However the serial stream is split into reads, the events are those of the whole log."""
    text = "".join(line + "\r\n" for line in lines)
    m = ConsoleMonitor(Path("/nonexistent/s"), Path("/nonexistent/l"), "THPVM-READY-abc")
    buf, pos = "", 0
    for n in cuts:
        buf = m._lines(buf + text[pos:pos + n])
        pos += n
    m._lines(buf + text[pos:] + "\n")
    got = [(e.kind, e.lines[0]) for e in m.events]
    want = [(e.kind, e.lines[0]) for e in classify_log(text, "THPVM-READY-abc")]
    assert got == want


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_undecodable_bytes_never_raise(data: bytes) -> None:
    classify_log(data.decode("utf-8", errors="replace"), "M")


# ---------------------------------------------------------------- a real socket

class SerialServer:
    """A unix socket server that plays QEMU's serial chardev (server=on,wait=on)."""

    def __init__(self, path: Path, chunks: list[bytes], keep_open: bool = False) -> None:
        self.path = path
        self.chunks = chunks
        self.keep_open = keep_open
        self.release = threading.Event()
        self.sent = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            try:
                for chunk in self.chunks:
                    conn.sendall(chunk)
                    time.sleep(0.02)
            except OSError:  # the monitor closed first
                pass
            self.sent.set()
            if self.keep_open:
                self.release.wait(10)

    def stop(self) -> None:
        self.release.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must be short (tmp_path may exceed 108 bytes)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="thpvm-t-"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def test_monitor_detects_ready_and_writes_serial_log(short_dir: Path) -> None:
    marker = "THPVM-READY-1234567890ab"
    chunks = [b"[    0.690000] virtio-pci 0000:00:01.0: probably buggy MP table\r\n",
              b"THPVM-RE", b"ADY-1234567890ab\r\n", b"sh: 0: can't access tty\r\n# "]
    srv = SerialServer(short_dir / "serial.sock", chunks, keep_open=True)
    m = ConsoleMonitor(short_dir / "serial.sock", short_dir / "serial.log", marker)
    try:
        m.connect(timeout=5)
        ev = m.wait_for(("ready",), timeout=5)
        assert ev is not None and ev.kind == "ready" and ev.lines == [marker]
        assert 0 <= ev.at < 5
        assert srv.sent.wait(5)
        log = short_dir / "serial.log"
        for _ in range(100):  # the reader thread catches up with the last chunk
            if log.exists() and log.stat().st_size == len(b"".join(chunks)):
                break
            time.sleep(0.02)
        start = time.monotonic()
        m.close()  # the server still holds the connection open: close must not hang
        assert time.monotonic() - start < 2
        assert m._thread is not None and not m._thread.is_alive()
    finally:
        srv.stop()
    assert (short_dir / "serial.log").read_bytes() == b"".join(chunks)
    assert m.closed


def test_monitor_returns_severe_event_while_waiting_for_ready(short_dir: Path) -> None:
    chunks = [b"[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n",
              b"[    1.0] Kernel Offset: disabled\r\n"]
    srv = SerialServer(short_dir / "serial.sock", chunks)
    m = ConsoleMonitor(short_dir / "serial.sock", short_dir / "serial.log", "THPVM-READY-x")
    try:
        m.connect(timeout=5)
        ev = m.wait_for(("ready",), timeout=5)
        assert ev is not None and ev.kind == "panic"
    finally:
        m.close()
        srv.stop()


def test_monitor_wait_ends_when_console_closes(short_dir: Path) -> None:
    srv = SerialServer(short_dir / "serial.sock", [b"just noise\r\n", b"partial line"])
    m = ConsoleMonitor(short_dir / "serial.sock", short_dir / "serial.log", "THPVM-READY-x")
    try:
        m.connect(timeout=5)
        start = time.monotonic()
        assert m.wait_for(("ready",), timeout=10) is None  # not the full 10 s
        assert time.monotonic() - start < 3
        assert m.closed
    finally:
        m.close()
        srv.stop()
    assert (short_dir / "serial.log").read_bytes() == b"just noise\r\npartial line"


def test_monitor_wait_times_out_on_silence(short_dir: Path) -> None:
    srv = SerialServer(short_dir / "serial.sock", [], keep_open=True)
    m = ConsoleMonitor(short_dir / "serial.sock", short_dir / "serial.log", "THPVM-READY-x")
    try:
        m.connect(timeout=5)
        start = time.monotonic()
        assert m.wait_for(("ready",), timeout=0.3) is None
        assert 0.25 < time.monotonic() - start < 1.5
        assert not m.closed
    finally:
        m.close()
        srv.stop()


def test_connect_fails_without_server(short_dir: Path) -> None:
    m = ConsoleMonitor(short_dir / "nobody.sock", short_dir / "serial.log", "M")
    start = time.monotonic()
    with pytest.raises(OSError):
        m.connect(timeout=0.2)
    assert time.monotonic() - start < 1.5


def test_recorded_lkdtm_warning_is_one_warning_event() -> None:
    """A real WARN (LKDTM, debug.config) printed right after the serial shell's prompt."""
    text = (SERIAL / "warn-lkdtm-6.12.117-tcg.log").read_text()
    events = console.classify_log(text, marker="THPVM-READY-01a3302e3346")
    assert [e.kind for e in events] == ["ready", "warning"]
    warn = events[1]
    assert warn.lines[0].startswith("WARNING: CPU: 1 PID: 50 at drivers/misc/lkdtm/bugs.c:112")
    assert any("Call Trace:" in line for line in warn.lines)
