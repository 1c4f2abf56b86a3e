"""What the model predicts for a workload: checkpoints with admissible
outcomes, schedules with their per-PMD decision logs; JSON and text forms."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionState:
    """smaps of one region in one process (kB), and its PMD-mapped THPs
    (indices of 2 MiB blocks from the region's 2 MiB-aligned base)."""

    anon_huge_kb: int
    rss_kb: int
    swap_kb: int
    huge_pmds: tuple[int, ...]
    # PTE-mapped large folios: (first page index in the region, folio size in kB)
    folios: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class PredictedState:
    """Everything a checkpoint records. `results` maps step index -> "ok" or errno."""

    counters: tuple[tuple[str, int], ...]
    regions: tuple[tuple[str, str, RegionState], ...]  # (proc, region, state)
    results: tuple[tuple[int, str], ...]
    timed_out: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        regions: dict[str, dict[str, Any]] = {}
        for proc, name, st in self.regions:
            d = asdict(st)
            d["huge_pmds"] = list(st.huge_pmds)
            d["folios"] = [list(f) for f in st.folios]
            regions.setdefault(proc, {})[name] = d
        return {"counters": dict(self.counters), "regions": regions,
                "results": {str(k): v for k, v in self.results}, "timed_out": self.timed_out}


@dataclass
class Outcome:
    """One admissible observation at a checkpoint and why it can happen.

    `cuts` maps a schedule to the lengths of its decision log (`Schedule.decisions`)
    at which this observation can be read: the decisions before the checkpoint are
    ``decisions[:cut]``. JSON: ``"cuts": {"<schedule>": [cut, ...]}``."""

    observation: PredictedState
    reasons: list[str]
    schedules: list[int]
    time_ms: int
    cuts: dict[int, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"reasons": self.reasons, "schedules": self.schedules, "time_ms": self.time_ms,
                "cuts": {str(k): list(v) for k, v in sorted(self.cuts.items())},
                **self.observation.to_json()}


@dataclass
class CheckpointPrediction:
    """A checkpoint (wait_scans or checkpoint step) and its admissible outcomes."""

    label: str
    step: int
    outcomes: list[Outcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"label": self.label, "step": self.step,
                "outcomes": [o.to_json() for o in self.outcomes]}


@dataclass
class Schedule:
    """One resolution of the nondeterministic choices, and what khugepaged did in it."""

    index: int
    choices: list[str]
    decisions: list[dict[str, Any]]
    # collapse_huge_page() calls with their order (mm_collapse_huge_page trace events)
    collapses: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"index": self.index, "choices": self.choices, "decisions": self.decisions,
                "collapses": self.collapses}


@dataclass
class Prediction:
    """The model's prediction for one workload under one version profile."""

    workload: str
    source: str
    version: str
    profile: str
    settings: dict[str, Any]
    checkpoints: list[CheckpointPrediction]
    schedules: list[Schedule]
    assumptions: list[str]
    warnings: list[str] = field(default_factory=list)  # kernel pr_warn_once() texts

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (json.dumps works on it)."""
        return {"workload": self.workload, "source": self.source, "version": self.version,
                "profile": self.profile, "settings": dict(self.settings),
                "checkpoints": [c.to_json() for c in self.checkpoints],
                "schedules": [s.to_json() for s in self.schedules],
                "assumptions": list(self.assumptions), "warnings": list(self.warnings)}


def _fmt_counters(obs: PredictedState) -> str:
    parts = [f"{k} +{v}" for k, v in obs.counters if v]
    return ", ".join(parts) if parts else "all +0"


def format_prediction(pred: Prediction, decisions: bool = True) -> str:
    """A readable summary: checkpoints, their alternatives, and the decision log
    of the first schedule."""
    lines = [f"workload {pred.workload} ({pred.source})",
             f"kernel {pred.version}: profile {pred.profile}",
             "settings: " + " ".join(f"{k}={v}" for k, v in pred.settings.items())]
    for cp in pred.checkpoints:
        lines.append(f"checkpoint {cp.label!r} (step {cp.step}): "
                     f"{len(cp.outcomes)} admissible outcome(s)")
        for i, o in enumerate(cp.outcomes, 1):
            obs = o.observation
            lines.append(f"  [{i}] t={o.time_ms} ms{' TIMEOUT' if obs.timed_out else ''}"
                         f"  because: {' | '.join(o.reasons)}")
            lines.append(f"      counters: {_fmt_counters(obs)}")
            for proc, name, st in obs.regions:
                lines.append(f"      {proc}/{name}: AnonHugePages {st.anon_huge_kb} kB, "
                             f"Rss {st.rss_kb} kB, Swap {st.swap_kb} kB, "
                             f"huge PMDs {list(st.huge_pmds)}")
                if st.folios:
                    lines.append("        large folios (page:kB): "
                                 + " ".join(f"{pg}:{kb}" for pg, kb in st.folios))
            if obs.results:
                lines.append("      syscalls: " + ", ".join(f"step {k}: {v}"
                                                             for k, v in obs.results))
    lines += [f"kernel warning: {w}" for w in pred.warnings]
    if decisions and pred.schedules:
        s = pred.schedules[0]
        lines.append(f"per-PMD decisions, schedule 0 ({'; '.join(s.choices) or 'no choices'}):")
        for d in s.decisions:
            lines.append(
                f"  t={d['time_ms']:>6} pass {d['pass']:>2} {d['proc']:<6} {d['by']:<16} "
                f"{d.get('region', '?')}[{d.get('pmd', '?')}] {d['result']:<22} "
                f"none={d['none_or_zero']} swap={d['unmapped']} shared={d['shared']} "
                f"ref={d['referenced']} w={d['writable']}")
        lines += _fmt_collapses(s)
    return "\n".join(lines)


def _fmt_collapses(s: Schedule) -> list[str]:
    """Per-order collapse_huge_page() calls of one schedule, and a count per order."""
    if not s.collapses:
        return []
    lines = [f"collapse_huge_page calls, schedule {s.index}:"]
    per: dict[tuple[int, str], int] = {}
    for c in s.collapses:
        kb = 4 << c["order"]
        per[kb, c["result"]] = per.get((kb, c["result"]), 0) + 1
        lines.append(f"  t={c['time_ms']:>6} {c['proc']:<6} {c['by']:<16} "
                     f"{c.get('region', '?')}+{c.get('page', '?')} {kb:>4} kB  {c['result']}")
    lines.append("  per order: " + ", ".join(f"{kb} kB {r} x{n}"
                                            for (kb, r), n in sorted(per.items())))
    return lines
