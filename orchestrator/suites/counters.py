"""THP counters from the guest: /proc/vmstat, the transparent_hugepage sysfs tree, deltas
and a time series sampled inside the guest.

Guest commands are expensive under emulation, so a snapshot is ONE command whose output
is a *record*; the sampler's file is a sequence of the same records::

    @@thpvm sample <guest uptime, seconds>
    @@thpvm vmstat
    thp_fault_alloc 12                      (/proc/vmstat lines: thp_*, compact_*, pswp*, ...)
    @@thpvm sysfs
    enabled=always [madvise] never          (path under /sys/kernel/mm/transparent_hugepage/)
    khugepaged/full_scans=7
    hugepages-2048kB/stats/anon_fault_alloc=3
    @@thpvm end

Strictness (decided here): guest output is untrusted but these formats are the kernel's
own and fixed, so a malformed line raises `CounterFormatError` naming the line instead of
being skipped (a silently missing counter would make a model comparison pass for the
wrong reason). Unknown counter names are kept. The only tolerance is in `parse_series`:
a trailing record cut off by stopping the sampler is dropped.

Counter names follow result.json: vmstat names as spelled by the kernel, khugepaged sysfs
counters by bare name (``pages_collapsed``, ``full_scans``), per-size statistics as
``hugepages-<N>kB/stats/<name>``. `Snapshot.taken_at` is the guest's uptime, so snapshots
and series rows share one clock.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cache import write_json
from orchestrator.errors import CounterFormatError
from orchestrator.machine.guest import GuestShell
from orchestrator.report.resultdata import (
    KEY_COUNTERS as KEY_COUNTERS,  # the one definition, re-exported
)

log = logging.getLogger(__name__)

THP_SYSFS = "/sys/kernel/mm/transparent_hugepage"
# /proc/vmstat lines a snapshot keeps (an awk ERE over the whole line).
VMSTAT_PATTERN = ("^(thp_|compact_|pswp|nr_anon_transparent_hugepages |nr_shmem_hugepages "
                  "|nr_file_hugepages )")
# khugepaged sysfs files that count events (the others are settings).
KHUGEPAGED_COUNTERS = ("pages_collapsed", "full_scans")
# sysfs files a time-series sample reads (paths under THP_SYSFS).
SERIES_SYSFS = ("khugepaged/full_scans", "khugepaged/pages_collapsed")
# per-size statistics a time-series sample reads, for every hugepages-<N>kB/ the guest
# kernel has (6.10+; 7.2 counts collapses and their failures per order here, while the
# vmstat thp_collapse_alloc* and thp_scan_exceed_* count the PMD order only)
SERIES_MTHP_STATS = ("anon_fault_alloc", "collapse_alloc", "collapse_alloc_failed",
                     "collapse_exceed_none_pte", "collapse_exceed_swap_pte",
                     "collapse_exceed_shared_pte", "nr_anon")
SERIES_PATH = "/tmp/thpvm-series"
COUNTERS_FORMAT = "thpvm-counters/1"

MARK_SAMPLE = "@@thpvm sample"
MARK_VMSTAT = "@@thpvm vmstat"
MARK_SYSFS = "@@thpvm sysfs"
MARK_END = "@@thpvm end"

_VMSTAT_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_]+) (?P<value>-?\d+)$")
_SYSFS_KEY = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*(?:/[A-Za-z0-9_+-][A-Za-z0-9_.+-]*)*$")
_SELECTED = re.compile(r"\[([^\[\]\s]+)\]")
_INT = re.compile(r"^-?\d+$")
_MTHP_KEY = re.compile(r"^hugepages-(?P<kb>\d+)kB/stats/(?P<stat>[A-Za-z0-9_]+)$")


@dataclass
class Snapshot:
    """THP state at one moment.

    `vmstat`: the kept /proc/vmstat counters; `khugepaged`: every khugepaged/* file by
    bare name (counters and settings); `thp_settings`: the other sysfs files (``enabled``,
    ``defrag``, ``hugepages-2048kB/enabled``, ...; bracketed choices reduced to the
    selected word, numbers as int); `mthp_stats`: ``hugepages-<N>kB/stats/<name>``;
    `taken_at`: guest uptime in seconds.
    """

    vmstat: dict[str, int]
    khugepaged: dict[str, int]
    thp_settings: dict[str, str | int]
    taken_at: float
    mthp_stats: dict[str, int] = field(default_factory=dict)

    def counters(self) -> dict[str, int]:
        """Every event counter of the snapshot in result.json naming (settings excluded)."""
        merged = dict(self.vmstat)
        merged.update({k: v for k, v in self.khugepaged.items() if k in KHUGEPAGED_COUNTERS})
        merged.update(self.mthp_stats)
        return merged

    def to_json(self) -> dict[str, Any]:
        """Plain dict (counters.json)."""
        return {"taken_at": self.taken_at, "vmstat": dict(self.vmstat),
                "khugepaged": dict(self.khugepaged), "thp_settings": dict(self.thp_settings),
                "mthp_stats": dict(self.mthp_stats)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """Inverse of `to_json`."""
        return cls(vmstat=dict(data["vmstat"]), khugepaged=dict(data["khugepaged"]),
                   thp_settings=dict(data["thp_settings"]), taken_at=float(data["taken_at"]),
                   mthp_stats=dict(data.get("mthp_stats", {})))


# ----------------------------------------------------------------- parsers


def parse_vmstat(text: str) -> dict[str, int]:
    """``name value`` lines (/proc/vmstat or a filtered part of it) -> {name: value}.

    Blank lines are ignored; any other line that is not ``name value`` (name of letters,
    digits and ``_``; value a decimal integer) or a repeated name raises
    `CounterFormatError` naming the line.
    """
    counters: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _VMSTAT_LINE.match(line.strip())
        if not match:
            raise CounterFormatError(f"vmstat line {n}: {line[:120]!r}: expected 'name value'")
        name = match["name"]
        if name in counters:
            raise CounterFormatError(f"vmstat line {n}: {name!r} appears twice")
        counters[name] = int(match["value"])
    return counters


def parse_sysfs_value(value: str) -> str | int:
    """A sysfs file's content: ``always [madvise] never`` -> ``madvise`` (the selected
    choice), ``511`` -> 511, anything else -> the stripped text."""
    text = value.strip()
    selected = _SELECTED.search(text)
    if selected:
        return selected.group(1)
    if _INT.match(text):
        return int(text)
    return text


def parse_sysfs_dump(text: str) -> dict[str, str | int]:
    """``path=value`` lines (paths relative to /sys/kernel/mm/transparent_hugepage/, or
    absolute under it) -> {relative path: parsed value}.

    A file of several lines appears as several lines with the same path; its values are
    joined with newlines. A line without ``=`` or with an invalid path raises
    `CounterFormatError` naming the line.
    """
    raw: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        path, sep, value = line.partition("=")
        key = path.strip().removeprefix(THP_SYSFS + "/").removeprefix("./")
        if not sep or not _SYSFS_KEY.match(key):
            raise CounterFormatError(f"sysfs line {n}: {line[:120]!r}: expected 'path=value'")
        raw[key] = f"{raw[key]}\n{value}" if key in raw else value
    return {k: parse_sysfs_value(v) if "\n" not in v else v for k, v in raw.items()}


def split_sysfs(dump: Mapping[str, str | int]) -> tuple[dict[str, int], dict[str, str | int],
                                                        dict[str, int]]:
    """A parsed sysfs dump -> (khugepaged by bare name, settings, per-size stats).

    khugepaged files and per-size statistics must be integers (`CounterFormatError`)."""
    khugepaged: dict[str, int] = {}
    settings: dict[str, str | int] = {}
    stats: dict[str, int] = {}
    for key, value in dump.items():
        if key.startswith("khugepaged/"):
            khugepaged[key.removeprefix("khugepaged/")] = _as_int(key, value)
        elif re.match(r"^hugepages-\d+kB/stats/", key):
            stats[key] = _as_int(key, value)
        else:
            settings[key] = value
    return khugepaged, settings, stats


def _as_int(key: str, value: str | int) -> int:
    if isinstance(value, int):
        return value
    raise CounterFormatError(f"sysfs {key}: {str(value)[:60]!r} is not a number")


def parse_record(lines: Sequence[str], where: str = "record") -> Snapshot:
    """One complete record (``@@thpvm sample T`` ... ``@@thpvm end``) -> Snapshot."""
    head = lines[0].strip() if lines else ""
    if not head.startswith(MARK_SAMPLE) or not lines[-1].strip() == MARK_END:
        raise CounterFormatError(f"{where}: not a complete '{MARK_SAMPLE}' record")
    taken_at = _uptime(head[len(MARK_SAMPLE):], where)
    sections: dict[str, list[str]] = {MARK_VMSTAT: [], MARK_SYSFS: []}
    current: list[str] | None = None
    for line in lines[1:-1]:
        if line.strip() in sections:
            current = sections[line.strip()]
        elif current is not None:
            current.append(line)
        elif line.strip():
            raise CounterFormatError(f"{where}: {line[:120]!r} outside a section")
    try:
        dump = parse_sysfs_dump("\n".join(sections[MARK_SYSFS]))
        khugepaged, settings, stats = split_sysfs(dump)
        vmstat = parse_vmstat("\n".join(sections[MARK_VMSTAT]))
    except CounterFormatError as e:
        raise CounterFormatError(f"{where}: {e.message}", e.detail) from e
    return Snapshot(vmstat, khugepaged, settings, taken_at, stats)


def _uptime(text: str, where: str) -> float:
    try:
        value = float(text.split()[0])
    except (ValueError, IndexError):
        raise CounterFormatError(f"{where}: bad uptime {text.strip()[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise CounterFormatError(f"{where}: bad uptime {value!r}")
    return value


def _records(text: str) -> Iterator[tuple[int, list[str], bool]]:
    """(first line number, lines, complete) for each record; text between records must be
    blank."""
    record: list[str] | None = None
    start = 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith(MARK_SAMPLE):
            if record is not None:
                yield start, record, False
            record, start = [line], n
        elif record is not None:
            record.append(line)
            if line.strip() == MARK_END:
                yield start, record, True
                record = None
        elif line.strip():
            raise CounterFormatError(f"line {n}: {line[:120]!r} outside a record")
    if record is not None:
        yield start, record, False


def parse_snapshot(text: str) -> Snapshot:
    """The output of `snapshot_command`: exactly one complete record."""
    records = list(_records(text))
    if len(records) != 1 or not records[0][2]:
        raise CounterFormatError(
            f"expected one complete counter record, got {len(records)} "
            f"({sum(r[2] for r in records)} complete); output starts {text[:80]!r}")
    return parse_record(records[0][1], "snapshot")


def parse_series(text: str) -> list[Snapshot]:
    """The sampler's file: records in time order. Incomplete records (the last one when
    the sampler was stopped mid-write, including a final line without newline) are
    dropped; a malformed complete record raises."""
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows: list[Snapshot] = []
    for start, lines, complete in _records(text):
        if not complete:
            log.debug("series: dropping the incomplete record at line %d", start)
            continue
        rows.append(parse_record(lines, f"series record at line {start}"))
    return rows


# ---------------------------------------------------------------- deltas


def delta(before: Snapshot | Mapping[str, int], after: Snapshot | Mapping[str, int]
          ) -> dict[str, int]:
    """after - before for every counter present in both (settings excluded). Gauges such
    as nr_anon_transparent_hugepages may be negative; names missing on one side are
    left out."""
    old = before.counters() if isinstance(before, Snapshot) else dict(before)
    new = after.counters() if isinstance(after, Snapshot) else dict(after)
    return {name: new[name] - old[name] for name in sorted(new) if name in old}


def per_size(counters: Mapping[str, int]) -> dict[int, dict[str, int]]:
    """The per-size statistics of a counter map (snapshot or delta), by size in kB:
    ``{"hugepages-64kB/stats/collapse_alloc": 3}`` -> ``{64: {"collapse_alloc": 3}}``."""
    sizes: dict[int, dict[str, int]] = {}
    for name, value in counters.items():
        m = _MTHP_KEY.match(name)
        if m:
            sizes.setdefault(int(m["kb"]), {})[m["stat"]] = value
    return dict(sorted(sizes.items()))


def size_order(size_kb: int, page_kb: int = 4) -> int:
    """The folio order of a ``hugepages-<N>kB`` size (64 kB of 4 kB pages: order 4)."""
    pages = size_kb // page_kb
    if pages < 1 or pages & (pages - 1) or size_kb % page_kb:
        raise ValueError(f"{size_kb} kB is not a power-of-two number of {page_kb} kB pages")
    return pages.bit_length() - 1


def mthp_summary(delta_map: Mapping[str, int], page_kb: int = 4) -> dict[str, dict[str, Any]]:
    """result.json's ``counters.mthp``: per size, its order and its statistics' deltas."""
    return {f"hugepages-{kb}kB": {"order": size_order(kb, page_kb), "delta": stats}
            for kb, stats in per_size(delta_map).items()}


def series_values(rows: Sequence[Snapshot], name: str) -> list[tuple[float, int]]:
    """(taken_at, value) of one counter over a series, rows lacking it skipped."""
    return [(row.taken_at, row.counters()[name]) for row in rows if name in row.counters()]


# ----------------------------------------------------------- guest commands

_AWK = (
    'FILENAME == "/proc/uptime" { print "@@thpvm sample " $1; print "@@thpvm vmstat"; next }'
    ' FILENAME == "/proc/vmstat" { if ($0 ~ re) print; next }'
    ' FNR == 1 && !s { print "@@thpvm sysfs"; s = 1 }'
    ' { n = FILENAME; sub(/^.*\\/transparent_hugepage\\//, "", n); print n "=" $0 }'
    ' END { if (!s) print "@@thpvm sysfs"; if (tail) print "@@thpvm end" }'
)


def _awk(files: Sequence[str], tail: bool, more: str = "") -> str:
    args = " ".join(shlex.quote(f) for f in ["/proc/uptime", "/proc/vmstat", *files])
    return (f"awk -v re={shlex.quote(VMSTAT_PATTERN)} -v tail={int(tail)} "
            f"{shlex.quote(_AWK)} {args}{' ' + more if more else ''}")


def mthp_files_command(stats: Sequence[str] = SERIES_MTHP_STATS, var: str = "F") -> str:
    """Shell (builtins only) setting $`var` to the guest's existing per-size stat files
    named in `stats` (empty on kernels without hugepages-<N>kB/: 6.1)."""
    names = "|".join(stats) if stats else "thpvm-none"
    return (f"{var}=; for f in {THP_SYSFS}/hugepages-*/stats/*; do case ${{f##*/}} in "
            f"{names}) {var}=\"${var} $f\";; esac; done")


