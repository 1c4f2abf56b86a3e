"""Kernel version profiles: the rule differences between versions, as data.

A profile is one TOML file in `orchestrator/model/profiles/`; the directory
listing is the registry. `load_version_profile("6.12")` picks the exact profile, and
an unknown version (``"6.6"``) the nearest one by (major, minor) distance, with
a warning. Patch levels (``"6.12.117"``) select their minor's profile silently.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from orchestrator.errors import UserError
from orchestrator.model.results import Scan

log = logging.getLogger(__name__)

_CHOICES: dict[str, tuple[str, ...]] = {
    "pmd_enabled_rule": ("global", "per_size", "any_order"),
    "madv_hugepage_registration": ("hugepage_madvise", "madvise_update_vma"),
    "pte_check_order": ("swap_first", "none_first"),
    "empty_pmd_codes": ("pmd_null_none", "no_pte_table"),
    "progress": ("pmd", "pte"),
    "shared_test": ("page_mapcount", "folio_likely_mapped_shared", "folio_maybe_mapped_shared"),
}
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?\Z")


@dataclass(frozen=True)
class VersionProfile:
    """Rules that differ between kernel versions (docs/khugepaged-model.md, "Versions")."""

    version: str
    description: str
    pmd_enabled_rule: str
    madv_hugepage_registration: str
    pte_check_order: str
    writable_required: bool
    empty_pmd_codes: str
    progress: str
    shared_test: str
    mthp_collapse: bool
    dontneed_frees_pte_table: bool
    collapse_exceed_none_errno: str
    collapse_eagain: frozenset[Scan]
    collapse_continue_on: frozenset[Scan]
    result_order: tuple[Scan, ...]

    def result_value(self, result: Scan) -> int:
        """Numeric value of `result` in this version's enum (trace `status`), -1 if absent."""
        try:
            return self.result_order.index(result)
        except ValueError:
            return -1


def _scan_names(source: str, key: str, names: Any) -> frozenset[Scan]:
    return frozenset(_scan_list(source, key, names))


def _scan_list(source: str, key: str, names: Any) -> tuple[Scan, ...]:
    if not isinstance(names, list):
        raise UserError(f"{source}: {key}: expected a list of SCAN_* names")
    out = []
    for i, n in enumerate(names):
        if n not in Scan.__members__:
            raise UserError(f"{source}: {key}[{i}]: expected a SCAN_* name, got {n!r}")
        out.append(Scan[n])
    return tuple(out)


def parse_profile(doc: dict[str, Any], source: str) -> VersionProfile:
    """Validate one profile document (UserError naming file and key)."""
    for key, choices in _CHOICES.items():
        if doc.get(key) not in choices:
            raise UserError(f"{source}: {key}: expected one of {list(choices)}, "
                            f"got {doc.get(key)!r}")
    for key in ("writable_required", "mthp_collapse", "dontneed_frees_pte_table"):
        if not isinstance(doc.get(key), bool):
            raise UserError(f"{source}: {key}: expected a boolean")
    mc = doc.get("madvise_collapse")
    res = doc.get("results")
    if not isinstance(mc, dict) or not isinstance(res, dict):
        raise UserError(f"{source}: expected [madvise_collapse] and [results] tables")
    return VersionProfile(
        version=str(doc.get("version")),
        description=str(doc.get("description", "")),
        pmd_enabled_rule=doc["pmd_enabled_rule"],
        madv_hugepage_registration=doc["madv_hugepage_registration"],
        pte_check_order=doc["pte_check_order"],
        writable_required=doc["writable_required"],
        empty_pmd_codes=doc["empty_pmd_codes"],
        progress=doc["progress"],
        shared_test=doc["shared_test"],
        mthp_collapse=doc["mthp_collapse"],
        dontneed_frees_pte_table=doc["dontneed_frees_pte_table"],
        collapse_exceed_none_errno=str(mc.get("exceed_none_errno")),
        collapse_eagain=_scan_names(source, "madvise_collapse.eagain", mc.get("eagain")),
        collapse_continue_on=_scan_names(source, "madvise_collapse.continue_on",
                                         mc.get("continue_on")),
        result_order=_scan_list(source, "results.order", res.get("order")),
    )


@cache
def available_profiles() -> dict[str, VersionProfile]:
    """All shipped profiles, keyed by version string."""
    out: dict[str, VersionProfile] = {}
    for entry in resources.files("orchestrator.model").joinpath("profiles").iterdir():
        if not entry.name.endswith(".toml"):
            continue
        source = f"orchestrator/model/profiles/{entry.name}"
        try:
            doc = tomllib.loads(entry.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{source}: not valid TOML: {e}") from e
        prof = parse_profile(doc, source)
        out[prof.version] = prof
    return out


def _key(version: str) -> tuple[int, int]:
    m = _VERSION_RE.match(version.strip())
    if not m:
        raise UserError(f"kernel version {version!r}: expected MAJOR.MINOR[.PATCH], e.g. 6.12")
    return int(m.group(1)), int(m.group(2))


def load_version_profile(version: str = "6.12") -> VersionProfile:
    """The profile for `version`, or the nearest known one (with a warning)."""
    profiles = available_profiles()
    want = _key(version)
    by_key = {_key(v): p for v, p in profiles.items()}
    if want in by_key:
        return by_key[want]

    def distance(k: tuple[int, int]) -> tuple[int, int]:
        # minors are not comparable across majors; count a major as 20 minors
        return abs((k[0] * 20 + k[1]) - (want[0] * 20 + want[1])), k[0] * 20 + k[1]

    nearest = min(by_key, key=distance)
    prof = by_key[nearest]
    log.warning("no khugepaged profile for kernel %s; using the nearest, %s", version,
                prof.version)
    return prof
