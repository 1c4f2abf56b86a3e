"""proc.py: the one subprocess wrapper (real short-lived processes, no mocks)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from process_helpers import gone, wait_gone

from orchestrator import proc
from orchestrator.errors import BuildError, InfraError, UserError


def test_output_streamed_to_log_on_line_and_result(tmp_path: Path) -> None:
    log = tmp_path / "cmd.log"
    log.write_text("earlier\n")
    seen: list[str] = []
    res = proc.run(["sh", "-c", "echo one; echo two >&2; printf 'three'"], log_path=log,
                   on_line=seen.append)
    assert res.returncode == 0 and not res.timed_out
    assert seen == ["one", "two", "three"]
    assert log.read_text() == "earlier\none\ntwo\nthree"  # appended, stderr merged
    assert res.output == "one\ntwo\nthree"
    assert res.tail == ["one", "two", "three"]
    assert res.argv == ["sh", "-c", "echo one; echo two >&2; printf 'three'"]
    assert res.log_path == log and res.elapsed >= 0


def test_lines_arrive_while_the_command_runs() -> None:
    stamps: list[float] = []
    start = time.monotonic()
    proc.run(["sh", "-c", "echo a; sleep 0.4; echo b"],
             on_line=lambda _line: stamps.append(time.monotonic() - start))
    assert len(stamps) == 2 and stamps[0] < 0.3 <= stamps[1]


def test_keep_output_false_still_keeps_tail(tmp_path: Path) -> None:
    res = proc.run(["seq", "1", "200"], keep_output=False, log_path=tmp_path / "l")
    assert res.output == ""
    assert res.tail == [str(i) for i in range(151, 201)]
    assert len((tmp_path / "l").read_text().splitlines()) == 200


def test_non_zero_exit_raises_given_error_with_tail(tmp_path: Path) -> None:
    script = "for i in $(seq 1 40); do echo line $i; done; echo 'fatal: boom' >&2; exit 3"
    with pytest.raises(BuildError) as info:
        proc.run(["sh", "-c", script], log_path=tmp_path / "b.log", error=BuildError)
    err = info.value
    assert err.message.startswith("exit status 3: sh -c")
    assert f"(log: {tmp_path / 'b.log'})" in err.message
    detail = err.detail.splitlines()
    assert len(detail) == 20 and detail[-1] == "fatal: boom" and detail[0] == "line 22"


def test_default_error_is_infra_error() -> None:
    with pytest.raises(InfraError) as info:
        proc.run(["false"])
    assert type(info.value) is InfraError


def test_check_false_returns_the_code() -> None:
    res = proc.run(["sh", "-c", "echo x; exit 7"], check=False)
    assert res.returncode == 7 and res.output == "x\n"


def test_long_argv_is_abbreviated_in_the_message() -> None:
    with pytest.raises(InfraError, match=r"exit status 1: sh -c 'exit 1' a b c \.\.\.$"):
        proc.run(["sh", "-c", "exit 1", "a", "b", "c", "d", "e", "f"])


def test_missing_command_raises_given_error() -> None:
    with pytest.raises(UserError, match="command not found: thpvm-no-such-command"):
        proc.run(["thpvm-no-such-command"], error=UserError)


def test_input_and_env_and_cwd(tmp_path: Path) -> None:
    res = proc.run(["sh", "-c", "cat; echo \"$THPVM_T\"; pwd"], input=b"fed\n",
                   env={"THPVM_T": "value"}, cwd=tmp_path)
    assert res.output == f"fed\nvalue\n{tmp_path}\n"
    assert "PATH" in os.environ  # env extends, not replaces: sh was found


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    start = time.monotonic()
    with pytest.raises(InfraError, match="timed out") as info:
        proc.run(["sh", "-c", f"sleep 30 & echo $! > {pids}; sleep 30 & echo $! >> {pids}; "
                              "echo started; wait"], timeout=0.5)
    elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 2.5
    assert "started" in info.value.detail
    sleeps = [int(p) for p in pids.read_text().split()]
    assert len(sleeps) == 2
    assert wait_gone(sleeps), f"sleep processes survived: {sleeps}"


def test_timeout_with_check_false_still_raises() -> None:
    with pytest.raises(InfraError, match="timed out"):
        proc.run(["sleep", "5"], timeout=0.2, check=False)


def test_deadline_limits_run() -> None:
    deadline = proc.Deadline.after(0.3)
    start = time.monotonic()
    with pytest.raises(InfraError, match="timed out"):
        proc.run(["sleep", "5"], deadline=deadline, timeout=10)
    assert time.monotonic() - start < 2


def test_background_child_is_killed_after_normal_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    res = proc.run(["sh", "-c", f"sleep 30 >/dev/null 2>&1 & echo $! > {pidfile}; echo done"])
    assert res.returncode == 0
    assert wait_gone([int(pidfile.read_text())])


def test_deadline() -> None:
    d = proc.Deadline.after(0.2)
    assert not d.expired() and 0.1 < d.remaining() <= 0.2
    time.sleep(0.25)
    assert d.expired() and d.remaining() == 0.0
    assert proc.Deadline(time.monotonic() - 5).remaining() == 0.0


def test_spawn_own_group_and_kill_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    popen = proc.spawn(["sh", "-c", f"trap '' TERM; sleep 30 & echo $! > {pidfile}; wait"])
    try:
        assert os.getpgid(popen.pid) == popen.pid != os.getpgid(0)
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.02)
        child = int(pidfile.read_text())
        start = time.monotonic()
        proc.kill_group(popen, grace=0.3)  # sh ignores TERM: SIGKILL after grace
        assert time.monotonic() - start < 2
        assert popen.returncode is not None
        assert wait_gone([popen.pid, child])
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()


def test_kill_group_of_exited_leader_kills_stragglers(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    popen = proc.spawn(["sh", "-c", f"sleep 30 >/dev/null 2>&1 & echo $! > {pidfile}"])
    popen.wait(timeout=2)
    straggler = int(pidfile.read_text())
    assert not gone(straggler)
    proc.kill_group(popen)
    assert wait_gone([straggler])


def test_spawn_missing_command() -> None:
    with pytest.raises(InfraError, match="command not found"):
        proc.spawn(["thpvm-no-such-command"])


def test_spawn_stdout_to_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as fh:
        popen = proc.spawn(["sh", "-c", "echo hi; echo err >&2"], stdout=fh.fileno())
    assert popen.wait(timeout=2) == 0
    assert out.read_text() == "hi\nerr\n"


def test_run_interactive_returns_code() -> None:
    assert proc.run_interactive(["sh", "-c", "exit 4"]) == 4


def test_run_leaves_no_child() -> None:
    before = set(_children())
    proc.run(["sh", "-c", "echo x"])
    with pytest.raises(InfraError):
        proc.run(["sleep", "5"], timeout=0.1)
    assert set(_children()) - before == set()


def _children() -> list[int]:
    """Children of this process (zombies included: an unreaped child is a leak too)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.parametrize("how", ["spawn", "run"])