def snapshot_command() -> str:
    """One guest command printing a complete record: uptime, the kept vmstat lines and
    ``path=value`` for every file under /sys/kernel/mm/transparent_hugepage/ (recursive)."""
    dump = (f"(cd {THP_SYSFS} 2>/dev/null && grep -r . . 2>/dev/null"
            " | sed 's|^\\./||; s/:/=/')")
    return f"{_awk([], tail=False)}; {dump}; echo '{MARK_END}'"


def sample_command(sysfs_files: Sequence[str] = SERIES_SYSFS, more: str = "") -> str:
    """One time-series sample (a record) with a few sysfs counters, in one awk process;
    `more` is appended unquoted (e.g. ``$F`` from `mthp_files_command`)."""
    return _awk([f"{THP_SYSFS}/{f}" for f in sysfs_files], tail=True, more=more)


@dataclass(frozen=True)
class Sampler:
    """A guest-side sampling loop writing records to `path` every `interval` seconds."""

    path: str
    interval: float
    pid: int

    @property
    def pid_path(self) -> str:
        return self.path + ".pid"

    @property
    def stop_path(self) -> str:
        return self.path + ".stop"


def sampler_start_command(path: str = SERIES_PATH, interval: float = 0.25,
                          sysfs_files: Sequence[str] = SERIES_SYSFS,
                          mthp_stats: Sequence[str] = SERIES_MTHP_STATS) -> str:
    """Start the loop detached (setsid when available, no terminal, output to `path`),
    wait until it has written ``<path>.pid`` (it is then in its own session and survives
    the end of this command) and print that pid. The loop samples, sleeps, and ends when
    ``<path>.stop`` exists, removing ``<path>.pid`` as it goes. The per-size stat files
    are listed once, before the loop (the sizes a kernel has do not change)."""
    if not interval > 0 or not math.isfinite(interval):
        raise ValueError(f"sampling interval must be positive, got {interval!r}")
    q = shlex.quote
    pid_path = q(path + ".pid")
    loop = (f"{mthp_files_command(mthp_stats)}; "
            f"echo $$ > {pid_path}; while [ ! -e {q(path + '.stop')} ]; do "
            f"{sample_command(sysfs_files, '$F')}; sleep {interval:g}; done; rm -f {pid_path}")
    return (f"rm -f {q(path)} {q(path + '.stop')} {pid_path}; "
            "if command -v setsid >/dev/null 2>&1; then S=setsid; else S=; fi; "
            f"$S sh -c {q(loop)} > {q(path)} 2>/dev/null < /dev/null & "
            f"i=0; while [ ! -s {pid_path} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
            f"cat {pid_path}")


