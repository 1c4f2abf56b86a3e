"""Model prediction vs driver observation: a verdict with a plain explanation.

The model (`orchestrator.model.predict`) enumerates *schedules*: resolutions of
the nondeterminism it cannot decide (a first pass lost to mmap_lock contention,
a pass running before or after a step, ...). At each checkpoint it lists the
admissible outcomes and the schedules that produce them. One schedule is one
*path*; the workload matches if some path has, at every checkpoint, an outcome
that equals the observation. Values are compared exactly (an integer, or an
inclusive range ``{"min": a, "max": b|None}`` if the model gives one); nothing
is widened here.

`normalize_prediction` turns the model's Prediction (or its JSON, predicted.json)
into one alternative per (checkpoint, outcome, schedule)::

    {"checkpoints": [{"label": str, "alternatives": [
        {"name": "schedule 3", "choices": [str], "reasons": [str],
         "counters": {counter: value},                   # deltas since the baseline
         "regions": {"a" | "child:a": {"AnonHugePages"|"Rss"|"Swap": kB}},
         "huge_pmds": {"a" | "child:a": [k, ...]},       # PMD indices from the aligned base
         "results": {step: "ok" | "EINVAL" | ...},       # syscall results so far
         "timed_out": bool,                              # the wait_scans step timed out
         "decisions": [{"proc", "by", "address", "result", ...}],  # since the last checkpoint
         "time_ms": int,                                 # model time of the read
         "log": [decision, ...],                         # the schedule's whole decision log
         "cuts": [int, ...]}]}]}                         # log[:cut] came before the read

Region keys: the parent's regions by name, the child's as ``child:<name>``.

With a kernel trace (`scans`), each alternative must also agree with the
kernel's per-PMD scan events: see `pmd_compare` for the exact rule.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cache import write_json
from orchestrator.errors import UserError
from orchestrator.judge import pmd as pmd_compare
from orchestrator.judge.pmd import KernelScans, ModelStreams
from orchestrator.spec import PMD_SIZE, WorkloadSpec
from orchestrator.suites.workloads.observation import (
    BASELINE_LABEL,
    Checkpoint,
    Observation,
    RegionSample,
)
from orchestrator.suites.workloads.trace import PmdScan

log = logging.getLogger(__name__)

Value = int | Mapping[str, int | None]

#: observed per-region fields the model may predict (kB unless noted)
REGION_FIELDS: dict[str, Callable[[RegionSample], int]] = {
    "AnonHugePages": lambda r: r.anon_huge_kb,
    "Rss": lambda r: r.rss_kb,
    "RssAnon": lambda r: r.rss_kb,  # the regions are private anonymous: Rss == anon Rss
    "Swap": lambda r: r.swap_kb,
    "huge_pmds": lambda r: len(r.huge_pmds),  # number of PMD-mapped THPs
}


@dataclass
class Verdict:
    """status: "match" | "mismatch" | "error"; details: one dict per difference."""

    status: str
    explanation: str
    details: list[dict[str, Any]] = field(default_factory=list)
    chosen_alternative: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- values


def value_range(v: Any) -> tuple[int, int | None]:
    """(min, max) of a predicted value; ValueError if it is neither int nor range."""
    if isinstance(v, bool):
        raise ValueError(f"predicted value {v!r} is not an integer or range")
    if isinstance(v, int):
        return v, v
    if isinstance(v, Mapping) and isinstance(v.get("min"), int):
        hi = v.get("max")
        if hi is None or isinstance(hi, int):
            return int(v["min"]), hi
    raise ValueError(f"predicted value {v!r} is not an integer or {{min, max}}")


def fits(predicted: Any, observed: int) -> bool:
    """Does `observed` equal (or lie inside) the predicted value?"""
    lo, hi = value_range(predicted)
    return lo <= observed and (hi is None or observed <= hi)


def show(predicted: Any) -> str:
    """'3', '2..4' or '>=2'."""
    lo, hi = value_range(predicted)
    return f">={lo}" if hi is None else str(lo) if lo == hi else f"{lo}..{hi}"


# --------------------------------------------------------------------------- normalising


def _plain(obj: Any) -> Any:
    for method in ("to_json", "to_dict"):
        if hasattr(obj, method):
            return getattr(obj, method)()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


_SMAPS_NAMES = {"anon_huge_kb": "AnonHugePages", "rss_kb": "Rss", "swap_kb": "Swap"}


def _region_key(proc: str, name: str) -> str:
    return name if proc == "parent" else f"{proc}:{name}"


def _outcome_alternative(outcome: Mapping[str, Any], schedule: Mapping[str, Any],
                         t_prev: int) -> dict[str, Any]:
    """One model outcome as seen on one schedule (see the module docstring)."""
    regions: dict[str, dict[str, Any]] = {}
    huge: dict[str, list[int]] = {}
    for proc, per_region in (outcome.get("regions") or {}).items():
        for name, st in per_region.items():
            key = _region_key(proc, name)
            regions[key] = {_SMAPS_NAMES[k]: v for k, v in st.items() if k in _SMAPS_NAMES}
            huge[key] = list(st.get("huge_pmds", []))
    t = outcome.get("time_ms", 0)
    decisions = [d for d in schedule.get("decisions", [])
                 if t_prev < d.get("time_ms", 0) <= t or (t_prev == 0 == d.get("time_ms"))]
    alt = {"name": f"schedule {schedule.get('index')}", "choices": schedule.get("choices", []),
           "reasons": outcome.get("reasons", []), "counters": outcome.get("counters", {}),
           "regions": regions, "huge_pmds": huge,
           "results": {int(k): v for k, v in (outcome.get("results") or {}).items()},
           "timed_out": bool(outcome.get("timed_out")), "decisions": decisions,
           "time_ms": t, "log": schedule.get("decisions", [])}
    cuts = (outcome.get("cuts") or {}).get(str(schedule.get("index")))
    if isinstance(cuts, list):
        alt["cuts"] = cuts
    return alt


def _from_model(d: Mapping[str, Any]) -> dict[str, Any]:
    schedules = {s["index"]: s for s in d.get("schedules", [])}
    cps, t_prev = [], 0
    for cp in d["checkpoints"]:
        alts = []
        for o in cp["outcomes"]:
            for si in o.get("schedules", []):
                alts.append(_outcome_alternative(o, schedules.get(si, {"index": si}), t_prev))
        cps.append({"label": cp["label"], "alternatives": alts})
        t_prev = max([o.get("time_ms", 0) for o in cp["outcomes"]] + [t_prev])
    return {"checkpoints": cps}


def normalize_prediction(prediction: Any) -> dict[str, Any]:
    """The model's Prediction (object or its JSON) or an already normalised dict, in
    the shape of the module docstring. ValueError if it has no checkpoints."""
    d = _plain(prediction)
    if not isinstance(d, Mapping) or not isinstance(d.get("checkpoints"), list):
        raise ValueError("prediction has no 'checkpoints' list")
    for cp in d["checkpoints"]:
        if not isinstance(cp, Mapping) or not isinstance(cp.get("label"), str):
            raise ValueError(f"prediction checkpoint {cp!r:.80} has no label")
        if not isinstance(cp.get("outcomes", cp.get("alternatives")), list):
            raise ValueError(f"prediction checkpoint {cp['label']!r} has no outcomes")
    if any("outcomes" in cp for cp in d["checkpoints"]):
        return _from_model(d)
    return {"checkpoints": [{"label": cp["label"], "alternatives": list(cp["alternatives"])}
                            for cp in d["checkpoints"]]}


def observed_regions(cp: Checkpoint) -> dict[str, RegionSample]:
    """Region samples of a checkpoint keyed "a" (parent) / "child:a" (child)."""
    out: dict[str, RegionSample] = {}
    for proc, regions in cp.procs.items():
        for name, sample in regions.items():
            out[name if proc == "parent" else f"{proc}:{name}"] = sample
    return out


# --------------------------------------------------------------------------- diffing


_MTHP_STAT_RE = re.compile(r"hugepages-(\d+kB)/stats/(\w+)\Z")


def observed_counters(cp: Checkpoint) -> dict[str, int]:
    """The checkpoint's counter deltas, per-size stats under the model's names
    (``hugepages-64kB/stats/collapse_alloc`` -> ``mthp/64kB/collapse_alloc``)."""
    out = dict(cp.deltas)
    for name, v in cp.deltas.items():
        m = _MTHP_STAT_RE.match(name)
        if m:
            out[f"mthp/{m.group(1)}/{m.group(2)}"] = v
    return out


def _diff_values(alt: Mapping[str, Any], cp: Checkpoint) -> list[dict[str, Any]]:
    """Counter and region differences between one alternative and one checkpoint.
    Per-size `mthp/*` predictions are compared only when the run collected
    per-size stats (kernels before 7.2, or a driver without them, have none)."""
    diffs: list[dict[str, Any]] = []
    observed = observed_counters(cp)
    has_mthp = any(k.startswith("mthp/") for k in observed)
    for name, pv in sorted((alt.get("counters") or {}).items()):
        if name.startswith("mthp/") and not has_mthp:
            continue
        obs = observed.get(name)
        if obs is None or not fits(pv, obs):
            diffs.append({"checkpoint": cp.label, "kind": "counter", "name": name,
                          "predicted": show(pv), "observed": obs,
                          "by": None if obs is None else obs - value_range(pv)[0]})
    regions = observed_regions(cp)
    for key, fields in sorted((alt.get("regions") or {}).items()):
        sample = regions.get(key)
        for fname, pv in sorted(fields.items()):
            getter = REGION_FIELDS.get(fname)
            obs = getter(sample) if sample is not None and getter is not None else None
            if obs is None or not fits(pv, obs):
                diffs.append({"checkpoint": cp.label, "kind": "region", "region": key,
                              "name": fname, "predicted": show(pv), "observed": obs})
    for key, pmds in sorted((alt.get("huge_pmds") or {}).items()):
        sample = regions.get(key)
        got = sorted(sample.huge_pmds) if sample is not None else None
        if got != sorted(pmds):
            diffs.append({"checkpoint": cp.label, "kind": "huge_pmds", "region": key,
                          "name": "huge_pmds", "predicted": sorted(pmds), "observed": got})
    return diffs


def _diff_results(alt: Mapping[str, Any], cp: Checkpoint, obs: Observation,
                  spec: WorkloadSpec | None) -> list[dict[str, Any]]:
    """Syscall results and the wait timeout at this checkpoint vs the alternative."""
    diffs: list[dict[str, Any]] = []
    for i, want in sorted((alt.get("results") or {}).items()):
        got = obs.step_result(int(i))
        if got is None or got.result != want:
            diffs.append({"checkpoint": cp.label, "kind": "step", "step": int(i),
                          "name": _step_name(spec, int(i)), "predicted": want,
                          "observed": got.result if got else None, "source": "model"})
    wait = obs.step_result(cp.step)
    if wait is not None and wait.op == "wait_scans" and "timed_out" in alt:
        timed_out = wait.result == "timeout"
        if timed_out != bool(alt["timed_out"]):
            diffs.append({"checkpoint": cp.label, "kind": "timeout", "name": "wait_scans",
                          "predicted": bool(alt["timed_out"]), "observed": timed_out})
    return diffs


def _diff_expectations(obs: Observation, spec: WorkloadSpec | None) -> list[dict[str, Any]]:
    """madvise results against the spec's own `expect` keys."""
    diffs = []
    for s in obs.steps:
        if s.expected is not None and s.result != s.expected:
            diffs.append({"kind": "step", "step": s.step, "name": _step_name(spec, s.step),
                          "predicted": s.expected, "observed": s.result, "source": "spec"})
    return diffs


