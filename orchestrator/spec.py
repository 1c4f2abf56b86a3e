"""Workload specs (TOML, format 1): loading, validation, page selectors, layout.

A workload spec is the shared contract between the khugepaged model
(`orchestrator.model`) and the in-guest driver (`orchestrator.suites.workloads.driver` + C).
This module turns a TOML file into frozen dataclasses and refuses anything it
does not understand: every error is a `UserError` naming the file, the key
path (``steps[3].pages``) and what was expected.

File shape (all keys listed; anything else is an error)::

    format = 1                      # required, must be 1
    name = "max-ptes-none-at-limit" # required, [a-z0-9][a-z0-9._-]*
    description = "..."             # optional string
    since = "7.2"                   # optional: oldest kernel (MAJOR.MINOR) it applies to

    [settings]                      # optional; see DEFAULT_SETTINGS for keys/defaults
    max_ptes_none = 256
    "hugepages-64kB/enabled" = "always"   # per-size knobs: MTHP_KNOB_DEFAULTS (6.8+ kernels)

    [[regions]]                     # at least one
    name = "a"                      # required, unique, [A-Za-z0-9_]+
    pmds = 1                        # exactly one of pmds (2 MiB units) / pages (4 KiB);
                                    # all regions together at most 4 GiB (and the guest's memory)
    offset_pages = 0                # optional, 0..511: start misaligned by this many pages
    prot = "rw"                     # optional, "rw" (default) or "r", at mmap time

    [[steps]]                       # at least one; `op` required, `proc` optional
    op = "touch"                    # region, pages?, access? ("write" default | "read")

Ops and their keys (``pages`` is always optional and defaults to ``"all"``;
``proc`` is ``"parent"`` (default) or ``"child"``, the latter only after ``fork``):

* ``touch``: region, pages, access = "write" | "read". "write" stores a
  non-zero byte at the start of each selected page (so the underused-THP
  shrinker never sees an all-zero subpage); "read" loads one byte (maps the
  zero page on a never-written page).
* ``madvise``: region, pages, advice = hugepage | nohugepage | collapse |
  pageout | dontneed, expect (optional: "ok" or an errno name such as "EINVAL").
* ``mprotect``: region, pages, prot = "r" | "rw".
* ``munmap``: region, pages.
* ``fork``: no keys; at most one; creates the child C, which shares all of P's
  memory and lives until the end of the workload. Only the parent may fork.
* ``set``: ``set = { knob = value, ... }`` with knobs from DEFAULT_SETTINGS,
  written in SETTINGS_WRITE_ORDER (not file order).
* ``wait_scans``: count (int 1..10000), timeout_s (finite number in (0, 3600], default 30),
  label (optional); waits until full_scans advanced by ``count`` since the
  step started, then takes a checkpoint.
* ``checkpoint``: label (optional).
* ``sleep``: ms (int 0..3600000). Extension to the issue's format: sleep, then go on
  (no checkpoint); used where khugepaged does not run (``enabled = never``).

Checkpoint labels default to ``"step<i>"`` (i = step index) and must be unique.

Syscalls on page ranges (madvise, mprotect, munmap): the selected pages are
split into maximal runs of consecutive indices and one syscall is issued per
run, in ascending order. A step's result is "ok" if every call returned 0,
else the errno name of the first call that failed.

Address layout (see `layout_addresses`): regions are placed in file order
starting at LAYOUT_BASE; each region's base is 2 MiB aligned, its start is
base + offset_pages * 4 KiB, and the next region's base is the end of this one
rounded up to 2 MiB plus one empty 2 MiB gap, so regions never share a PMD and
their VMAs never merge. The driver maps them with MAP_FIXED_NOREPLACE.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator.data import WORKLOAD_SPECS_DIR
from orchestrator.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PAGE_SIZE = 4096
PMD_PAGES = 512
PMD_SIZE = PAGE_SIZE * PMD_PAGES
LAYOUT_BASE = 1 << 40  # 1 TiB: far away from libc's top-down mmap area
LAYOUT_GAP = PMD_SIZE
#: Sane upper bounds: all regions of a workload together (4 GiB; `check_fits` also
#: holds them to the guest's memory), a wait_scans timeout, its scan count, a sleep.
MAX_TOTAL_PAGES = 1 << 20
MAX_WAIT_S = 3600
MAX_SCAN_COUNT = 10_000
MAX_SLEEP_MS = MAX_WAIT_S * 1000

#: Effective sysfs settings of a workload when its [settings] table omits a key.
#: Kernel defaults, except enabled=madvise and scan_sleep_millisecs=200.
DEFAULT_SETTINGS: Mapping[str, str | int] = MappingProxyType(
    {
        "enabled": "madvise",
        "defrag": "madvise",
        "use_zero_page": 1,
        "khugepaged_defrag": 1,
        "pages_to_scan": 4096,
        "scan_sleep_millisecs": 200,
        "alloc_sleep_millisecs": 60000,
        "max_ptes_none": 511,
        "max_ptes_swap": 64,
        "max_ptes_shared": 256,
    }
)

#: Per-size anonymous mTHP knobs (`hugepages-<N>kB/enabled`, 6.8+), order 2 (16 kB) to the PMD
#: order 9 (2048 kB) on x86-64. A workload's effective settings hold only the ones its file
#: sets (older kernels lack them); the kernel defaults apply to the rest.
MTHP_ORDERS: tuple[int, ...] = tuple(range(2, 10))
MTHP_KNOB_DEFAULTS: Mapping[str, str] = MappingProxyType(
    {f"hugepages-{4 << o}kB/enabled": ("inherit" if o == 9 else "never") for o in MTHP_ORDERS})
MTHP_VALUES = ("always", "madvise", "inherit", "never")


def size_knob(order: int) -> str:
    """The per-size `enabled` knob of folio order `order` (e.g. 4 -> hugepages-64kB/enabled)."""
    return f"hugepages-{4 << order}kB/enabled"


#: Order in which the driver writes knobs (initial [settings] and every `set`
#: step): limits first, then the knobs that wake khugepaged (sleep times), and
#: `enabled` (which starts/stops the thread) last, so a pass triggered by a
#: write already sees the new limits. The model assumes this order.
SETTINGS_WRITE_ORDER: tuple[str, ...] = (
    "defrag", "use_zero_page", "khugepaged_defrag", "pages_to_scan", "max_ptes_none",
    "max_ptes_swap", "max_ptes_shared", "alloc_sleep_millisecs", "scan_sleep_millisecs",
    *MTHP_KNOB_DEFAULTS, "enabled",
)

# knob -> (allowed strings) or (min, max) for integers; max None = unbounded
_KNOBS: dict[str, tuple[str, ...] | tuple[int, int | None]] = {
    "enabled": ("always", "madvise", "never"),
    "defrag": ("always", "defer", "defer+madvise", "madvise", "never"),
    "use_zero_page": (0, 1),
    "khugepaged_defrag": (0, 1),
    "pages_to_scan": (1, 2**32 - 1),
    "scan_sleep_millisecs": (0, 2**32 - 1),
    "alloc_sleep_millisecs": (0, 2**32 - 1),
    "max_ptes_none": (0, PMD_PAGES - 1),
    "max_ptes_swap": (0, PMD_PAGES - 1),
    "max_ptes_shared": (0, PMD_PAGES - 1),
    **{k: MTHP_VALUES for k in MTHP_KNOB_DEFAULTS},
}

ADVICES = ("hugepage", "nohugepage", "collapse", "pageout", "dontneed")
OPS = ("touch", "madvise", "mprotect", "munmap", "fork", "set", "wait_scans", "checkpoint", "sleep")
CHECKPOINT_OPS = ("wait_scans", "checkpoint")
PROCS = ("parent", "child")

_RELEASE_RE = re.compile(r"(\d+)\.(\d+)")
_SINCE_RE = re.compile(r"\d+\.\d+\Z")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_REGION_RE = re.compile(r"[A-Za-z0-9_]+\Z")
_RANGE_RE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?\Z")

Selector = str | int | Mapping[str, int]


@dataclass(frozen=True)
class Region:
    """One anonymous private mapping of the workload.

    `pages` is the length in 4 KiB pages, `offset_pages` the misalignment of
    its start from a 2 MiB boundary, `prot` "rw" or "r" at mmap time.
    """

    name: str
    pages: int
    offset_pages: int = 0
    prot: str = "rw"


@dataclass(frozen=True)
class Step:
    """One workload step: `op`, the process running it, its region (or None)
    and the op's other keys with defaults filled in (`args`, read-only)."""

    op: str
    proc: str = "parent"
    region: str | None = None
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def label(self) -> str | None:
        """Checkpoint label of a wait_scans/checkpoint step, else None."""
        return self.args.get("label") if self.op in CHECKPOINT_OPS else None