def sampler_stop_command(sampler: Sampler, grace: float = 2.0) -> str:
    """Ask the loop to stop, wait until it has gone (its pid file removed: its last record
    is then complete; zombies make ``kill -0`` useless), kill it if it outlives
    ``interval + grace`` seconds, and print the series file."""
    q = shlex.quote
    polls = math.ceil((sampler.interval + grace) / 0.05)
    pid_path = q(sampler.pid_path)
    return (f"touch {q(sampler.stop_path)}; i=0; "
            f"while [ -e {pid_path} ] && [ $i -lt {polls} ]; do sleep 0.05; i=$((i+1)); done; "
            f"if [ -e {pid_path} ]; then kill \"$(cat {pid_path})\" {sampler.pid} 2>/dev/null; fi; "
            f"rm -f {q(sampler.stop_path)} {pid_path}; cat {q(sampler.path)}")


# ----------------------------------------------------------- guest helpers


def snapshot(shell: GuestShell, timeout: float = 60.0) -> Snapshot:
    """Read the THP counters and settings with one guest command."""
    result = shell.run(snapshot_command(), timeout=timeout)
    if result.exit_code != 0:
        raise CounterFormatError(f"counter snapshot exited {result.exit_code}",
                                 result.stderr[-2000:])
    return parse_snapshot(result.stdout)


