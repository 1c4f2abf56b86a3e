"""The `thpvm` command line: one handler per subcommand.

This is the only place that turns errors into exit codes (see errors.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from orchestrator import __version__
from orchestrator.errors import (
    EXIT_ABORT,
    EXIT_COULD_NOT_TEST,
    EXIT_FOR_WORKLOAD,
    EXIT_OK,
    ThpvmError,
    UserError,
    exit_code_for,
)

log = logging.getLogger("thpvm")

Handler = Callable[[argparse.Namespace], int]
Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

if TYPE_CHECKING:
    from orchestrator.build import kernel as kernel_types
    from orchestrator.jobs import bisect_step as bisect_step_types
    from orchestrator.jobs import bisection as bisection_types
    from orchestrator.jobs import trials as trials_types
    from orchestrator.jobs import validate as validate_types
    from orchestrator.jobs import vmtest as vmtest_types
    from orchestrator.machine import session as session_types


def _tree_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", type=Path,
                   help="kernel source tree (default: Debian linux-source-6.12)")
    p.add_argument("--rev",
                   help="git revision of --tree to build (checked out in a scratch worktree)")
    _kconfig_args(p)
    p.add_argument("--patch", type=Path, action="append", default=[],
                   help="apply this patch (-p1) to a cached copy of the tree first (repeatable)")
    p.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")


def _kernel_request(args: argparse.Namespace) -> kernel_types.KernelRequest:
    from orchestrator.build import kernel

    return kernel.KernelRequest(getattr(args, "tree", None), getattr(args, "rev", None),
                                list(args.fragment), list(args.config),
                                getattr(args, "jobs", None), list(getattr(args, "patch", [])))


def cmd_kernel_build(args: argparse.Namespace) -> int:
    from orchestrator.build import kernel
    from orchestrator.report.progress import Progress

    progress = Progress()
    req = _kernel_request(args)
    with progress.stage("kernel build"):
        art = kernel.build_kernel(req, progress.update)
    state = "cache hit" if art.cached else f"built in {art.build_seconds:.0f} s"
    print(f"kernel {art.release} ({state})\n  bzImage: {art.bzimage}\n  config:  {art.config}")
    if args.json:
        print(json.dumps(kernel.describe(art), indent=2))
    return EXIT_OK


def _vm_request(args: argparse.Namespace) -> vmtest_types.VmTestRequest:
    """The one request type, from any subcommand's options (missing ones: defaults)."""
    from orchestrator.jobs import vmtest

    return vmtest.VmTestRequest(
        kernel=_kernel_request(args),
        suite=vmtest.suite_items(args.suite) or list(vmtest.DEFAULT_SUITE),
        workload_files=list(getattr(args, "workload", [])), accel=args.accel,
        append=getattr(args, "append", ""), out=getattr(args, "out", None),
        isolation=getattr(args, "isolation", "guest"),
        machine=getattr(args, "machine", None) or "default",
        allow_warn=list(getattr(args, "allow_warn", [])))


def _test_template(args: argparse.Namespace) -> vmtest_types.VmTestRequest:
    """The test every bisect step / validate side runs (its tree is set per run)."""
    return _vm_request(argparse.Namespace(**{**vars(args), "tree": None, "rev": None,
                                             "patch": [], "out": None}))


def _policy(args: argparse.Namespace) -> trials_types.TrialPolicy:
    from orchestrator.jobs import trials

    return trials.TrialPolicy(repeat=args.repeat,
                              boot_failure=getattr(args, "boot_failure", "skip"),
                              flaky=getattr(args, "flaky", "skip"))


def cmd_vm_test(args: argparse.Namespace) -> int:
    return _run_and_summarize(args, only_files=False)


