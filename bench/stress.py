"""`make stress`: verdicts under load (not part of `make test`).

Runs every built-in workload ROUNDS times and the default vm-test suites VMTESTS
times while every host core is busy (stress-ng, started and stopped here), then
prints runs, mismatches, errors and the slowest checkpoint wait and writes them,
with each round's load average and the guests' boot times, as JSON to --out.

With --seeded N, each seeded kernel bug of tests/data/patches/seeded.toml is then run
N times on its patched kernel, and the report counts how many runs caught it.

Usage: python bench/stress.py --out FILE [--rounds 20] [--vm-tests 5] [--seeded 20]
       [--isolation guest|shared] [--no-load] [--minutes M]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)  # unwind: every guest and the load are stopped
    until = time.monotonic() + args.minutes * 60 if args.minutes else None
    with tempfile.TemporaryDirectory(prefix="thpvm-stress-") as tmp:
        runs = args.keep or Path(tmp)
        rep = stress(runs, args.rounds, args.vm_tests, args.isolation, not args.no_load, until,
                     seeded=load_seeded(REPO / "tests/data/patches/seeded.toml", REPO),
                     seeded_rounds=args.seeded)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {"rounds": args.rounds, "vm_tests": args.vm_tests, "seeded_rounds": args.seeded,
            "isolation": args.isolation,
            **rep.to_dict()}
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(rep.summary())
    print(f"written to {args.out}")
    bad = rep.workload_mismatches or rep.workload_errors or rep.vmtest_failures or \
        rep.vmtest_errors or rep.seeded_misses
    return 1 if bad else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
