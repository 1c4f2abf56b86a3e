"""Matrix files, plans, stable job ids and shards (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.jobs import matrixplan
from orchestrator.jobs.matrixspec import load_matrix, parse_matrix, shipped_matrices

GOOD = """
format = 1
name = "m"
repeats = 2
suites = ["selftest:anon", "workloads:thp-never"]

[[kernels]]
source = "debian:6.12"

[[kernels]]
name = "dbg"
source = "debian:6.12"
fragments = ["kconfigs/debug.config"]
configs = ["CONFIG_DEBUG_VM=y"]

[[kernels]]
source = "debian:7.2"
"""


def parse(text: str, tmp_path: Path):
    return parse_matrix(text, "m.toml", tmp_path)


def test_good_matrix_plans_kernel_major_jobs_with_stable_ids(tmp_path: Path) -> None:
    spec = parse(GOOD, tmp_path)
    assert [k.name for k in spec.kernels] == ["6.12", "dbg", "7.2"]
    jobs = matrixplan.plan_jobs(spec)
    assert len(jobs) == 3 * 2 * 2
    assert [j.id for j in jobs[:4]] == ["6.12.selftest-anon.r1", "6.12.selftest-anon.r2",
                                        "6.12.workloads-thp-never.r1",
                                        "6.12.workloads-thp-never.r2"]
    assert len({j.id for j in jobs}) == len(jobs)
    assert [j.id for j in matrixplan.plan_jobs(parse(GOOD, tmp_path))] == [j.id for j in jobs]


def test_job_argv_names_kernel_suite_machine_and_out(tmp_path: Path) -> None:
    spec = parse(GOOD, tmp_path)
    jobs = matrixplan.plan_jobs(spec)
    argv = matrixplan.vmtest_argv(spec, jobs[4], "/o")
    assert argv[0] == "vm-test" and "--tree" not in argv  # debian:6.12 is the default tree
    assert argv[argv.index("--fragment") + 1].endswith("kconfigs/debug.config")
    assert argv[argv.index("--config") + 1] == "CONFIG_DEBUG_VM=y"
    assert argv[argv.index("--suite") + 1] == "selftest:anon"
    assert argv[argv.index("--machine") + 1] == "default"
    assert argv[argv.index("--out") + 1] == "/o"
    k72 = matrixplan.vmtest_argv(spec, jobs[-1], "/o")
    assert k72[k72.index("--tree") + 1] == "debian:7.2"


@pytest.mark.parametrize("text, where", [
    ("format = 2", "m.toml: format:"),
    (GOOD.replace('name = "m"', 'name = "Bad Name"'), "m.toml: name:"),
    (GOOD.replace("repeats = 2", "repeats = 0"), "m.toml: repeats:"),
    (GOOD.replace("repeats = 2", "colour = 1"), "m.toml: colour: unknown key"),
    (GOOD.replace('"selftest:anon"', '"selftest:nope"'), "m.toml: suites[0]: unknown selftest"),
    (GOOD.replace('"workloads:thp-never"', '"workloads:nope"'), "m.toml: suites[1]: unknown "
                                                              "workload"),
    (GOOD.replace('"workloads:thp-never"', '"bogus"'), "m.toml: suites[1]: bogus"),
    (GOOD.replace('source = "debian:7.2"', 'source = "debian:5.10"'), "kernels[2].source"),
    (GOOD.replace('source = "debian:7.2"', 'source = "/no/such/tree"'), "kernels[2].source"),
    (GOOD.replace('"kconfigs/debug.config"', '"nope.config"'), "kernels[1].fragments[0]"),
    (GOOD.replace('"CONFIG_DEBUG_VM=y"', '"DEBUG_VM"'), "kernels[1].configs[0]"),
    (GOOD.replace('name = "dbg"', 'name = "7.2"'), "m.toml: kernels: kernel names must be"),
    (GOOD.replace('source = "debian:7.2"', 'source = "debian:7.2"\nrev = "v7.2"'),
     "kernels[2].rev"),
    (GOOD + 'machine = "nope"', "m.toml: kernels[2]"),  # a key after [[kernels]] belongs to it
    ('format = 1\nname = "x"\nmachine = "nope"\nsuites = ["selftest"]\n[[kernels]]\n'
     'source = "debian:6.12"', "m.toml: machine: no machine profile"),
    ('format = 1\nname = "x"\nsuites = ["selftest"]', "m.toml: kernels: expected at least"),
    ("format = [", "m.toml: (toml): not valid TOML"),
])
def test_errors_name_the_file_and_key(text: str, where: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        parse(text, tmp_path)
    assert e.value.message.startswith(where) or where in e.value.message, e.value.message


def test_shipped_matrices_load() -> None:
    assert {"smoke", "release"} <= set(shipped_matrices())
    smoke = load_matrix("smoke")
    assert len(matrixplan.plan_jobs(smoke)) == 8  # 2 kernels x 2 suites x 2 repeats
    release = load_matrix("release")
    assert [k.source for k in release.kernels] == ["debian:6.1", "debian:6.12", "debian:7.2"]
    assert len(matrixplan.plan_jobs(release)) == 3 * 2 * 5


@given(n=st.integers(min_value=1, max_value=60), total=st.integers(min_value=1, max_value=70))
def test_shards_partition_the_plan_in_order(n: int, total: int) -> None:
    jobs = list(range(n))
    parts = [matrixplan.shard(jobs, i, total) for i in range(1, total + 1)]  # type: ignore
    assert [j for p in parts for j in p] == jobs
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1", "a/b", "", "1/0"])
def test_bad_shard_is_a_user_error(bad: str) -> None:
    with pytest.raises(UserError, match="--shard"):
        matrixplan.parse_shard(bad)


def test_plan_cli_json_and_github(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["matrix", "plan", "smoke", "--shard", "2/2"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [j["kernel"] for j in plan["jobs"]] == ["6.12-debug"] * 4
    assert main(["matrix", "plan", "smoke", "--format", "github", "--shards", "3"]) == 0
    include = json.loads(capsys.readouterr().out)["include"]
    assert [i["shard"] for i in include] == ["1/3", "2/3", "3/3"]
    assert sum(len(i["jobs"].split()) for i in include) == 8


def test_plan_cli_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("format = 1\n")
    assert main(["matrix", "plan", str(bad)]) == 2
    assert main(["matrix", "plan", str(tmp_path / "missing.toml")]) == 2
