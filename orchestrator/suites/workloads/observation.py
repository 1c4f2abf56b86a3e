"""What the workload driver saw: dataclasses and the parser of its JSON-lines output.

The driver (`orchestrator/driver/thpwork.c`) prints one JSON object per line.
The guest is untrusted input: `parse_driver_output` never raises on garbage;
a line it cannot use is kept in `Observation.unparsed` (with the reason), and a
run without the final ``end`` event is marked ``complete = False``.

Event shapes (all carry ``event``; most carry ``time_ns``, CLOCK_MONOTONIC):

* ``start``: pid, regions, steps, no_sysfs
* ``setting``: step (-1 = initial settings), path, value, errno, skipped
* ``trace``: enabled, events, already_on, errno;  ``trace_saved``: path, ok
* ``region``: region (index), start, pages
* ``checkpoint``: step (-1 = baseline), counters {name: int}, procs [{proc, pid,
  regions [{region, start, vmas [[start, end, rss, swap, ahp, eligible, flags]],
  pmd_method, huge_pmds [k], zero_pmds [k], folios [[page, kB]] | null}]}]
* ``step``: step, proc, op, region, calls [[first_page, last_page, ret, errno]]
* ``fork``: step, child_pid;  ``wait``: step, start, target, reached, timed_out, elapsed_ms
* ``pfns``: step, proc, region, runs [[page, pfn, count]]
* ``beacon``: proc, pid, ret, errno: a MADV_COLLAPSE on an empty PMD whose trace
  event (from this pid) names the process's mm; see trace.py
* ``error``: line, message;  ``end``: child_status, restored

PMD index k of a region is the k-th 2 MiB block counted from the region's start
rounded down to 2 MiB (so with offset_pages > 0, block 0 is partly outside it).
"""

from __future__ import annotations

import errno as errno_mod
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.spec import PAGE_SIZE, PMD_SIZE, WorkloadSpec

log = logging.getLogger(__name__)

BASELINE_LABEL = "@start"


@dataclass(frozen=True)
class Vma:
    """One /proc/PID/smaps block overlapping a region (sizes in kB)."""

    start: int
    end: int
    rss_kb: int
    swap_kb: int
    anon_huge_kb: int
    thp_eligible: bool
    flags: tuple[str, ...]