def _run_and_summarize(args: argparse.Namespace, only_files: bool) -> int:
    from orchestrator.jobs import vmtest
    from orchestrator.report.progress import Progress, format_summary

    progress = Progress()
    req = _vm_request(args)
    if only_files:
        req.suite = []  # nothing but the given workload specs
    outcome = vmtest.run_vm_test(req, progress)
    progress.clear()
    print(format_summary(outcome.result, outcome.run_dir))
    print(f"run directory: {outcome.run_dir}")
    return outcome.exit_code


def cmd_workload_run(args: argparse.Namespace) -> int:
    args.suite, args.workload = None, args.specs
    return _run_and_summarize(args, only_files=True)


def cmd_workload_compare(args: argparse.Namespace) -> int:
    from orchestrator.judge.rundir import compare_run_dir
    from orchestrator.spec import load_spec

    spec = load_spec(args.dir / "spec.toml")
    v = compare_run_dir(args.dir, spec, args.version if args.repredict else None)
    print(f"{spec.name}: {v.status}: {v.explanation}")
    return EXIT_FOR_WORKLOAD.get(v.status, EXIT_COULD_NOT_TEST)


def cmd_image_build(args: argparse.Namespace) -> int:
    from orchestrator.build import image

    img = image.build_image(args.recipe, force=args.force)
    print(f"image {img.recipe}: {img.qcow2}\n  sha256 {img.sha256}")
    return EXIT_OK


def cmd_boot(args: argparse.Namespace) -> int:
    from orchestrator import cache
    from orchestrator.build import image, kernel
    from orchestrator.machine import session

    art = kernel.build_kernel(_kernel_request(args))
    img = image.build_image()
    run_dir = args.out or cache.new_run_dir("boot")
    run_dir.mkdir(parents=True, exist_ok=True)
    with session.guest(art.bzimage, img, run_dir, args.accel, args.append,
                       args.machine) as g:
        print(f"booted {art.release} with {g.accel} ({g.accel_reason}): "
              f"ready in {g.boot_seconds:.2f} s, SSH in {g.ssh_seconds:.2f} s "
              f"({g.boot_seconds + g.ssh_seconds:.2f} s total)")
        cache.write_json(run_dir / "metadata.json", {
            "accel": g.accel, "accel_reason": g.accel_reason, "kernel": kernel.describe(art),
            "boot_seconds": g.boot_seconds, "ssh_seconds": g.ssh_seconds})
        code = EXIT_OK
        if args.command_line:
            res = g.shell.run(" ".join(args.command_line), timeout=args.timeout)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            code = EXIT_OK if res.ok else 1
        if args.interactive:
            code = _interactive_ssh(g, run_dir)
    print(f"run directory: {run_dir}")
    return code


def _interactive_ssh(g: session_types.Guest, run_dir: Path) -> int:
    from orchestrator import proc

    img = g.vm.req.image
    known = run_dir / "known_hosts"
    kind, blob = img.host_key_pub.read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{g.vm.port} {kind} {blob}\n")
    return proc.run_interactive([
        "ssh", "-t", "-p", str(g.vm.port), "-i", str(img.ssh_key),
        "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes", "root@127.0.0.1"])


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report.progress import format_summary
    from orchestrator.report.render import regenerate, resolve_run_dir

    run_dir = resolve_run_dir(args.run_dir)
    result = regenerate(run_dir)
    print(format_summary(result, run_dir))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from orchestrator import cache
    from orchestrator.report.render import format_runs, list_runs

    if args.prune is not None:
        if args.prune < 0:
            raise UserError(f"--prune {args.prune}: expected a number of runs to keep (>= 0)")
        from orchestrator.machine import leftovers

        for line in leftovers.reap(cache.cache_dir("runs")):
            print(line)
        for path in cache.prune_runs(args.prune, busy=leftovers.in_use):
            print(f"deleted {path}")
        return EXIT_OK
    runs = list_runs(args.root or cache.cache_dir("runs"), limit=args.limit)
    print(json.dumps([r.to_dict() for r in runs], indent=2) if args.json else format_runs(runs))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from orchestrator.judge.rundiff import diff_runs
    from orchestrator.report.render import resolve_run_dir
    from orchestrator.report.resultfile import load_result

    diff = diff_runs(load_result(resolve_run_dir(args.run_a)),
                     load_result(resolve_run_dir(args.run_b)),
                     min_change=args.min_change, rel_tolerance=args.tolerance)
    print(diff.to_json() if args.json else diff.format_diff())
    return EXIT_OK