@dataclass(frozen=True)
class WorkloadSpec:
    """A validated workload. `settings` holds the *effective* value of every
    knob in DEFAULT_SETTINGS (defaults merged with the file's [settings])."""

    name: str
    description: str
    settings: dict[str, str | int]
    regions: tuple[Region, ...]
    steps: tuple[Step, ...]
    source: str
    since: str | None = None

    def applies_to(self, release: str) -> bool:
        """Does the workload apply to kernel `release` ("7.2.13-amd64", "6.12")?"""
        if self.since is None:
            return True
        m = _RELEASE_RE.match(release)
        return m is None or (int(m.group(1)), int(m.group(2))) >= _version_key(self.since)

    def region(self, name: str) -> Region:
        """The region called `name` (KeyError if there is none)."""
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def step_pages(self, step: Step) -> list[int]:
        """Sorted page indices (region-relative) a region step acts on."""
        if step.region is None:
            raise ValueError(f"step {step.op!r} has no region")
        return select_pages(step.args.get("pages", "all"), self.region(step.region).pages)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form, with addresses and resolved page lists."""
        addrs = layout_addresses(self)
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "since": self.since,
            "source": self.source,
            "settings": dict(self.settings),
            "regions": [
                {"name": r.name, "pages": r.pages, "offset_pages": r.offset_pages,
                 "prot": r.prot, "start": addrs[r.name]}
                for r in self.regions
            ],
            "steps": [_step_dict(self, s) for s in self.steps],
        }


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _step_dict(spec: WorkloadSpec, step: Step) -> dict[str, Any]:
    d: dict[str, Any] = {"op": step.op, "proc": step.proc}
    if step.region is not None:
        d["region"] = step.region
        d["page_indices"] = spec.step_pages(step)
    d.update({k: _plain(v) for k, v in step.args.items()})
    return d


def layout_addresses(spec: WorkloadSpec) -> dict[str, int]:
    """Start address of every region (see the module docstring for the rule)."""
    out: dict[str, int] = {}
    base = LAYOUT_BASE
    for r in spec.regions:
        start = base + r.offset_pages * PAGE_SIZE
        out[r.name] = start
        end = start + r.pages * PAGE_SIZE
        base = -(-end // PMD_SIZE) * PMD_SIZE + LAYOUT_GAP
    return out


# --------------------------------------------------------------------------- selectors

_XORSHIFT_MULT = 0x2545F4914F6CDD1D
_ZERO_SEED = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def xorshift64star(state: int) -> tuple[int, int]:
    """One xorshift64* step: returns (new_state, output), all uint64.

    x ^= x >> 12; x ^= x << 25; x ^= x >> 27 (each masked to 64 bits);
    output = (x * 0x2545F4914F6CDD1D) mod 2**64.
    """
    x = state
    x ^= x >> 12
    x ^= (x << 25) & _MASK64
    x ^= x >> 27
    return x, (x * _XORSHIFT_MULT) & _MASK64


def random_pages(count: int, seed: int, npages: int) -> list[int]:
    """`count` distinct indices in [0, npages) chosen by the workload PRNG.

    Exact algorithm (the C driver mirrors it bit for bit):
    state = seed mod 2**64, or 0x9E3779B97F4A7C15 if that is 0;
    a[k] = k for k in 0..npages-1;
    for i in 0..count-1: (state, r) = xorshift64star(state);
    j = i + r mod (npages - i); swap a[i], a[j];
    result = a[0..count-1] sorted ascending.
    """
    if not 0 <= count <= npages:
        raise ValueError(f"random count {count} not in 0..{npages}")
    state = seed & _MASK64 or _ZERO_SEED
    a = list(range(npages))
    for i in range(count):
        state, r = xorshift64star(state)
        j = i + r % (npages - i)
        a[i], a[j] = a[j], a[i]
    return sorted(a[:count])


def select_pages(selector: Selector, npages: int) -> list[int]:
    """Resolve a page selector to sorted, distinct 0-based page indices < npages.

    Accepted forms (ValueError with a description otherwise):

    * ``"all"`` -> 0..npages-1
    * an int ``N`` or the string ``"N"`` -> [N]
    * ``"A-B"`` -> A..B inclusive (A <= B)
    * a comma list of the two previous forms, e.g. ``"0-3,8,10-11"``
      (overlaps allowed; the union is returned)
    * ``{ every = N, offset = K }`` -> K, K+N, K+2N, ... < npages
      (N >= 1, 0 <= K < npages; offset defaults to 0)
    * ``{ random = COUNT, seed = S }`` -> `random_pages(COUNT, S, npages)`
      (0 <= COUNT <= npages; S an integer >= 0, default 0)

    Every index must be < npages.
    """
    if isinstance(selector, bool):
        raise ValueError("expected a page selector, got a boolean")
    if isinstance(selector, int):
        return _check_indices([selector], npages)
    if isinstance(selector, str):
        return _select_str(selector, npages)
    if isinstance(selector, Mapping):
        return _select_table(selector, npages)
    kind = type(selector).__name__
    raise ValueError(f"expected a page selector (string, int or table), got {kind}")


def _check_indices(idx: list[int], npages: int) -> list[int]:
    for i in idx:
        if not 0 <= i < npages:
            raise ValueError(f"page index {i} out of range 0..{npages - 1}")
    return sorted(set(idx))


def _select_str(text: str, npages: int) -> list[int]:
    if text.strip() == "all":
        return list(range(npages))
    out: list[int] = []
    for part in text.split(","):
        m = _RANGE_RE.match(part)
        if not m:
            raise ValueError(f"expected 'all', 'N', 'A-B' or a comma list of those, got {text!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise ValueError(f"range {part.strip()!r} is reversed")
        if b >= npages:
            raise ValueError(f"page index {b} out of range 0..{npages - 1}")
        out.extend(range(a, b + 1))
    return sorted(set(out))


def _int_key(table: Mapping[str, Any], key: str, default: int | None, lo: int) -> int:
    v = table.get(key, default)
    if v is None:
        raise ValueError(f"missing key {key!r}")
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{key!r} must be an integer >= {lo}, got {v!r}")
    return v


def _select_table(table: Mapping[str, Any], npages: int) -> list[int]:
    keys = set(table)
    if "every" in table:
        if keys - {"every", "offset"}:
            raise ValueError(f"unknown keys {sorted(keys - {'every', 'offset'})} in every-selector")
        n = _int_key(table, "every", None, 1)
        k = _int_key(table, "offset", 0, 0)
        if k >= npages:
            raise ValueError(f"offset {k} out of range 0..{npages - 1}")
        return list(range(k, npages, n))
    if "random" in table:
        if keys - {"random", "seed"}:
            raise ValueError(f"unknown keys {sorted(keys - {'random', 'seed'})} in random-selector")
        count = _int_key(table, "random", None, 0)
        seed = _int_key(table, "seed", 0, 0)
        if count > npages:
            raise ValueError(f"random count {count} exceeds the region's {npages} pages")
        return random_pages(count, seed, npages)
    raise ValueError("expected a table with 'every' (and 'offset') or 'random' (and 'seed')")


# --------------------------------------------------------------------------- parsing


class _Ctx:
    """Error context: the source name, so every message names the file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, expected: str) -> UserError:
        return UserError(f"{self.source}: {path}: {expected}")


