"""Shared loaders for the synthetic result fixtures in tests/data/results/."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
NAMES = ("pass", "case-fail", "crash", "could-not-test")


def load(name: str) -> dict[str, Any]:
    """A fresh (deep) copy of fixture `name`."""
    data: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return copy.deepcopy(data)