def cmd_model_predict(args: argparse.Namespace) -> int:
    from orchestrator.model import format_prediction, predict
    from orchestrator.spec import load_workload

    pred = predict(load_workload(args.spec), version=args.version)
    print(json.dumps(pred.to_json(), indent=2) if args.json else format_prediction(pred))
    return EXIT_OK


def bisect_request(args: argparse.Namespace) -> bisection_types.BisectRequest:
    """`thpvm bisect`'s options as its request."""
    from orchestrator.jobs import bisection

    return bisection.BisectRequest(tree=args.tree, good=args.good, bad=args.bad,
                                   test=_test_template(args), policy=_policy(args), out=args.out)


def step_options(args: argparse.Namespace) -> bisect_step_types.StepOptions:
    """`thpvm bisect-step`'s options as its request."""
    from orchestrator.jobs import bisect_step

    return bisect_step.StepOptions(tree=args.tree, test=_test_template(args),
                                   policy=_policy(args), step_log=args.step_log, out=args.out)


def validate_request(args: argparse.Namespace) -> validate_types.ValidateRequest:
    """`thpvm validate`'s options as its request."""
    from orchestrator.jobs import validate

    return validate.ValidateRequest(tree=args.tree, base=args.base, patches=list(args.patch),
                                    head=args.head, test=_test_template(args),
                                    repeat=args.repeat, out=args.out)


def cmd_bisect(args: argparse.Namespace) -> int:
    from orchestrator.jobs import bisection

    outcome = bisection.run_bisect(bisect_request(args))
    print(outcome.report, end="")
    print(f"run directory: {outcome.run_dir}")
    return outcome.exit_code


def cmd_bisect_step(args: argparse.Namespace) -> int:
    from orchestrator.jobs import bisect_step

    return bisect_step.run_step(step_options(args))  # 0/1/125/128 only


def cmd_validate(args: argparse.Namespace) -> int:
    from orchestrator.jobs import validate

    outcome = validate.run_validate(validate_request(args))
    print(outcome.report, end="")
    print(f"run directory: {outcome.run_dir}")
    return outcome.exit_code


def cmd_matrix_plan(args: argparse.Namespace) -> int:
    from orchestrator.jobs import matrix, matrixplan
    from orchestrator.jobs.matrixspec import load_matrix

    spec = load_matrix(args.file)
    jobs = matrix.select_jobs(spec, args.shard, [])
    if args.format == "github":
        print(json.dumps(matrixplan.github_include(jobs, args.shards)))
    elif args.format == "gitlab":
        import yaml

        doc = matrixplan.gitlab_child_pipeline(str(args.file), jobs, args.shards)
        print(yaml.safe_dump(doc, sort_keys=False, width=1000), end="")
    else:
        print(json.dumps(matrixplan.plan_json(spec, jobs), indent=2))
    return EXIT_OK


def cmd_matrix_run(args: argparse.Namespace) -> int:
    from orchestrator.jobs import matrix

    req = matrix.MatrixRunRequest(str(args.file), args.parallel, args.shard, args.out, args.only)
    outcome = matrix.run_matrix(req, say=lambda line: print(line, flush=True))
    print(f"matrix directory: {outcome.out}")
    return outcome.exit_code