def shipped_workloads() -> dict[str, Path]:
    """The workloads shipped in orchestrator/suites/workloads/specs/, by file stem."""
    return {p.stem: p for p in sorted(WORKLOAD_SPECS_DIR.glob("*.toml"))}


def load_workload(ref: str) -> WorkloadSpec:
    """Load a workload by path, or by the name of a shipped workload."""
    path = Path(ref)
    if path.exists() or ref.endswith(".toml") or "/" in ref:
        return load_spec(path)
    shipped = shipped_workloads()
    if ref in shipped:
        return load_spec(shipped[ref])
    raise UserError(f"{ref}: no such workload file, and not a shipped workload "
                    f"(expected one of: {', '.join(sorted(shipped))})")


def load_spec(path: Path) -> WorkloadSpec:
    """Read and validate a workload spec file (UserError if unreadable or invalid)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read workload spec: {e}") from e
    return parse_spec(text, str(path))


def parse_spec(text: str, source: str) -> WorkloadSpec:
    """Parse and validate TOML text; `source` names it in error messages."""
    ctx = _Ctx(source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ctx.fail("(toml)", f"not valid TOML: {e}") from e
    _no_unknown(ctx, doc, "",
                {"format", "name", "description", "since", "settings", "regions", "steps"})
    if doc.get("format") != FORMAT_VERSION:
        raise ctx.fail("format", f"expected format = {FORMAT_VERSION}, got {doc.get('format')!r}")
    name = _get_str(ctx, doc, "name", "name", required=True)
    if not _NAME_RE.match(name):
        raise ctx.fail("name", f"expected [a-z0-9][a-z0-9._-]*, got {name!r}")
    description = _get_str(ctx, doc, "description", "description", default="")
    since = doc.get("since")
    if since is not None and not (isinstance(since, str) and _SINCE_RE.match(since)):
        raise ctx.fail("since", f"expected a kernel version MAJOR.MINOR such as \"7.2\", "
                                f"got {since!r}")
    settings = dict(DEFAULT_SETTINGS)
    settings.update(_parse_settings(ctx, doc.get("settings", {}), "settings"))
    regions = _parse_regions(ctx, doc.get("regions"))
    steps = _parse_steps(ctx, doc.get("steps"), {r.name: r for r in regions})
    return WorkloadSpec(name, description, settings, regions, steps, source, since)


def _version_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _no_unknown(ctx: _Ctx, table: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for k in table:
        if k not in allowed:
            where = f"{path}.{k}" if path else k
            raise ctx.fail(where, f"unknown key; expected one of {sorted(allowed)}")


def _get_str(ctx: _Ctx, table: Mapping[str, Any], key: str, path: str, *,
             required: bool = False, default: str | None = None,
             choices: tuple[str, ...] | None = None) -> str:
    if key not in table:
        if required or default is None:
            within = f" in {list(choices)}" if choices else ""
            raise ctx.fail(path, f"missing; expected a string{within}")
        return default
    v = table[key]
    if not isinstance(v, str):
        raise ctx.fail(path, f"expected a string, got {type(v).__name__} {v!r}")
    if choices is not None and v not in choices:
        raise ctx.fail(path, f"expected one of {list(choices)}, got {v!r}")
    return v


def _get_int(ctx: _Ctx, table: Mapping[str, Any], key: str, path: str, lo: int,
             hi: int | None = None, default: int | None = None) -> int:
    if key not in table:
        if default is None:
            raise ctx.fail(path, f"missing; expected an integer >= {lo}")
        return default
    v = table[key]
    rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.fail(path, f"expected an integer {rng}, got {type(v).__name__} {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise ctx.fail(path, f"expected an integer {rng}, got {v}")
    return v


def _parse_settings(ctx: _Ctx, table: Any, path: str) -> dict[str, str | int]:
    if not isinstance(table, Mapping):
        raise ctx.fail(path, f"expected a table of sysfs knobs, got {type(table).__name__}")
    _no_unknown(ctx, table, path, set(_KNOBS))
    out: dict[str, str | int] = {}
    for k in table:
        rule = _KNOBS[k]
        if isinstance(rule[0], str):
            out[k] = _get_str(ctx, table, k, f"{path}.{k}", choices=rule)  # type: ignore[arg-type]
        else:
            lo, hi = rule  # type: ignore[misc]
            out[k] = _get_int(ctx, table, k, f"{path}.{k}", lo, hi)
    return out


def _parse_regions(ctx: _Ctx, regions: Any) -> tuple[Region, ...]:
    if not isinstance(regions, list) or not regions:
        raise ctx.fail("regions", "expected at least one [[regions]] table")
    out: list[Region] = []
    for i, t in enumerate(regions):
        p = f"regions[{i}]"
        if not isinstance(t, Mapping):
            raise ctx.fail(p, "expected a table")
        _no_unknown(ctx, t, p, {"name", "pmds", "pages", "offset_pages", "prot"})
        name = _get_str(ctx, t, "name", f"{p}.name", required=True)
        if not _REGION_RE.match(name):
            raise ctx.fail(f"{p}.name", f"expected [A-Za-z0-9_]+, got {name!r}")
        if any(r.name == name for r in out):
            raise ctx.fail(f"{p}.name", f"duplicate region name {name!r}")
        if ("pmds" in t) == ("pages" in t):
            raise ctx.fail(p, "expected exactly one of 'pmds' (2 MiB units) or 'pages' (4 KiB)")
        if "pmds" in t:
            pages = _get_int(ctx, t, "pmds", f"{p}.pmds", 1, MAX_TOTAL_PAGES // PMD_PAGES)
            pages *= PMD_PAGES
        else:
            pages = _get_int(ctx, t, "pages", f"{p}.pages", 1, MAX_TOTAL_PAGES)
        off = _get_int(ctx, t, "offset_pages", f"{p}.offset_pages", 0, PMD_PAGES - 1, default=0)
        prot = _get_str(ctx, t, "prot", f"{p}.prot", default="rw", choices=("rw", "r"))
        out.append(Region(name, pages, off, prot))
    total = sum(r.pages for r in out)
    if total > MAX_TOTAL_PAGES:
        raise ctx.fail("regions", f"{total} pages in all regions together; expected at most "
                       f"{MAX_TOTAL_PAGES} ({MAX_TOTAL_PAGES * PAGE_SIZE >> 30} GiB)")
    return tuple(out)


def check_fits(spec: WorkloadSpec, memory_mb: int) -> None:
    """UserError (file and key) when the workload's regions exceed the guest's memory."""
    total_mb = sum(r.pages for r in spec.regions) * PAGE_SIZE / (1 << 20)
    if total_mb > memory_mb:
        raise UserError(f"{spec.source}: regions: {total_mb:.0f} MiB of regions do not fit "
                        f"in the guest's {memory_mb} MiB of memory")


# op -> (allowed keys besides op/proc, takes a region)
_OP_KEYS: dict[str, tuple[set[str], bool]] = {
    "touch": ({"region", "pages", "access"}, True),
    "madvise": ({"region", "pages", "advice", "expect"}, True),
    "mprotect": ({"region", "pages", "prot"}, True),
    "munmap": ({"region", "pages"}, True),
    "fork": (set(), False),
    "set": ({"set"}, False),
    "wait_scans": ({"count", "timeout_s", "label"}, False),
    "checkpoint": ({"label"}, False),
    "sleep": ({"ms"}, False),
}


@dataclass
class _MemState:
    """Per-process, per-region mapped/prot state, used to reject impossible touches."""

    mapped: dict[str, bytearray]
    writable: dict[str, bytearray]


def _parse_steps(ctx: _Ctx, steps: Any, regions: dict[str, Region]) -> tuple[Step, ...]:
    if not isinstance(steps, list) or not steps:
        raise ctx.fail("steps", "expected at least one [[steps]] table")
    parent = _MemState(
        {n: bytearray([1]) * r.pages for n, r in regions.items()},
        {n: bytearray([r.prot == "rw"]) * r.pages for n, r in regions.items()},
    )
    mem: dict[str, _MemState] = {"parent": parent}
    labels: set[str] = set()
    out: list[Step] = []
    for i, t in enumerate(steps):
        p = f"steps[{i}]"
        if not isinstance(t, Mapping):
            raise ctx.fail(p, "expected a table")
        op = _get_str(ctx, t, "op", f"{p}.op", required=True, choices=OPS)
        keys, has_region = _OP_KEYS[op]
        _no_unknown(ctx, t, p, keys | {"op", "proc"})
        proc = _get_str(ctx, t, "proc", f"{p}.proc", default="parent", choices=PROCS)
        if proc not in mem:
            raise ctx.fail(f"{p}.proc",
                           "expected 'parent': 'child' is only valid after a fork step")
        step = _parse_step(ctx, t, p, op, proc, has_region, regions, i)
        _track(ctx, step, p, regions, mem)
        if step.label is not None:
            if step.label in labels:
                raise ctx.fail(f"{p}.label", f"duplicate checkpoint label {step.label!r}")
            labels.add(step.label)
        out.append(step)
    return tuple(out)


def _parse_step(ctx: _Ctx, t: Mapping[str, Any], p: str, op: str, proc: str,
                has_region: bool, regions: dict[str, Region], i: int) -> Step:
    args: dict[str, Any] = {}
    region = None
    if has_region:
        region = _get_str(ctx, t, "region", f"{p}.region", required=True)
        if region not in regions:
            raise ctx.fail(f"{p}.region",
                           f"unknown region {region!r}; expected one of {sorted(regions)}")
        sel = t.get("pages", "all")
        try:
            select_pages(sel, regions[region].pages)
        except ValueError as e:
            n = regions[region].pages
            raise ctx.fail(f"{p}.pages", f"{e} (region {region!r} has {n} pages)") from e
        args["pages"] = MappingProxyType(dict(sel)) if isinstance(sel, Mapping) else sel
    if op == "touch":
        args["access"] = _get_str(ctx, t, "access", f"{p}.access", default="write",
                                  choices=("write", "read"))
    elif op == "madvise":
        args["advice"] = _get_str(ctx, t, "advice", f"{p}.advice", required=True, choices=ADVICES)
        if "expect" in t:
            exp = _get_str(ctx, t, "expect", f"{p}.expect")
            is_errno = exp.startswith("E") and isinstance(getattr(errno, exp, None), int)
            if exp != "ok" and not is_errno:
                raise ctx.fail(f"{p}.expect",
                               f"expected 'ok' or an errno name like 'EINVAL', got {exp!r}")
            args["expect"] = exp
    elif op == "mprotect":
        args["prot"] = _get_str(ctx, t, "prot", f"{p}.prot", required=True, choices=("r", "rw"))
    elif op == "set":
        if "set" not in t or not t["set"]:
            raise ctx.fail(f"{p}.set", "expected a non-empty table of sysfs knobs")
        args["set"] = MappingProxyType(_parse_settings(ctx, t["set"], f"{p}.set"))
    elif op == "wait_scans":
        args["count"] = _get_int(ctx, t, "count", f"{p}.count", 1, MAX_SCAN_COUNT)
        to = t.get("timeout_s", 30)
        if isinstance(to, bool) or not isinstance(to, int | float) or not math.isfinite(to) \
                or not 0 < to <= MAX_WAIT_S:
            raise ctx.fail(f"{p}.timeout_s",
                           f"expected a finite number in (0, {MAX_WAIT_S}], got {to!r}")
        args["timeout_s"] = to
    elif op == "sleep":
        args["ms"] = _get_int(ctx, t, "ms", f"{p}.ms", 0, MAX_SLEEP_MS)
    if op in CHECKPOINT_OPS:
        args["label"] = _get_str(ctx, t, "label", f"{p}.label", default=f"step{i}")
    return Step(op, proc, region, MappingProxyType(args))


def _track(ctx: _Ctx, step: Step, p: str, regions: dict[str, Region],
           mem: dict[str, _MemState]) -> None:
    """Follow mapping/protection per process so impossible touches are input errors."""
    if step.op == "fork":
        if step.proc != "parent" or "child" in mem:
            raise ctx.fail(f"{p}.op", "expected at most one fork, made by the parent")
        par = mem["parent"]
        mem["child"] = _MemState({k: bytearray(v) for k, v in par.mapped.items()},
                                 {k: bytearray(v) for k, v in par.writable.items()})
        return
    if step.region is None:
        return
    st = mem[step.proc]
    pages = select_pages(step.args["pages"], regions[step.region].pages)
    mapped, writable = st.mapped[step.region], st.writable[step.region]
    if step.op == "touch":
        for i in pages:
            if not mapped[i]:
                raise ctx.fail(f"{p}.pages",
                               f"page {i} of region {step.region!r} is unmapped here")
            if step.args["access"] == "write" and not writable[i]:
                raise ctx.fail(f"{p}.access",
                               f"page {i} of region {step.region!r} is read-only here")
    elif step.op == "mprotect":
        for i in pages:
            writable[i] = step.args["prot"] == "rw"
    elif step.op == "munmap":
        for i in pages:
            mapped[i] = 0