def start_sampler(shell: GuestShell, path: str = SERIES_PATH, interval: float = 0.25,
                  sysfs_files: Sequence[str] = SERIES_SYSFS,
                  mthp_stats: Sequence[str] = SERIES_MTHP_STATS) -> Sampler:
    """Start the guest-side sampling loop; stop it with `stop_sampler`."""
    result = shell.run(sampler_start_command(path, interval, sysfs_files, mthp_stats),
                       timeout=30.0)
    pid = result.stdout.strip().split()[-1:] if result.stdout.strip() else []
    if result.exit_code != 0 or not pid or not pid[0].isdigit():
        raise CounterFormatError("could not start the counter sampler in the guest",
                                 (result.stdout + result.stderr)[-2000:])
    log.info("counter sampler started in the guest (pid %s, every %g s)", pid[0], interval)
    return Sampler(path, interval, int(pid[0]))


def stop_sampler(shell: GuestShell, sampler: Sampler, timeout: float = 120.0
                 ) -> list[Snapshot]:
    """Stop the sampling loop and return its rows (one guest command)."""
    result = shell.run(sampler_stop_command(sampler), timeout=timeout)
    rows = parse_series(result.stdout)
    log.info("counter sampler stopped: %d samples", len(rows))
    return rows


# ------------------------------------------------------------- counters.json