def cmd_matrix_merge(args: argparse.Namespace) -> int:
    from orchestrator import cache
    from orchestrator.report import matrixmerge, matrixreport

    merged = matrixmerge.merge_dirs(args.dirs)
    out = args.out or cache.new_run_dir("matrix-merge")
    summary = matrixreport.write_merged(merged, out)
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    print(f"{summary['verdict']}: {len(merged.kernels)} kernels, {len(merged.jobs)} jobs, "
          f"{counts or 'no cases'}")
    for f in summary["flaky"]:
        print(f"  flaky: {f['case']} on {f['kernel']}: {f['failed']} of {f['runs']} failed")
    print(f"merged report: {out / matrixreport.HTML_NAME}")
    return int(summary["exit_code"])


def cmd_lava_job(args: argparse.Namespace) -> int:
    from orchestrator.jobs import vmtest
    from orchestrator.lava import job, validate

    req = job.LavaJobRequest(_kernel_request(args),
                             vmtest.suite_items(args.suite) or list(vmtest.DEFAULT_SUITE),
                             args.out, args.machine)
    written = job.write_job(req)
    print(f"LAVA job: {written.path}")
    errors = validate.schema_errors(written.path)
    if errors:
        raise UserError(f"{written.path}: rejected by lava_common's job schema: {errors}")
    print("  lava_common schema: valid")
    if args.lava_run_validate:
        errors = validate.pipeline_errors(written.path, args.out / "lava-validate")
        if errors:
            raise UserError(f"{written.path}: lava-run --validate failed", errors)
        print("  lava-run --validate: valid")
    return EXIT_OK


def cmd_lava_import(args: argparse.Namespace) -> int:
    from orchestrator.lava import judge as lava_judge
    from orchestrator.report.progress import format_summary
    from orchestrator.report.resultfile import load_result

    code, run_dir = lava_judge.import_results(args.results_dir, args.out)
    print(format_summary(load_result(run_dir), run_dir))
    print(f"run directory: {run_dir}")
    return code


def _accel_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"],
                   help="QEMU accelerator; auto probes KVM once per host and falls back to TCG")


def _kconfig_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fragment", type=Path, action="append", default=[],
                   help="extra kconfig fragment on top of kconfigs/{base,thp}.config (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="CONFIG_X=y",
                   help="one-off kconfig option (repeatable)")


def _suite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", action="append", metavar="SUITE",
                   help="selftest | selftest-full | selftest:ID[+ID] | workloads | "
                        "workloads:NAME[+NAME] | all (comma-separated or repeated; "
                        "default selftest,workloads)")


def _test_args(p: argparse.ArgumentParser) -> None:
    """The options of the test that bisect, bisect-step and validate run per kernel."""
    _suite_arg(p)
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs per kernel, decided by majority (default 1)")
    _kconfig_args(p)
    _accel_arg(p)
    _verdict_args(p)


def _policy_args(p: argparse.ArgumentParser) -> None:
    """How boot failures and disagreeing repeats are judged (bisect, bisect-step)."""
    from orchestrator.jobs import trials

    p.add_argument("--boot-failure", choices=trials.BOOT_POLICIES, default="skip",
                   help="a kernel that does not boot is skipped (default) or bad")
    p.add_argument("--flaky", choices=trials.FLAKY_POLICIES, default="skip",
                   help="repeats that disagree: skip the commit (default) or take the majority")


def _guest_args(p: argparse.ArgumentParser) -> None:
    _tree_args(p)
    _accel_arg(p)
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument("--out", type=Path, help="run directory (default: under the cache)")
    p.add_argument("--machine", default="default", metavar="PROFILE",
                   help="machine profile: machine/profiles/<PROFILE>.toml or a path")


def _verdict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-warn", action="append", default=[], metavar="REGEX",
                   help="tolerate kernel warnings with a console line matching REGEX "
                        "(repeatable; by default any WARN during the run fails it)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(prog="thpvm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"thpvm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_guest_commands(sub)
    _add_workload_commands(sub)
    _add_result_commands(sub)
    _add_git_commands(sub)
    _add_matrix_commands(sub)
    _add_lava_commands(sub)
    return parser