def _step_name(spec: WorkloadSpec | None, i: int) -> str:
    if spec is None or i >= len(spec.steps):
        return f"step {i}"
    s = spec.steps[i]
    extra = s.args.get("advice") or s.args.get("access") or s.args.get("prot") or ""
    who = f" ({s.proc})" if s.proc != "parent" else ""
    return f"step {i} {s.op} {extra} {s.region or ''}{who}".replace("  ", " ").strip()


def _paths(pred: Mapping[str, Any]) -> list[str]:
    """Alternative names in first-seen order (a path = one name across checkpoints)."""
    names: list[str] = []
    for cp in pred["checkpoints"]:
        for alt in cp["alternatives"]:
            if alt.get("name") not in names:
                names.append(alt.get("name"))
    return names


class _PmdCheck:
    """The per-PMD side of a comparison: the kernel's streams and each schedule's
    decision log split into streams (cached by log identity)."""

    def __init__(self, kernel: KernelScans, obs: Observation) -> None:
        self.kernel, self.obs = kernel, obs
        self._streams: dict[int, ModelStreams] = {}

    def diffs(self, alt: Mapping[str, Any], cp: Checkpoint) -> list[dict[str, Any]]:
        """Stream differences of `alt` at `cp` ([] without a decision log)."""
        log_ = alt.get("log")
        if not isinstance(log_, list):
            return []
        streams = self._streams.get(id(log_))
        if streams is None:
            streams = self._streams[id(log_)] = pmd_compare.model_streams(log_)
        return pmd_compare.checkpoint_diffs(alt, streams, self.kernel, self.obs, cp)


