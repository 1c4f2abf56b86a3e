"""Serial console watch: readiness, and crash classification for the whole run.

QEMU's serial port is a unix socket; a `ConsoleMonitor` thread reads it through
pexpect for as long as QEMU runs, saves everything to `serial.log`, and turns
what it sees into `ConsoleEvent`s: ready (the marker), panic, oops/BUG, warning,
lockup/RCU stall, hang (no output for a while when output was expected) and
exited. Classification works on cleaned lines (ANSI escapes and CRs removed)
and keeps the lines that explain the event.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pexpect.fdpexpect

log = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")
# a printk timestamp at the line start, or after a partial line ending in a shell prompt
TIMESTAMP = re.compile(r"^(?:.*?[#$] )?\[\s*\d+\.\d+\]\s?")

# (kind, pattern) in priority order; patterns match a cleaned line without its timestamp
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("oops", re.compile(r"^(BUG: |Oops: |general protection fault|kernel BUG at "
                        r"|Unable to handle kernel|BUG kmalloc|Bad page (state|map))")),
    ("lockup", re.compile(r"(soft lockup - CPU#|Watchdog detected hard LOCKUP"
                          r"|rcu: INFO: rcu_\w+ (self-)?detected stall"
                          r"|INFO: task .+ blocked for more than)")),
    ("warning", re.compile(r"^(WARNING: |UBSAN: "  # WARN(), lockdep, RCU-lockdep, UBSAN
                           r"|------------\[ cut here \]------------)")),
    # calibrate_APIC_clock() (arch/x86/kernel/apic/apic.c) measured the local APIC timer
    # against jiffies while the host starved the TCG vCPU: a boot-time artefact of a busy
    # host, not of the kernel under test (the guest may then hang before userspace)
    ("bad-timer", re.compile(r"^APIC frequency too slow, disabling apic timer")),
)
CONTEXT_LINES = 25
MAX_EVENTS = 1000  # a guest spamming WARNs must not grow memory without bound
MAX_LINE = 1 << 16  # a partial line longer than this is classified as it is
SEVERE = ("panic", "oops", "lockup", "hang", "exited")  # end a wait_for
KERNEL_FAILURES = ("panic", "oops", "lockup", "hang")


@dataclass
class ConsoleEvent:
    """Something the console showed: its kind, when, and the lines that explain it."""

    kind: str
    at: float
    lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "at": round(self.at, 3), "lines": self.lines}


def clean_line(raw: str) -> str:
    """Strip ANSI escapes, carriage returns and the printk timestamp."""
    text = ANSI.sub("", raw)
    m = TIMESTAMP.match(text)
    if m:  # a kernel line, possibly after a partial line (the serial shell's prompt)
        text = text[m.end():]
    return text.rstrip()


def classify_line(line: str) -> str | None:
    """The event kind a single cleaned console line starts, or None."""
    for kind, pattern in RULES:
        if pattern.search(line):
            return kind
    return None


class Classifier:
    """Feeds on console lines; collects events with CONTEXT_LINES of context."""

    def __init__(self, marker: str | None = None) -> None:
        self.marker = marker
        self.events: list[ConsoleEvent] = []
        self._open: ConsoleEvent | None = None
        self._remaining = 0
        self._seen_cut_here = False
        self.dropped = 0  # events beyond MAX_EVENTS

    def feed(self, raw: str, at: float = 0.0) -> ConsoleEvent | None:
        """Consume one raw line; return a newly started event, if any."""
        line = clean_line(raw)
        if self._open is not None and self._remaining > 0:
            self._open.lines.append(line)
            self._remaining -= 1
        if self.marker and self.marker in line and "thpvm.marker=" not in line:
            return self._add(ConsoleEvent("ready", at, [line]))  # not the cmdline echo
        kind = classify_line(line)
        if kind is None:
            return None
        if kind == "warning" and "cut here" in line:
            self._seen_cut_here = True
            return None  # the WARNING: line that follows starts the event
        if self._open is not None and self._remaining > 0 and self._open.kind in ("oops", "panic") \
                and (kind in ("warning", "oops") or line.startswith("---[ end ")):
            return None  # part of an event already open (incl. the panic trailer)
        return self._add(ConsoleEvent(kind, at, [line]))

    def _add(self, event: ConsoleEvent) -> ConsoleEvent:
        if len(self.events) >= MAX_EVENTS:
            self.dropped += 1
            return event  # reported to the caller, not kept
        self.events.append(event)
        if event.kind != "ready":
            self._open, self._remaining = event, CONTEXT_LINES
        return event


def classify_log(text: str, marker: str | None = None) -> list[ConsoleEvent]:
    """Classify a whole recorded console log (tests, offline reports)."""
    c = Classifier(marker)
    for raw in text.splitlines():
        c.feed(raw)
    return c.events


class ConsoleMonitor:
    """Reads QEMU's serial socket in a thread; saves serial.log; classifies."""

    def __init__(self, sock_path: Path, log_path: Path, marker: str) -> None:
        self.sock_path = sock_path
        self.log_path = log_path
        self.classifier = Classifier(marker)
        self.lock = threading.Condition()
        self.last_output = time.monotonic()
        self.closed = False
        self.started = time.monotonic()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.child: pexpect.fdpexpect.fdspawn | None = None
        self._expect: str | None = None  # a liveness probe's answer, awaited
        self._answered = False
        self._probing = threading.Lock()

    def connect(self, timeout: float = 10.0) -> None:
        """Connect to QEMU's serial socket (QEMU waits for us before running the guest)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.sock_path))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._sock = sock
        self.child = pexpect.fdpexpect.fdspawn(sock.fileno(), encoding="utf-8",
                                               codec_errors="replace", timeout=1)
        self._thread = threading.Thread(target=self._loop, name="console", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self.child is not None
        buf = ""
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as logf:
            while True:
                try:
                    data = self.child.read_nonblocking(65536, timeout=0.5)
                except pexpect.TIMEOUT:
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    break
                logf.write(data)
                logf.flush()
                buf = self._lines(buf + data)
        self._lines(buf + "\n")
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def _lines(self, buf: str) -> str:
        *complete, rest = buf.split("\n")
        if len(rest) > MAX_LINE:  # no newline for 64 KiB: do not buffer forever
            complete, rest = [*complete, rest], ""
        now = time.monotonic()
        with self.lock:
            if self._expect is not None and self._expect in buf:
                self._answered = True
            if complete or rest:
                self.last_output = now
            for line in complete:
                ev = self.classifier.feed(line, now - self.started)
                if ev:
                    log.log(logging.INFO if ev.kind == "ready" else logging.WARNING,
                            "console: %s: %s", ev.kind, ev.lines[0][:200])
            if rest and self.classifier.marker and self.classifier.marker in rest:
                self.classifier.feed(rest, now - self.started)
                return ""
            self.lock.notify_all()
        return rest

    @property
    def events(self) -> list[ConsoleEvent]:
        with self.lock:
            return list(self.classifier.events)

    def severe(self) -> ConsoleEvent | None:
        """The first event that means the kernel is dead or broken (not a WARN, and not
        QEMU merely exiting)."""
        return next((e for e in self.events if e.kind in KERNEL_FAILURES), None)

    def wait_for(self, kinds: tuple[str, ...], timeout: float) -> ConsoleEvent | None:
        """Block until an event of one of `kinds` (or a severe one) or the console closes."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for ev in self.classifier.events:
                    if ev.kind in kinds or ev.kind in SEVERE:
                        return ev
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self.lock.wait(min(left, 0.2))

    def add_event(self, kind: str, lines: list[str]) -> ConsoleEvent:
        """Record an event seen from outside the console (a hang found by probing)."""
        with self.lock:
            ev = ConsoleEvent(kind, time.monotonic() - self.started, lines)
            self.classifier.events.append(ev)
            self.lock.notify_all()
        return ev

    def probe(self, timeout: float) -> bool:
        """Is the guest's userspace alive? Ask the console's root shell (thpvm-init
        runs one on ttyS0) to echo a fresh token; True if it did within `timeout`.
        The shell prints the token with an arithmetic result in it, so the terminal's
        echo of the typed line never counts as an answer."""
        with self._probing:  # one probe at a time: they share the answer slot
            return self._probe(timeout)

    def _probe(self, timeout: float) -> bool:
        token = uuid.uuid4().hex[:12]
        with self.lock:
            self._expect, self._answered = f"THPVM-ALIVE-42-{token}", False
        try:
            if self._sock is None:
                return False
            self._sock.send(f"\necho THPVM-ALIVE-$((6*7))-{token}\n".encode(),
                            socket.MSG_DONTWAIT)
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self._answered and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(min(left, 0.2))
            answered, self._expect = self._answered, None
        return answered

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the console reached EOF (QEMU exited and all output was read)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.2))
        return True

    def idle_seconds(self) -> float:
        """Seconds since the console last printed anything."""
        with self.lock:
            return time.monotonic() - self.last_output

    def close(self) -> None:
        """Stop reading (QEMU gone or shutting down) and wait for the thread."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