@dataclass(frozen=True)
class RegionSample:
    """A region as one process saw it at a checkpoint."""

    region: str
    start: int
    vmas: tuple[Vma, ...]
    huge_pmds: tuple[int, ...]
    zero_pmds: tuple[int, ...]
    pmd_method: str
    # PTE-mapped large folios (page index, kB) from pagemap + kpageflags; None: not read
    folios: tuple[tuple[int, int], ...] | None = None

    @property
    def anon_huge_kb(self) -> int:
        return sum(v.anon_huge_kb for v in self.vmas)

    @property
    def rss_kb(self) -> int:
        return sum(v.rss_kb for v in self.vmas)

    @property
    def swap_kb(self) -> int:
        return sum(v.swap_kb for v in self.vmas)

    def pmd_address(self, k: int) -> int:
        """Virtual address of PMD block k of this region."""
        return (self.start // PMD_SIZE + k) * PMD_SIZE


@dataclass(frozen=True)
class Checkpoint:
    """Counters (absolute, and deltas from the baseline) and per-process regions."""

    label: str
    step: int
    time_ns: int
    counters: dict[str, int]
    deltas: dict[str, int]
    procs: dict[str, dict[str, RegionSample]]
    pids: dict[str, int]
    consistent: bool = True  # no collapse moved the counters while it was read
    reads: int = 1  # how many reads the driver took to get one consistent observation


@dataclass(frozen=True)
class Call:
    """One syscall of a step, on pages first..last (region-relative)."""

    first: int
    last: int
    ret: int
    errno: int


@dataclass(frozen=True)
class StepResult:
    """The outcome of one step: "ok", an errno name, or "timeout" (wait_scans)."""

    step: int
    op: str
    proc: str
    result: str
    calls: tuple[Call, ...] = ()
    expected: str | None = None
    time_ns: int = 0
    region: str | None = None


@dataclass(frozen=True)
class PfnMap:
    """Present pages of one process/region as runs (page, pfn, count), taken before a step."""

    step: int
    time_ns: int
    proc: str
    region: str
    runs: tuple[tuple[int, int, int], ...]


@dataclass
class Observation:
    """Everything one driver run reported. `beacons`: proc -> (pid, time_ns)."""

    spec_name: str = ""
    checkpoints: list[Checkpoint] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    settings: list[dict[str, Any]] = field(default_factory=list)
    regions: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    pfn_maps: list[PfnMap] = field(default_factory=list)
    beacons: dict[str, tuple[int, int]] = field(default_factory=dict)
    trace_enabled: bool = False
    trace_events: int = 0  # the trace events the driver found and enabled
    trace_already_on: int = 0  # of them, on before it (the boot line's trace_event=)
    trace_saved: bool = False
    complete: bool = False
    end_ns: int = 0  # time of the ``end`` event (0 if it had none)
    errors: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    #: wait_scans step -> full_scans when it began, relative to the baseline checkpoint
    wait_starts: dict[int, int] = field(default_factory=dict)

    def checkpoint_passes(self) -> dict[int, int]:
        """Checkpoint step -> full_scans delta the driver read there (pass alignment)."""
        return {c.step: c.deltas["full_scans"] for c in self.checkpoints
                if c.step >= 0 and "full_scans" in c.deltas}

    def next_record_ns(self, step: int) -> int | None:
        """The driver's first timestamp after everything it did for `step` (the first
        record of a later step, or the end), or None: what `step` did was over by then."""
        later = [s.time_ns for s in self.steps if s.step > step and s.time_ns]
        later += [m.time_ns for m in self.pfn_maps if m.step > step and m.time_ns]
        later += [c.time_ns for c in self.checkpoints if c.step > step]
        later += [self.end_ns] if self.end_ns else []
        return min(later) if later else None

    def step_times(self) -> dict[int, tuple[int, int]]:
        """Spec step -> (a timestamp taken before it began, one taken after it was over),
        CLOCK_MONOTONIC ns: the latest record of an earlier step (or the step's own
        pre-step pagemap snapshot) and `next_record_ns`. Steps the driver never
        reached, or with nothing recorded on either side, are left out."""
        before = [(s.step + 1, s.time_ns) for s in self.steps if s.time_ns]
        before += [(c.step + 1, c.time_ns) for c in self.checkpoints]
        before += [(m.step, m.time_ns) for m in self.pfn_maps if m.time_ns]
        done = {s.step for s in self.steps} | {c.step for c in self.checkpoints if c.step >= 0}
        out: dict[int, tuple[int, int]] = {}
        for i in sorted(done):
            start = max((t for j, t in before if j <= i), default=None)
            end = self.next_record_ns(i)
            if start is not None and end is not None:
                out[i] = (start, end)
        return out

    def checkpoint(self, label: str) -> Checkpoint | None:
        """The checkpoint called `label`, or None."""
        return next((c for c in self.checkpoints if c.label == label), None)

    def step_result(self, step: int) -> StepResult | None:
        """The result of spec step `step` (None for checkpoints and steps never run)."""
        return next((s for s in self.steps if s.step == step), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for observed.json (with per-region totals spelled out)."""
        d = asdict(self)
        for cp_dict, cp in zip(d["checkpoints"], self.checkpoints, strict=True):
            for proc, regions in cp.procs.items():
                for name, rs in regions.items():
                    cp_dict["procs"][proc][name].update(
                        anon_huge_kb=rs.anon_huge_kb, rss_kb=rs.rss_kb, swap_kb=rs.swap_kb)
        return d


class _Bad(Exception):
    """A driver line with an unexpected shape."""


def _int(d: Any, key: str, lo: int = -(2**63), hi: int = 2**64) -> int:
    if not isinstance(d, dict):
        raise _Bad(f"expected an object around {key!r}")
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Bad(f"{key!r}: expected an integer in {lo}..{hi}, got {v!r}")
    return v


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise _Bad(f"{key!r}: expected a string, got {v!r}")
    return v


def _list(d: Any, key: str | None = None) -> list[Any]:
    v = d.get(key) if key is not None and isinstance(d, dict) else d
    if not isinstance(v, list):
        raise _Bad(f"{key or 'value'}: expected a list, got {type(v).__name__}")
    return v


def errno_name(num: int) -> str:
    """EINVAL for 22; "E<num>" for numbers Python does not know."""
    return errno_mod.errorcode.get(num, f"E{num}")


class _Names:
    """Region names, checkpoint labels and expectations from the spec (or generic ones)."""

    def __init__(self, spec: WorkloadSpec | None) -> None:
        self.spec = spec

    def region(self, idx: int) -> str:
        if self.spec is not None:
            if not 0 <= idx < len(self.spec.regions):
                raise _Bad(f"region index {idx} not in the spec")
            return self.spec.regions[idx].name
        return f"region{idx}"

    def label(self, step: int) -> str:
        if step < 0:
            return BASELINE_LABEL
        if self.spec is not None and step < len(self.spec.steps):
            label = self.spec.steps[step].label
            if label is not None:
                return label
        return f"step{step}"

    def expect(self, step: int) -> str | None:
        if self.spec is not None and 0 <= step < len(self.spec.steps):
            exp = self.spec.steps[step].args.get("expect")
            return exp if isinstance(exp, str) else None
        return None


def _vma(v: Any) -> Vma:
    items = _list(v)
    if len(items) != 7 or not isinstance(items[6], str):
        raise _Bad(f"vma: expected 6 numbers and a flags string, got {items!r}")
    nums = [_int({"n": x}, "n", 0) for x in items[:6]]
    return Vma(nums[0], nums[1], nums[2], nums[3], nums[4], bool(nums[5]),
               tuple(items[6].split()))


def _pmd_list(d: dict[str, Any], key: str) -> tuple[int, ...]:
    return tuple(_int({"k": k}, "k", 0, 2**40) for k in _list(d, key))


def _region_sample(r: Any, names: _Names) -> RegionSample:
    if not isinstance(r, dict):
        raise _Bad("region sample: expected an object")
    return RegionSample(
        region=names.region(_int(r, "region", 0, 4096)),
        start=_int(r, "start", 0),
        vmas=tuple(_vma(v) for v in _list(r, "vmas")),
        huge_pmds=_pmd_list(r, "huge_pmds"),
        zero_pmds=_pmd_list(r, "zero_pmds"),
        pmd_method=_str(r, "pmd_method"),
        folios=_folios(r),
    )


def _folios(r: dict[str, Any]) -> tuple[tuple[int, int], ...] | None:
    """The driver's [page, kB] large folios, without PMD-mapped THPs (in huge_pmds)."""
    raw = r.get("folios")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _Bad("region sample: 'folios' is not a list")
    offset = _int(r, "start", 0) % PMD_SIZE // PAGE_SIZE
    huge = set(_pmd_list(r, "huge_pmds"))
    out = []
    for f in raw:
        if not (isinstance(f, list) and len(f) == 2 and all(isinstance(x, int) for x in f)):
            raise _Bad(f"region sample: folio {f!r} is not [page, kB]")
        page, kb = f
        if kb == PMD_SIZE // 1024 and (offset + page) % 512 == 0 \
                and (offset + page) // 512 in huge:
            continue
        out.append((page, kb))
    return tuple(out)


def _checkpoint(ev: dict[str, Any], names: _Names, base: dict[str, int] | None) -> Checkpoint:
    raw = ev.get("counters")
    if not isinstance(raw, dict):
        raise _Bad("checkpoint: 'counters' is not an object")
    counters = {str(k): _int(raw, k, 0) for k in raw}
    base = counters if base is None else base
    deltas = {k: v - base[k] for k, v in counters.items() if k in base}
    procs: dict[str, dict[str, RegionSample]] = {}
    pids: dict[str, int] = {}
    for p in _list(ev, "procs"):
        if not isinstance(p, dict):
            raise _Bad("checkpoint: proc entry is not an object")
        proc = _str(p, "proc")
        pids[proc] = _int(p, "pid", 0)
        samples = [_region_sample(r, names) for r in _list(p, "regions")]
        procs[proc] = {s.region: s for s in samples}
    step = _int(ev, "step", -1)
    return Checkpoint(names.label(step), step, _int(ev, "time_ns", 0), counters, deltas,
                      procs, pids, ev.get("consistent") is not False,
                      _int(ev, "reads", 1) if "reads" in ev else 1)


def _step_result(ev: dict[str, Any], names: _Names) -> StepResult:
    step = _int(ev, "step", 0)
    calls = []
    for c in _list(ev, "calls") if "calls" in ev else []:
        f = _list(c)
        if len(f) != 4:
            raise _Bad(f"call: expected [first, last, ret, errno], got {f!r}")
        n = [_int({"n": x}, "n") for x in f]
        calls.append(Call(*n))
    failed = next((c for c in calls if c.ret != 0), None)
    result = "ok" if failed is None else errno_name(failed.errno)
    proc = ev.get("proc", "parent")
    region = names.region(_int(ev, "region", 0, 4096)) if "region" in ev else None
    return StepResult(step, _str(ev, "op"), proc if isinstance(proc, str) else "parent",
                      result, tuple(calls), names.expect(step), _int(ev, "time_ns", 0), region)


def _pfn_map(ev: dict[str, Any], names: _Names) -> PfnMap:
    runs = []
    for r in _list(ev, "runs"):
        f = _list(r)
        if len(f) != 3:
            raise _Bad(f"pfn run: expected [page, pfn, count], got {f!r}")
        runs.append(tuple(_int({"n": x}, "n", 0) for x in f))
    return PfnMap(_int(ev, "step", -1), _int(ev, "time_ns", 0), _str(ev, "proc"),
                  names.region(_int(ev, "region", 0, 4096)), tuple(runs))  # type: ignore[arg-type]


def _setting_step(obs: Observation, ev: dict[str, Any]) -> None:
    """Fold a mid-workload `set` write into that step's result (first failure wins)."""
    step, err = _int(ev, "step", -1), _int(ev, "errno", 0)
    if step < 0:
        return
    prev = next((s for s in obs.steps if s.step == step), None)
    result = errno_name(err) if err else "ok"
    if prev is None:
        obs.steps.append(StepResult(step, "set", "parent", result, (), None,
                                    _int(ev, "time_ns", 0)))
    elif prev.result == "ok" and err:
        obs.steps[obs.steps.index(prev)] = StepResult(step, "set", "parent", result, (), None,
                                                      prev.time_ns)


def _apply(obs: Observation, ev: dict[str, Any], names: _Names) -> None:
    kind = ev.get("event")
    if kind == "checkpoint":
        base = obs.checkpoints[0].counters if obs.checkpoints else None
        cp = _checkpoint(ev, names, base)
        obs.checkpoints.append(cp)
        obs.pids.update(cp.pids)
    elif kind == "step":
        obs.steps.append(_step_result(ev, names))
    elif kind == "wait":
        timed_out = ev.get("timed_out") is True
        fs0 = obs.checkpoints[0].counters.get("full_scans") if obs.checkpoints else None
        if fs0 is not None and isinstance(ev.get("start"), int):
            obs.wait_starts[_int(ev, "step", 0)] = _int(ev, "start", 0) - fs0
        obs.steps.append(StepResult(_int(ev, "step", 0), "wait_scans", "parent",
                                    "timeout" if timed_out else "ok", (), None,
                                    _int(ev, "time_ns", 0)))
    elif kind == "fork":
        obs.pids["child"] = _int(ev, "child_pid", 1)
        obs.steps.append(StepResult(_int(ev, "step", 0), "fork", "parent", "ok", (), None,
                                    _int(ev, "time_ns", 0)))
    elif kind == "setting":
        obs.settings.append({"step": _int(ev, "step", -1), "path": _str(ev, "path"),
                             "value": _str(ev, "value"), "errno": _int(ev, "errno", 0),
                             "skipped": ev.get("skipped") is True})
        _setting_step(obs, ev)
    else:
        _apply_misc(obs, ev, kind, names)


def _apply_misc(obs: Observation, ev: dict[str, Any], kind: Any, names: _Names) -> None:
    if kind == "start":
        obs.pids["parent"] = _int(ev, "pid", 1)
    elif kind == "region":
        obs.regions[names.region(_int(ev, "region", 0, 4096))] = _int(ev, "start", 0)
    elif kind == "pfns":
        obs.pfn_maps.append(_pfn_map(ev, names))
    elif kind == "beacon":
        obs.beacons[_str(ev, "proc")] = (_int(ev, "pid", 0), _int(ev, "time_ns", 0))
    elif kind == "trace":
        obs.trace_enabled = ev.get("enabled") is True
        # both absent when the kernel has no huge_memory events; already_on absent from
        # drivers older than the boot-line events
        obs.trace_events, obs.trace_already_on = (
            _int(ev, k, 0, 64) if k in ev else 0 for k in ("events", "already_on"))
    elif kind == "trace_saved":
        obs.trace_saved = ev.get("ok") is True
    elif kind == "error":
        obs.errors.append(f"line {ev.get('line')!r}: {ev.get('message')!r}")
    elif kind == "end":
        obs.complete = True
        t = ev.get("time_ns")
        obs.end_ns = t if isinstance(t, int) and not isinstance(t, bool) and t >= 0 else 0
    else:
        raise _Bad(f"unknown event {kind!r}")


def parse_driver_output(text: str, spec: WorkloadSpec | None = None) -> Observation:
    """Parse the driver's stdout into an Observation; never raises on bad input.

    With `spec`, region indices become region names and step indices checkpoint
    labels and madvise expectations; without it they read "region<i>"/"step<i>".
    """
    obs = Observation(spec_name=spec.name if spec else "")
    names = _Names(spec)
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
            if not isinstance(ev, dict):
                raise _Bad("not a JSON object")
            _apply(obs, ev, names)
        except (ValueError, _Bad, RecursionError) as e:
            obs.unparsed.append(f"{e}: {line[:200]}")
    obs.steps.sort(key=lambda s: s.step)
    return obs


def page_address(start: int, page: int) -> int:
    """Address of page `page` of a region starting at `start`."""
    return start + page * PAGE_SIZE


def load_observation(run_dir: Path, spec: WorkloadSpec) -> Observation:
    """Re-parse a run directory's driver.jsonl (for offline `thpvm compare`)."""
    path = run_dir / "driver.jsonl"
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise UserError(f"{path}: cannot read the driver output: {e}") from e
    return parse_driver_output(text, spec)
