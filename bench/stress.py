"""`make stress`: verdicts under load (not part of `make test`).

Runs every built-in workload ROUNDS times and the default vm-test suites VMTESTS
times while every host core is busy (stress-ng, started and stopped here), then
prints runs, mismatches, errors and the slowest checkpoint wait and writes them,
with each round's load average and the guests' boot times, as JSON to --out.

With --seeded N, each seeded kernel bug of tests/data/patches/seeded.toml is then run
N times on its patched kernel, and the report counts how many runs caught it.
Last, under the same load, GUEST_COMMANDS commands in one boot over PARALLEL SSH
channels, each output checked byte for byte (bench/guest_commands.py, issue 15
row 5): the count of truncated or wrong outputs must be 0.

Usage: python bench/stress.py --out FILE [--rounds 20] [--vm-tests 5] [--seeded 20]
       [--guest-commands 10000] [--command-parallel 6]
       [--isolation guest|shared] [--no-load] [--minutes M]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

import guest_commands  # bench/, next to this file

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from orchestrator.jobs.stress import load_seeded, stress

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON result file")
    ap.add_argument("--rounds", type=int, default=20, help="rounds of all built-in workloads")
    ap.add_argument("--vm-tests", type=int, default=5, help="rounds of the default vm-test")
    ap.add_argument("--seeded", type=int, default=20,
                    help="rounds of every seeded kernel bug (tests/data/patches/seeded.toml)")
    ap.add_argument("--isolation", choices=["guest", "shared"], default="guest")
    ap.add_argument("--no-load", action="store_true", help="do not start the CPU load")
    ap.add_argument("--minutes", type=float, default=None,
                    help="start no new round after this many minutes")
    ap.add_argument("--keep", type=Path, default=None, help="keep run directories here")
    ap.add_argument("--guest-commands", type=int, default=10000,
                    help="commands in one boot, each output checked (0: none)")
    ap.add_argument("--command-parallel", type=int, default=6,
                    help="SSH channels at a time for --guest-commands")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)  # unwind: every guest and the load are stopped
    until = time.monotonic() + args.minutes * 60 if args.minutes else None
    with tempfile.TemporaryDirectory(prefix="thpvm-stress-") as tmp:
        runs = args.keep or Path(tmp)
        rep = stress(runs, args.rounds, args.vm_tests, args.isolation, not args.no_load, until,
                     seeded=load_seeded(REPO / "tests/data/patches/seeded.toml", REPO),
                     seeded_rounds=args.seeded)
    commands = _guest_commands(args.guest_commands, args.command_parallel, not args.no_load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {"rounds": args.rounds, "vm_tests": args.vm_tests, "seeded_rounds": args.seeded,
            "isolation": args.isolation,
            **rep.to_dict(), "guest_commands": commands}
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(rep.summary())
    if commands:
        print(f"guest commands: {commands['commands']} of {commands['requested']} in one boot, "
              f"{commands['truncated_or_wrong']} truncated or wrong, "
              f"{commands['commands_per_s']}/s over {commands['parallel']} channels")
    print(f"written to {args.out}")
    bad = rep.workload_mismatches or rep.workload_errors or rep.vmtest_failures or \
        rep.vmtest_errors or rep.seeded_misses or \
        (commands and not guest_commands.passed(commands))
    return 1 if bad else 0


def _guest_commands(count: int, parallel: int, load: bool) -> dict[str, object]:
    """bench/guest_commands.py's run, under the CPU load unless `load` is false."""
    from orchestrator.jobs.stress import cpu_hog

    if count <= 0:
        return {}
    with cpu_hog() if load else contextlib.nullcontext("no added load") as what:
        return {"load": what, **guest_commands.run(count, parallel)}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
