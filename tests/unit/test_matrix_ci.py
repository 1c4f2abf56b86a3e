"""The shipped CI examples and the generated CI output validate against check-jsonschema's
vendored GitHub Actions / GitLab CI schemas (offline)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import proc
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHECK = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
pytestmark = pytest.mark.skipif(not Path(CHECK).exists(),
                                reason="check-jsonschema is not installed (pip install .[test])")


def check(schema: str, path: Path) -> proc.Result:
    return proc.run([CHECK, "--builtin-schema", schema, str(path)], check=False, timeout=120)


def test_shipped_github_workflow_validates() -> None:
    res = check("vendor.github-workflows", ROOT / "ci/github/thp-matrix.yml")
    assert res.returncode == 0, res.output


def test_shipped_gitlab_pipeline_validates() -> None:
    res = check("vendor.gitlab-ci", ROOT / "ci/gitlab/thp-matrix.yml")
    assert res.returncode == 0, res.output


def test_generated_gitlab_child_pipeline_validates(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "plan", "smoke", "--format", "gitlab", "--shards", "3"]) == 0
    child = tmp_path / "child.yml"
    child.write_text(capsys.readouterr().out)
    doc = yaml.safe_load(child.read_text())
    assert doc["thp-matrix"]["parallel"]["matrix"] == [{"SHARD": ["1/3", "2/3", "3/3"]}]
    res = check("vendor.gitlab-ci", child)
    assert res.returncode == 0, res.output


def test_generated_github_include_validates_inside_a_workflow(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "plan", "smoke", "--format", "github"]) == 0
    include = json.loads(capsys.readouterr().out)
    assert len(include["include"]) == 8  # one shard per job by default
    workflow = yaml.safe_load((ROOT / "ci/github/thp-matrix.yml").read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as true
    workflow["jobs"]["shard"]["strategy"]["matrix"] = include  # what fromJSON() expands to
    path = tmp_path / "expanded.yml"
    path.write_text(yaml.safe_dump(workflow))
    res = check("vendor.github-workflows", path)
    assert res.returncode == 0, res.output


def test_the_validator_rejects_a_broken_pipeline(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("job:\n  script: 3\n  parallel: {matrix: nope}\n")
    assert check("vendor.gitlab-ci", bad).returncode != 0
