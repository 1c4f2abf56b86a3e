"""The `workloads[]` entry of result.json for a judged workload: what was observed,
what the model admitted (the fitting alternative first), and every admissible
schedule explained in words with the one the kernel took."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.judge.compare import Verdict, normalize_prediction, observed_regions
from orchestrator.judge.compare import _diff_values as diff_values
from orchestrator.model.prediction import Prediction
from orchestrator.spec import WorkloadSpec
from orchestrator.suites.workloads.observation import BASELINE_LABEL, Checkpoint, Observation


def _observed_entry(cp: Checkpoint) -> dict[str, Any]:
    regions = {k: {"AnonHugePages": s.anon_huge_kb, "Rss": s.rss_kb, "Swap": s.swap_kb,
                   "huge_pmds": len(s.huge_pmds)}
               for k, s in observed_regions(cp).items()}
    return {"counters": dict(cp.deltas), "regions": regions}


def _entry_alternatives(alts: list[dict[str, Any]], cp: Checkpoint,
                        chosen: str | None) -> list[dict[str, Any]]:
    """Schema form of a checkpoint's alternatives: the chosen path's fitting one first."""
    ranked = sorted(alts, key=lambda a: (a.get("name") != chosen, len(diff_values(a, cp))))
    out = []
    for a in ranked:
        regions = {k: dict(v) for k, v in (a.get("regions") or {}).items()}
        for k, pmds in (a.get("huge_pmds") or {}).items():
            regions.setdefault(k, {})["huge_pmds"] = len(pmds)
        out.append({"name": str(a.get("name", "")), "counters": dict(a.get("counters") or {}),
                    "regions": regions})
    return out


def schedules_in_words(prediction: Prediction | Mapping[str, Any],
                       verdict: Verdict) -> list[dict[str, Any]]:
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


def result_entry(spec: WorkloadSpec, obs: Observation,
                 prediction: Prediction | Mapping[str, Any],
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
