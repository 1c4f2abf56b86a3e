"""Property tests of the khugepaged model over random small layouts (hypothesis)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.model import Faults, Prediction, predict
from orchestrator.spec import WorkloadSpec, parse_spec


@dataclass(frozen=True)
class RegionPlan:
    pmds: int
    offset: int
    written: int  # pages written (random selection)
    read: int  # pages read (random selection; zero page where not written)
    paged_out: int  # pages paged out
    seed: int
    hugepage: bool
    nohugepage: bool


region_plans = st.builds(
    RegionPlan,
    pmds=st.integers(1, 2),
    offset=st.sampled_from([0, 0, 7]),
    written=st.integers(0, 512),
    read=st.integers(0, 256),
    paged_out=st.integers(0, 80),
    seed=st.integers(0, 2**32),
    hugepage=st.booleans(),
    nohugepage=st.booleans(),
)


@dataclass(frozen=True)
class Plan:
    regions: tuple[RegionPlan, ...]
    none: int
    swap: int
    shared: int
    pages_to_scan: int
    fork_child_writes: int  # -1: no fork


plans = st.builds(
    Plan,
    regions=st.lists(region_plans, min_size=1, max_size=2).map(tuple),
    none=st.integers(0, 511),
    swap=st.integers(0, 511),
    shared=st.integers(0, 511),
    pages_to_scan=st.sampled_from([512, 1024, 4096]),
    fork_child_writes=st.sampled_from([-1, -1, 0, 100, 300]),
)


def render(plan: Plan, none: int | None = None) -> WorkloadSpec:
    """The plan as a workload spec (TOML text through the real parser)."""
    out = ['format = 1', 'name = "prop"', "[settings]",
           f"max_ptes_none = {plan.none if none is None else none}",
           f"max_ptes_swap = {plan.swap}", f"max_ptes_shared = {plan.shared}",
           f"pages_to_scan = {plan.pages_to_scan}"]
    steps: list[str] = []
    for i, r in enumerate(plan.regions):
        npages = r.pmds * 512 - r.offset
        out += ["[[regions]]", f'name = "r{i}"', f"pages = {npages}",
                f"offset_pages = {r.offset}"]
        if r.written:
            steps.append(f'op = "touch"\nregion = "r{i}"\n'
                         f"pages = {{ random = {min(r.written, npages)}, seed = {r.seed} }}")
        if r.read:
            steps.append(f'op = "touch"\nregion = "r{i}"\naccess = "read"\n'
                         f"pages = {{ random = {r.read}, seed = {r.seed + 1} }}")
        if r.paged_out:
            steps.append(f'op = "madvise"\nregion = "r{i}"\nadvice = "pageout"\n'
                         f"pages = {{ random = {r.paged_out}, seed = {r.seed + 2} }}")
    if plan.fork_child_writes >= 0:
        steps.append('op = "fork"')
        if plan.fork_child_writes:
            steps.append('op = "touch"\nproc = "child"\nregion = "r0"\n'
                         f"pages = {{ random = {plan.fork_child_writes}, seed = 5 }}")
    procs = ["parent"] + (["child"] if plan.fork_child_writes >= 0 else [])
    for i, r in enumerate(plan.regions):
        for proc in procs:
            if r.nohugepage:
                steps.append(f'op = "madvise"\nproc = "{proc}"\nregion = "r{i}"\n'
                             'advice = "nohugepage"')
            if r.hugepage:
                steps.append(f'op = "madvise"\nproc = "{proc}"\nregion = "r{i}"\n'
                             'advice = "hugepage"')
    steps.append('op = "wait_scans"\ncount = 2\ntimeout_s = 5\nlabel = "end"')
    text = "\n".join(out) + "\n" + "".join(f"[[steps]]\n{s}\n" for s in steps)
    return parse_spec(text, "<property>")


def end_values(p: Prediction, key: str) -> list[int]:
    return [dict(o.observation.counters)[key] for o in p.checkpoints[-1].outcomes]


FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(plans, st.integers(0, 511))
def test_raising_max_ptes_none_never_reduces_collapses(plan: Plan, extra: int) -> None:
    lo, hi = sorted((plan.none, min(511, plan.none + extra)))
    a = end_values(predict(render(plan, lo)), "pages_collapsed")
    b = end_values(predict(render(plan, hi)), "pages_collapsed")
    assert min(a) <= min(b)
    assert max(a) <= max(b)


@FAST
@given(plans)
def test_layout_without_eligible_vma_changes_no_counter(plan: Plan) -> None:
    ineligible = Plan(tuple(RegionPlan(r.pmds, r.offset, r.written, r.read, r.paged_out,
                                       r.seed, False, r.nohugepage) for r in plan.regions),
                      plan.none, plan.swap, plan.shared, plan.pages_to_scan,
                      plan.fork_child_writes)
    p = predict(render(ineligible))
    for cp in p.checkpoints:
        for o in cp.outcomes:
            assert all(v == 0 for _, v in o.observation.counters), o.observation.counters
            assert all(rs.anon_huge_kb == 0 for _, _, rs in o.observation.regions)


@FAST
@given(plans, st.frozensets(st.integers(0, 6)), st.frozensets(st.integers(0, 6)))
def test_pages_collapsed_never_exceeds_collapse_allocations(
        plan: Plan, alloc_fail: frozenset[int], charge_fail: frozenset[int]) -> None:
    p = predict(render(plan), faults=Faults(alloc_fail, charge_fail))
    for cp in p.checkpoints:
        for o in cp.outcomes:
            c = dict(o.observation.counters)
            assert c["pages_collapsed"] <= c["thp_collapse_alloc"]
            huge = sum(len(rs.huge_pmds) for _, _, rs in o.observation.regions)
            assert huge >= c["pages_collapsed"] or c["pages_collapsed"] == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans)
def test_model_is_deterministic(plan: Plan) -> None:
    spec = render(plan)
    a = json.dumps(predict(spec).to_json(), sort_keys=True)
    b = json.dumps(predict(spec).to_json(), sort_keys=True)
    assert a == b


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans)
def test_collapsed_pmds_have_full_rss_and_no_swap(plan: Plan) -> None:
    """A PMD-mapped THP is 2048 kB of Rss; Rss never exceeds the region size."""
    p = predict(render(plan))
    sizes = {f"r{i}": (r.pmds * 512 - r.offset) * 4 for i, r in enumerate(plan.regions)}
    for o in p.checkpoints[-1].outcomes:
        for _, name, rs in o.observation.regions:
            assert rs.anon_huge_kb == 2048 * len(rs.huge_pmds)
            assert rs.anon_huge_kb <= rs.rss_kb <= sizes[name]


def test_rendered_plans_do_exercise_collapse_and_limits() -> None:
    """Guard against vacuous properties: the generator's layouts can collapse,
    and max_ptes_none decides it."""
    plan = Plan((RegionPlan(2, 0, 300, 0, 0, 1, True, False),), 511, 64, 256, 4096, -1)
    assert min(end_values(predict(render(plan)), "pages_collapsed")) == 2
    assert max(end_values(predict(render(plan, 0)), "pages_collapsed")) == 0
    assert min(end_values(predict(render(plan, 0)), "thp_scan_exceed_none_pte")) >= 2