def _path_diffs(pred: Mapping[str, Any], obs: Observation, path: str,
                spec: WorkloadSpec | None, pmd: _PmdCheck | None = None) -> list[dict[str, Any]]:
    """Differences along one path; at each checkpoint the path's closest outcome
    counts (counters, regions, results and, with a trace, per-PMD scans)."""
    diffs: list[dict[str, Any]] = []
    seen_pmd: set[tuple[Any, ...]] = set()
    for cp_pred in pred["checkpoints"]:
        alts = [a for a in cp_pred["alternatives"] if a.get("name") == path]
        cp = obs.checkpoint(cp_pred["label"])
        if cp is None:
            diffs.append({"checkpoint": cp_pred["label"], "kind": "missing",
                          "name": "checkpoint", "predicted": "present", "observed": None})
        elif not alts:
            diffs.append({"checkpoint": cp.label, "kind": "path", "name": path,
                          "predicted": "no such alternative here", "observed": None})
        else:
            best: list[dict[str, Any]] | None = None
            for a in alts:
                d = _diff_results(a, cp, obs, spec) + _diff_values(a, cp)
                if pmd is not None:
                    d += pmd.diffs(a, cp)
                if best is None or len(d) < len(best):
                    best = d
            diffs += _new_pmd_diffs(best or [], seen_pmd)
    return diffs