def _add_guest_commands(sub: Sub) -> None:
    """kernel build, image build, boot, shell, vm-test."""
    kern = sub.add_parser("kernel", help="kernel builds").add_subparsers(dest="sub", required=True)
    kb = kern.add_parser("build", help="build (or reuse) a THP-ready kernel")
    _tree_args(kb)
    kb.add_argument("--json", action="store_true", help="print build metadata as JSON")
    kb.set_defaults(handler=cmd_kernel_build)

    img = sub.add_parser("image", help="guest images").add_subparsers(dest="sub", required=True)
    ib = img.add_parser("build", help="build (or reuse) the guest base image")
    ib.add_argument("--recipe", default="debian-bookworm", help="vm-images/<recipe>.toml or a path")
    ib.add_argument("--force", action="store_true", help="rebuild even if cached")
    ib.set_defaults(handler=cmd_image_build)

    boot = sub.add_parser("boot", help="boot a guest, optionally run a command, then stop")
    _guest_args(boot)
    boot.add_argument("--timeout", type=float, default=600, help="command timeout (s)")
    boot.add_argument("command_line", nargs="*", metavar="CMD", help="command to run over SSH")
    boot.set_defaults(handler=cmd_boot, interactive=False)

    shell = sub.add_parser("shell", help="boot a fresh guest and open an interactive SSH shell")
    _guest_args(shell)
    shell.set_defaults(handler=cmd_boot, interactive=True, command_line=[], timeout=0)

    vt = sub.add_parser("vm-test", help="the main job: selftest + workloads vs model, verdict")
    _guest_args(vt)
    _suite_arg(vt)
    vt.add_argument("--workload", type=Path, action="append", default=[],
                    help="run this workload spec file too (repeatable)")
    _isolation_arg(vt)
    _verdict_args(vt)
    vt.set_defaults(handler=cmd_vm_test)


def _isolation_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--isolation", choices=["guest", "shared"], default="guest",
                   help="guest (default): each workload in a fresh guest, so khugepaged has no "
                        "history from the selftest or earlier workloads; shared: one guest")


def _add_workload_commands(sub: Sub) -> None:
    """workload run/compare, model predict."""
    wl = sub.add_parser("workload", help="workloads").add_subparsers(dest="sub", required=True)
    wr = wl.add_parser("run", help="run workload specs in one guest, each compared with the model")
    _guest_args(wr)
    wr.add_argument("specs", nargs="+", type=Path, metavar="SPEC", help="workload spec files")
    _isolation_arg(wr)
    _verdict_args(wr)
    wr.set_defaults(handler=cmd_workload_run, suite=None)

    wc = wl.add_parser("compare", help="re-compare a workload run directory with the model")
    wc.add_argument("dir", type=Path, metavar="DIR",
                    help="workload directory (driver.jsonl, spec.toml)")
    wc.add_argument("--repredict", action="store_true",
                    help="predict again instead of predicted.json")
    wc.add_argument("--version", default="6.12", help="model profile for --repredict")
    wc.set_defaults(handler=cmd_workload_compare)

    mp = sub.add_parser("model", help="the in-repo khugepaged model")
    msub = mp.add_subparsers(dest="model_cmd", required=True)
    pp = msub.add_parser("predict", help="predict counters, smaps and per-PMD decisions")
    pp.add_argument("spec", metavar="SPEC", help="workload spec file or shipped workload name")
    pp.add_argument("--version", default="6.12",
                    help="kernel version profile (default 6.12; unknown: nearest, with a warning)")
    pp.add_argument("--json", action="store_true", help="print the prediction as JSON")
    pp.set_defaults(handler=cmd_model_predict)


