"""result.json: its schema, validation, loading and writing.

The schema is `orchestrator/schema/result.schema.json` (JSON Schema 2020-12);
every field is documented in its descriptions. `SCHEMA_VERSION` is the version
this thpvm writes and reads.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from orchestrator.cache import write_json
from orchestrator.data import RESULT_SCHEMA
from orchestrator.errors import ResultSchemaError, UserError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULT_NAME = "result.json"
_MAX_SHOWN = 10


@cache
def load_schema() -> dict[str, Any]:
    """The result schema, read from the package."""
    text = RESULT_SCHEMA.read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_problems(result: object) -> list[str]:
    """Every schema violation of `result` as 'json/path: message' (empty if valid)."""
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = []
    for err in sorted(validator.iter_errors(result), key=lambda e: list(map(str, e.path))):
        # oneOf/anyOf failures carry the real cause among their sub-errors
        while err.context:
            err = max(err.context, key=lambda e: len(e.absolute_path))
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        problems.append(f"{where}: {_short(err.message)}")
    return problems


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def validate_result(result: object) -> None:
    """Raise `ResultSchemaError` naming every violation if `result` does not
    follow the result schema (version `SCHEMA_VERSION`)."""
    if isinstance(result, dict) and result.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ResultSchemaError(
            f"result schema_version {result.get('schema_version')!r} is not supported "
            f"(this thpvm reads version {SCHEMA_VERSION})", [])
    problems = schema_problems(result)
    if problems:
        shown = problems[:_MAX_SHOWN]
        more = len(problems) - len(shown)
        if more:
            shown.append(f"... and {more} more")
        raise ResultSchemaError(
            f"result does not follow result.schema.json ({len(problems)} problem(s)): "
            f"{problems[0]}", shown)


def load_result(run_dir: Path) -> dict[str, Any]:
    """Read and validate RUN_DIR/result.json; `UserError` naming the path if it
    is missing, not JSON or not a valid result."""
    path = Path(run_dir) / RESULT_NAME
    if not Path(run_dir).is_dir():
        raise UserError(f"not a run directory: {run_dir}")
    if not path.is_file():
        raise UserError(f"no {RESULT_NAME} in run directory: {path} does not exist")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from e
    try:
        validate_result(result)
    except ResultSchemaError as e:
        raise UserError(f"{path}: {e.message}", e.detail) from e
    assert isinstance(result, dict)
    return result


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    """Write RUN_DIR/result.json atomically; returns its path."""
    path = Path(run_dir) / RESULT_NAME
    write_json(path, result)
    return path