def _new_pmd_diffs(diffs: list[dict[str, Any]], seen: set[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """`diffs` without the per-PMD differences already reported at an earlier
    checkpoint of the path (every checkpoint compares all scans since the start,
    so one wrong scan would otherwise be reported again at each later one)."""
    out = []
    for d in diffs:
        if d["kind"] == "pmd":
            key = (d["proc"], d["context"], d["scan"], d["observed"], d["predicted"])
            if key in seen:
                continue
            seen.add(key)
        out.append(d)
    return out


# --------------------------------------------------------------------------- PMD detail


def _scans_between(scans: list[PmdScan], obs: Observation, label: str) -> list[PmdScan]:
    idx = next((i for i, c in enumerate(obs.checkpoints) if c.label == label), None)
    if idx is None:
        return []
    t0 = obs.checkpoints[idx - 1].time_ns if idx > 0 else 0
    t1 = obs.checkpoints[idx].time_ns
    return [s for s in scans if t0 <= s.event.time_ns <= t1]


def _reasoning(d: Mapping[str, Any]) -> str:
    keys = ("none_or_zero", "unmapped", "shared", "referenced", "writable")
    counts = ", ".join(f"{k}={d[k]}" for k in keys if k in d)
    return f"{d.get('result')}" + (f" ({counts})" if counts else "")


def _kernel_reasoning(s: PmdScan) -> str:
    f = s.event.fields
    keys = ("none_or_zero", "unmapped", "referenced", "writable")
    counts = ", ".join(f"{k}={f[k]}" for k in keys if k in f)
    return f"{s.status} ({counts})"


def pmd_details(diff: Mapping[str, Any], alt: Mapping[str, Any], obs: Observation,
                scans: list[PmdScan]) -> list[dict[str, Any]]:
    """For a region/counter difference: PMDs where the kernel's last status in the
    checkpoint interval differs from the model's last decision for that address."""
    label = diff.get("checkpoint")
    if not isinstance(label, str):
        return []
    key = diff.get("region")
    proc, _, rname = key.partition(":") if key and ":" in key else ("parent", "", key)
    kernel: dict[int, PmdScan] = {}
    for s in _scans_between(scans, obs, label):
        if s.address is not None and (rname is None or (s.region == rname and s.proc == proc)):
            kernel[s.address] = s
    model: dict[int, Mapping[str, Any]] = {}
    for d in alt.get("decisions") or []:
        if isinstance(d.get("address"), int) and (rname is None or d.get("proc") == proc):
            model[d["address"] // PMD_SIZE * PMD_SIZE] = d
    out = []
    for addr in sorted(set(kernel) | set(model)):
        k, m = kernel.get(addr), model.get(addr)
        if k is not None and m is not None and k.status == m.get("result"):
            continue
        if k is None and (m is None or rname is None):
            continue
        out.append({"address": f"{addr:#x}", "region": k.region if k else rname,
                    "pmd": k.pmd if k else None, "proc": k.proc if k else proc,
                    "kernel": _kernel_reasoning(k) if k else "no scan traced",
                    "kernel_located_by": k.located_by if k else None,
                    "model": _reasoning(m) if m else "no decision"})
    return out


def _last_decisions(alt: Mapping[str, Any]) -> dict[tuple[str, str, int], Mapping[str, Any]]:
    """(proc, region, pmd) -> the model's last decision for it before this checkpoint."""
    out: dict[tuple[str, str, int], Mapping[str, Any]] = {}
    for d in alt.get("decisions") or []:
        if isinstance(d.get("region"), str) and isinstance(d.get("pmd"), int):
            out[(str(d.get("proc")), d["region"], d["pmd"])] = d
    return out


def state_details(diff: Mapping[str, Any], alt: Mapping[str, Any],
                  cp: Checkpoint) -> list[dict[str, Any]]:
    """Without a trace: PMDs that are PMD-mapped in the kernel but not in the model
    (or the reverse), with the model's last decision for each."""
    regions = observed_regions(cp)
    last = _last_decisions(alt)
    out = []
    for key, predicted in sorted((alt.get("huge_pmds") or {}).items()):
        if diff.get("region") not in (None, key) or key not in regions:
            continue
        sample = regions[key]
        proc, _, name = key.rpartition(":")
        proc = proc or "parent"
        for k in sorted(set(sample.huge_pmds) ^ set(predicted)):
            d = last.get((proc, name, k))
            out.append({"address": f"{sample.pmd_address(k):#x}", "region": name, "pmd": k,
                        "proc": proc,
                        "kernel": "PMD-mapped THP" if k in sample.huge_pmds else "not PMD-mapped",
                        "kernel_located_by": "pagemap",
                        "model": (_reasoning(d) if d else "no scan decision") + (
                            ", PMD-mapped THP" if k in predicted else ", not PMD-mapped")})
    return out


# --------------------------------------------------------------------------- verdict


def _describe(d: Mapping[str, Any]) -> str:
    where = f"checkpoint {d['checkpoint']!r}: " if d.get("checkpoint") else ""
    if d["kind"] == "counter":
        return f"{where}counter {d['name']} changed by {d['observed']}, model {d['predicted']}"
    if d["kind"] in ("region", "huge_pmds"):
        unit = " kB" if d["name"] in ("AnonHugePages", "Rss", "RssAnon", "Swap") else ""
        return (f"{where}region {d['region']} {d['name']} is {d['observed']}{unit}, "
                f"model {d['predicted']}{unit}")
    if d["kind"] == "step":
        return (f"{d['name']} returned {d['observed']}, "
                f"{'model' if d['source'] == 'model' else 'spec expects'} {d['predicted']}")
    if d["kind"] == "pmd":
        return pmd_compare.describe(d)
    if d["kind"] == "missing":
        return f"{where}not reported by the driver"
    return f"{where}the model has no alternative {d['name']!r} here"


def _pmd_text(pmds: list[dict[str, Any]], limit: int = 4) -> str:
    parts = [f"PMD {p['address']} ({p['proc']} {p['region']} pmd {p['pmd']}): kernel "
             f"{p['kernel']}, model {p['model']}" for p in pmds[:limit]]
    more = f"; {len(pmds) - limit} more PMDs differ" if len(pmds) > limit else ""
    return "; ".join(parts) + more


def _alt_at(pred: Mapping[str, Any], obs: Observation, label: str,
            path: str) -> Mapping[str, Any]:
    """The path's outcome at checkpoint `label` closest to the observation."""
    cp = obs.checkpoint(label)
    for cp_pred in pred["checkpoints"]:
        if cp_pred["label"] == label:
            alts = [a for a in cp_pred["alternatives"] if a.get("name") == path]
            if alts and cp is not None:
                return min(alts, key=lambda a: len(_diff_values(a, cp)))
            return alts[0] if alts else {}
    return {}


def _choices_text(pred: Mapping[str, Any], path: str) -> str:
    for cp in pred["checkpoints"]:
        for alt in cp["alternatives"]:
            if alt.get("name") == path and alt.get("choices"):
                return " (" + "; ".join(alt["choices"]) + ")"
    return ""


def _mismatch(pred: Mapping[str, Any], obs: Observation, path: str,
              diffs: list[dict[str, Any]], scans: list[PmdScan] | None) -> Verdict:
    first = diffs[0]
    text = _describe(first)
    if len(diffs) > 1:
        more = [_describe({**d, "checkpoint": None} if d.get("checkpoint") == first.get(
            "checkpoint") else d) for d in diffs[1:4]]
        text += f" (+{len(diffs) - 1} more: " + "; ".join(more) + ", ..." * (len(diffs) > 4) + ")"
    if path:
        text += f" [closest: model {path}{_choices_text(pred, path)}]"
    label = first.get("checkpoint")
    cp = obs.checkpoint(label) if isinstance(label, str) else None
    if cp is not None and first["kind"] != "pmd":
        alt = _alt_at(pred, obs, cp.label, path)
        pmds = pmd_details(first, alt, obs, scans) if scans is not None else []
        pmds = pmds or state_details(first, alt, cp)
        if pmds:
            first["pmds"] = pmds
            text += ". " + _pmd_text(pmds)
    return Verdict("mismatch", text, diffs, None)


def compare(prediction: Any, observation: Observation, spec: WorkloadSpec | None = None,
            scans: list[PmdScan] | None = None) -> Verdict:
    """Compare the model's prediction with what the driver observed.

    With `scans` (from `trace.locate_scans`; None when the kernel has no tracing)
    a path matches only if, besides counters, regions and results, the kernel's
    per-PMD scan events agree with that schedule's decision log at every
    checkpoint (`pmd_compare`); scans also add per-PMD detail to a counter or
    region mismatch. Returns "error" when the run did not finish or the
    prediction is unusable.
    """
    obs = observation
    if not obs.complete or obs.errors:
        why = "; ".join(obs.errors) or "its output ended before the 'end' event"
        return Verdict("error", f"the workload driver did not finish: {why}")
    torn = [cp.label for cp in obs.checkpoints if not cp.consistent]
    if torn:  # a reading taken mid-collapse is never compared as a state
        return Verdict("error", f"checkpoint(s) {', '.join(torn)}: no consistent reading "
                                "(a collapse moved the counters during every read)")
    pmd = _PmdCheck(pmd_compare.kernel_scans(scans, obs), obs) if scans is not None else None
    try:
        pred = normalize_prediction(prediction)
        expect_diffs = _diff_expectations(obs, spec)
        paths = _paths(pred) or [""]
        results = [(p, expect_diffs + _path_diffs(pred, obs, p, spec, pmd)) for p in paths]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return Verdict("error", f"unusable model prediction: {e}")
    for path, diffs in results:
        if not diffs:
            n = len(pred["checkpoints"])
            text = f"all {n} checkpoints fit model {path}{_choices_text(pred, path)}"
            if pmd is not None:
                text += "; " + pmd_compare.summary(pmd.kernel)
            return Verdict("match", text, [], path)
    path, diffs = min(results, key=lambda r: len(r[1]))
    return _mismatch(pred, obs, path, diffs, scans)


def write_verdict(out_dir: Path, prediction: Any, verdict: Verdict) -> None:
    """predicted.json (the model's full JSON: outcomes, reasons, schedules, decisions,
    assumptions; `normalize_prediction` reads it back) and verdict.json in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "predicted.json", _plain(prediction))
    write_json(out_dir / "verdict.json", verdict.to_dict())


def _observed_entry(cp: Checkpoint) -> dict[str, Any]:
    regions = {k: {"AnonHugePages": s.anon_huge_kb, "Rss": s.rss_kb, "Swap": s.swap_kb,
                   "huge_pmds": len(s.huge_pmds)}
               for k, s in observed_regions(cp).items()}
    return {"counters": dict(cp.deltas), "regions": regions}


def _entry_alternatives(alts: list[dict[str, Any]], cp: Checkpoint,
                        chosen: str | None) -> list[dict[str, Any]]:
    """Schema form of a checkpoint's alternatives: the chosen path's fitting one first."""
    ranked = sorted(alts, key=lambda a: (a.get("name") != chosen, len(_diff_values(a, cp))))
    out = []
    for a in ranked:
        regions = {k: dict(v) for k, v in (a.get("regions") or {}).items()}
        for k, pmds in (a.get("huge_pmds") or {}).items():
            regions.setdefault(k, {})["huge_pmds"] = len(pmds)
        out.append({"name": str(a.get("name", "")), "counters": dict(a.get("counters") or {}),
                    "regions": regions})
    return out


def schedules_in_words(prediction: Any, verdict: Verdict) -> list[dict[str, Any]]:
    """Each admissible schedule explained (its choices, in order), and which one the
    kernel took (the path every checkpoint fitted)."""
    try:
        pred = normalize_prediction(prediction)
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
    words: dict[str, str] = {}
    for cp in pred["checkpoints"]:
        for a in cp["alternatives"]:
            name = str(a.get("name", ""))
            if name not in words or (not words[name] and a.get("choices")):
                words[name] = "; ".join(a.get("choices") or [])
    return [{"name": n, "explanation": w or "deterministic: no choice point",
             "taken": n == verdict.chosen_alternative} for n, w in words.items()]


def result_entry(spec: WorkloadSpec, obs: Observation, prediction: Any,
                 verdict: Verdict, duration: float | None = None) -> dict[str, Any]:
    """The `workloads[]` entry of result.json (schema: orchestrator/schema)."""
    try:
        pred_cps = {cp["label"]: cp["alternatives"]
                    for cp in normalize_prediction(prediction)["checkpoints"]}
    except (ValueError, TypeError, KeyError, AttributeError):
        pred_cps = {}
    t0 = obs.checkpoints[0].time_ns if obs.checkpoints else 0
    cps = []
    for cp in obs.checkpoints:
        if cp.label == BASELINE_LABEL:
            continue
        alts = _entry_alternatives(pred_cps.get(cp.label, []), cp, verdict.chosen_alternative)
        cps.append({"label": cp.label, "t": round(max(0, cp.time_ns - t0) / 1e9, 3),
                    "observed": _observed_entry(cp), "predicted": alts})
    entry: dict[str, Any] = {"name": spec.name, "description": spec.description,
                             "verdict": verdict.status, "explanation": verdict.explanation,
                             "chosen_alternative": verdict.chosen_alternative,
                             "schedules": schedules_in_words(prediction, verdict),
                             "checkpoints": cps}
    if duration is not None:
        entry["duration"] = duration
    return entry


def load_scans(run_dir: Path, obs: Observation) -> list[PmdScan] | None:
    """PMD-placed scan events from run_dir/trace.txt, or None when there is no trace
    or it is incomplete (the kernel lost events, or a scan_pmd line could not be
    read): an incomplete trace cannot take part in the per-PMD comparison."""
    from orchestrator.suites.workloads.trace import (
        EVENTS,
        SCAN_PMD,
        locate_scans,
        parse_format_dump,
        parse_trace,
    )

    path = run_dir / "trace.txt"
    if not path.exists():
        return None
    fmt_path = run_dir / "trace-format.txt"  # the kernel's event formats (absent: 6.12 shapes)
    fmt = parse_format_dump(fmt_path.read_text(errors="replace")) if fmt_path.exists() else None
    trace = parse_trace(path.read_text(errors="replace"), EVENTS, fmt)
    if trace.unparsed:
        log.warning("%s: %d lines not understood", path, len(trace.unparsed))
    if trace.lost_events or any(SCAN_PMD in line for line in trace.unparsed):
        log.warning("%s: incomplete trace (%d events lost, %d lines not understood): "
                    "no per-PMD comparison", path, trace.lost_events, len(trace.unparsed))
        return None
    return locate_scans(trace, obs)


def compare_run_dir(run_dir: Path, spec: WorkloadSpec | None = None,
                    prediction: Any = None) -> Verdict:
    """Offline comparison of one workload directory: driver.jsonl, trace.txt, and
    spec.toml / predicted.json when `spec` / `prediction` are None. Rewrites
    verdict.json and predicted.json."""
    import json

    from orchestrator.spec import load_spec
    from orchestrator.suites.workloads.driver import load_observation

    if spec is None:
        spec = load_spec(run_dir / "spec.toml")
    obs = load_observation(run_dir, spec)
    if prediction is None:
        path = run_dir / "predicted.json"
        try:
            prediction = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read the model prediction: {e}") from e
    verdict = compare(prediction, obs, spec, load_scans(run_dir, obs))
    write_verdict(run_dir, prediction, verdict)
    return verdict