def test_children_die_with_a_sigkilled_thpvm(how: str) -> None:
    """SIGKILL runs no `finally`: PDEATHSIG must take spawn's and run's children along."""
    import signal
    import subprocess
    import sys

    call = ("proc.spawn(['sleep', '60'])" if how == "spawn"
            else "threading.Thread(target=proc.run, args=(['sleep', '60'],)).start()")
    script = ("import sys, threading, time\nfrom orchestrator import proc\n"
              f"{call}\nprint('started', flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(Path(proc.__file__).parents[1])})
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"started\n"
        kids = [c for c in _children_of(parent.pid)]
        for _ in range(100):
            kids = _children_of(parent.pid)
            if kids:
                break
            time.sleep(0.02)
        assert kids, "the child did not start"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)
        assert wait_gone(kids, timeout=5), f"children outlived their SIGKILLed parent: {kids}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _autogroup_nice_in_thread(nice: int, argv: list[str]) -> str:
    """Run `argv` through proc.run from a thread niced to `nice`; its output."""
    import threading

    out: list[str] = []

    def body() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        out.append(proc.run(argv).output)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return out[0]


@pytest.mark.skipif(not Path(proc.AUTOGROUP).exists(), reason="no scheduler autogroups")
def test_a_niced_thread_starts_children_in_a_niced_autogroup() -> None:
    """A child's new session is a new autogroup; it must carry the starter's nice value,
    or `nice` would not reach a build's make (issue 11's cold CI)."""
    text = _autogroup_nice_in_thread(7, ["sh", "-c", "cat /proc/self/autogroup; nice"])
    autogroup, own = text.splitlines()
    assert autogroup.endswith(" nice 7") and own == "7"
    assert proc.run(["cat", proc.AUTOGROUP]).output.strip().endswith(" nice 0")