def _add_result_commands(sub: Sub) -> None:
    """report, runs, diff."""
    rp = sub.add_parser("report", help="regenerate junit.xml and report.html of a run")
    rp.add_argument("run_dir", metavar="RUN_DIR",
                    help="run directory (or a run id from 'thpvm runs')")
    rp.set_defaults(handler=cmd_report)
    rl = sub.add_parser("runs", help="list recent runs with their verdicts")
    rl.add_argument("-n", "--limit", type=int, default=20, help="show at most N runs (default 20)")
    rl.add_argument("--root", type=Path, help="runs directory (default: the cache's runs/)")
    rl.add_argument("--json", action="store_true", help="print the list as JSON")
    rl.add_argument("--prune", type=int, metavar="KEEP",
                    help="reap what killed runs left (QEMU, sockets, disks), then delete all but "
                         "the KEEP newest runs under the cache (not --out dirs, not live runs)")
    rl.set_defaults(handler=cmd_runs)
    dp = sub.add_parser("diff", help="compare two runs: case status, workload verdicts, counters")
    dp.add_argument("run_a", metavar="RUN_A", help="base run directory or run id")
    dp.add_argument("run_b", metavar="RUN_B", help="other run directory or run id")
    dp.add_argument("--min-change", type=int, default=1, help="ignore counter moves smaller than N")
    dp.add_argument("--tolerance", type=float, default=0.0,
                    help="ignore counter moves within this fraction")
    dp.add_argument("--json", action="store_true", help="print the diff as JSON")
    dp.set_defaults(handler=cmd_diff)


def _add_git_commands(sub: Sub) -> None:
    """bisect, bisect-step, validate."""
    bi = sub.add_parser("bisect", help="find the first bad kernel commit (git bisect run)")
    bi.add_argument("--tree", type=Path, required=True,
                    help="the kernel git tree to bisect (left exactly as it is)")
    bi.add_argument("--good", required=True, metavar="REV", help="a known good revision")
    bi.add_argument("--bad", required=True, metavar="REV", help="a known bad revision")
    _test_args(bi)
    _policy_args(bi)
    bi.add_argument("--out", type=Path, help="run directory (default: a new one in the cache)")
    bi.set_defaults(handler=cmd_bisect)

    bs = sub.add_parser("bisect-step", help="judge the checked-out commit for git bisect run "
                        "(exit 0 good, 1 bad, 125 skip, 128 abort)")
    bs.add_argument("--tree", type=Path, default=Path("."),
                    help="kernel git tree to test as checked out (default: .)")
    _test_args(bs)
    _policy_args(bs)
    bs.add_argument("--step-log", type=Path, default=None,
                    help="append a JSON line per step here (default $THPVM_BISECT_LOG)")
    bs.add_argument("--out", type=Path, default=None,
                    help="directory for this step's run directories")
    bs.set_defaults(handler=cmd_bisect_step)

    va = sub.add_parser("validate", help="A/B test a patch or revision against a base")
    va.add_argument("--tree", type=Path, required=True,
                    help="the kernel git tree (left exactly as it is)")
    va.add_argument("--base", required=True, metavar="REV", help="the revision to compare with")
    what = va.add_mutually_exclusive_group(required=True)
    what.add_argument("--patch", type=Path, nargs="+", action="extend", default=[],
                      metavar="FILE", help="mbox or diff patch(es) applied on --base, in order")
    what.add_argument("--head", metavar="REV", help="a revision to compare with --base instead")
    _test_args(va)
    va.add_argument("--out", type=Path, help="run directory (default: a new one in the cache)")
    va.set_defaults(handler=cmd_validate)