def write_counters_json(path: Path, snapshots: Mapping[str, Snapshot],
                        deltas: Mapping[str, Mapping[str, int]],
                        series: Mapping[str, Sequence[Snapshot]] | None = None) -> None:
    """counters.json of a run directory: labelled snapshots (e.g. ``before``, ``after``),
    labelled deltas (e.g. per selftest invocation) and optional labelled series."""
    data = {
        "format": COUNTERS_FORMAT,
        "key_counters": list(KEY_COUNTERS),
        "snapshots": {label: snap.to_json() for label, snap in snapshots.items()},
        "deltas": {label: dict(d) for label, d in deltas.items()},
        "series": {label: [row.to_json() for row in rows]
                   for label, rows in (series or {}).items()},
    }
    write_json(path, data)


def load_counters_json(path: Path) -> tuple[dict[str, Snapshot], dict[str, dict[str, int]],
                                            dict[str, list[Snapshot]]]:
    """Read counters.json back: (snapshots, deltas, series)."""

    data = json.loads(path.read_text())
    if data.get("format") != COUNTERS_FORMAT:
        raise CounterFormatError(f"{path}: not a {COUNTERS_FORMAT} file")
    snapshots = {k: Snapshot.from_json(v) for k, v in data["snapshots"].items()}
    series = {k: [Snapshot.from_json(r) for r in rows] for k, rows in data["series"].items()}
    return snapshots, {k: dict(v) for k, v in data["deltas"].items()}, series