def _add_matrix_commands(sub: Sub) -> None:
    """matrix plan, run, merge."""
    mx = sub.add_parser("matrix", help="many kernels x suites x repeats (local, CI, merge)")
    msub = mx.add_subparsers(dest="sub", required=True)
    mp = msub.add_parser("plan", help="list the jobs of a matrix file (stable ids)")
    mp.add_argument("file", type=Path, metavar="FILE", help="matrix TOML (or a shipped name)")
    mp.add_argument("--format", default="json", choices=["json", "github", "gitlab"],
                    help="json: the jobs; github: strategy.matrix include list; "
                         "gitlab: a child pipeline with parallel:matrix")
    mp.add_argument("--shards", type=int, default=0,
                    help="github/gitlab: number of shards (default 0: one per job)")
    mp.add_argument("--shard", metavar="I/N", help="only the I-th of N deterministic slices")
    mp.set_defaults(handler=cmd_matrix_plan)
    mr = msub.add_parser("run", help="run a matrix's jobs here, N guests at a time")
    mr.add_argument("file", type=Path, metavar="FILE", help="matrix TOML (or a shipped name)")
    mr.add_argument("--jobs", dest="parallel", type=int, default=1, metavar="N",
                    help="guests at a time (default 1)")
    mr.add_argument("--shard", metavar="I/N", help="only the I-th of N deterministic slices")
    mr.add_argument("--only", action="append", default=[], metavar="JOB_ID",
                    help="only this job id (repeatable)")
    mr.add_argument("--out", type=Path, help="matrix directory (default: under the cache)")
    mr.set_defaults(handler=cmd_matrix_run)
    mm = msub.add_parser("merge", help="merge matrix run directories into one report")
    mm.add_argument("dirs", type=Path, nargs="+", metavar="DIR",
                    help="matrix or run directories (searched recursively)")
    mm.add_argument("--out", type=Path, help="output directory (default: under the cache)")
    mm.set_defaults(handler=cmd_matrix_merge)


def _add_lava_commands(sub: Sub) -> None:
    """lava job, lava import."""
    lava = sub.add_parser("lava", help="LAVA: job definitions and importing their results")
    lsub = lava.add_subparsers(dest="sub", required=True)
    lj = lsub.add_parser("job", help="build kernel, image and tools; write a LAVA QEMU job")
    _tree_args(lj)
    _suite_arg(lj)
    lj.add_argument("--out", type=Path, required=True, help="directory for job.yaml + files")
    lj.add_argument("--machine", default="default", metavar="PROFILE", help="machine profile")
    lj.add_argument("--lava-run-validate", action="store_true",
                    help="also build lava-dispatcher's pipeline (lava-run --validate)")
    lj.set_defaults(handler=cmd_lava_job)
    li = lsub.add_parser("import", help="a LAVA job's results as a judged thpvm run directory")
    li.add_argument("results_dir", type=Path, metavar="RESULTS_DIR",
                    help="output.yaml (the LAVA job log) and job.yaml")
    li.add_argument("--out", type=Path, help="run directory (default: under the cache)")
    li.set_defaults(handler=cmd_lava_import)


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    if os.environ.get("THPVM_LOG"):
        level = getattr(logging, os.environ["THPVM_LOG"].upper(), level)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _terminate_like_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` (QEMU kill) runs."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run thpvm with `argv`; return the exit code (never raises for expected errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help is 0, bad usage is 2
        code = int(e.code or 0)
        words = sys.argv[1:] if argv is None else list(argv)
        if code and "bisect-step" in words:  # git bisect run would take 2 for "bad"
            return EXIT_ABORT
        return code
    _setup_logging(args.verbose)
    _terminate_like_interrupt()
    handler: Handler = args.handler
    try:
        return handler(args)
    except ThpvmError as e:
        print(f"thpvm: error: {e.message}", file=sys.stderr)
        if e.detail:
            print(e.detail, file=sys.stderr)
        return exit_code_for(e)
    except KeyboardInterrupt as e:
        print("thpvm: interrupted", file=sys.stderr)
        return exit_code_for(e)
    except Exception as e:  # a thpvm bug: abort (128), never a verdict
        log.exception("internal error")
        print(f"thpvm: internal error: {e!r}", file=sys.stderr)
        return exit_code_for(e)


if __name__ == "__main__":
    sys.exit(main())
