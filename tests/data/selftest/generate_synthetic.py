"""Generate the synthetic selftest outputs of this directory (synthetic-*.txt).

Run from the repository root: `python tests/data/selftest/generate_synthetic.py`.

They imitate what the khugepaged selftest writes, byte for byte where it matters:
`printf("%s...")` without newline, one `.` per 0.5 s wait tick, verdicts
`" \\e[32mOK\\e[0m\\n"`, `"\\nRun test: ..."`, the `\\r` progress of
collapse_compound_extreme, run_vmtests.sh's `# ` prefix and banners. Step
messages and case order are those of Debian 6.12.117 (selftests/mm/khugepaged.c),
6.1 (selftests/vm/khugepaged.c) and the 2026 KTAP version; verdicts, tick counts
and failures are made up. Real recorded outputs live next to them as
`<scenario>.txt` (without the `synthetic-` prefix).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
K, M = "khugepaged", "madvise"
OK, FAIL, SKIP = "\x1b[32mOK\x1b[0m", "\x1b[31mFail\x1b[0m", "\x1b[33mSkip\x1b[0m"
TIMEOUT, BADRET = "\x1b[31mTimeout\x1b[0m", "\x1b[31mFail: Bad return value\x1b[0m"
EXTREME = "Construct PTE page table full of different PTE-mapped compound pages"

# 6.12.117 anon tests: (test, {context: [step message, ...]}), execution order.
# A "*" prefix marks a collapse step (printed with wait ticks in the khugepaged context).
ANON_612: list[tuple[str, dict[str, list[str]]]] = [
    ("collapse_full", {c: ["*Collapse multiple fully populated PTE table"] for c in (K, M)}),
    ("collapse_empty", {c: ["*Do not collapse empty PTE table"] for c in (K, M)}),
    ("collapse_single_pte_entry",
     {c: ["*Collapse PTE table with single PTE entry present"] for c in (K, M)}),
    ("collapse_max_ptes_none", {
        K: ["*Maybe collapse with max_ptes_none exceeded",
            "*Collapse with max_ptes_none PTEs empty"],
        M: ["*Maybe collapse with max_ptes_none exceeded"]}),
    ("collapse_single_pte_entry_compound", {c: [
        "Allocate huge page", "Split huge page leaving single PTE mapping compound page",
        "*Collapse PTE table with single PTE mapping compound page"] for c in (K, M)}),
    ("collapse_full_of_compound", {c: [
        "Allocate huge page",
        "Split huge page leaving single PTE page table full of compound pages",
        "*Collapse PTE table full of compound pages"] for c in (K, M)}),
    ("collapse_compound_extreme", {c: [
        "EXTREME", "*Collapse PTE table full of different compound pages"] for c in (K, M)}),
    ("collapse_swapin_single_pte", {c: [
        "Swapout one page", "*Collapse with swapping in single PTE entry"] for c in (K, M)}),
    ("collapse_max_ptes_swap", {
        K: ["Swapout 65 of 512 pages", "*Maybe collapse with max_ptes_swap exceeded",
            "Swapout 64 of 512 pages", "*Collapse with max_ptes_swap pages swapped out"],
        M: ["Swapout 65 of 512 pages", "*Maybe collapse with max_ptes_swap exceeded"]}),
    ("collapse_fork", {c: [
        "Allocate small page", "Share small page over fork()",
        "*Collapse PTE table with single page shared with parent process",
        "Check if parent still has small page"] for c in (K, M)}),
    ("collapse_fork_compound", {c: [
        "Allocate huge page", "Share huge page over fork()", "Split huge page PMD in child process",
        "*Collapse PTE table full of compound pages in child",
        "Check if parent still has huge page"] for c in (K, M)}),
    ("collapse_max_ptes_shared", {
        K: ["Allocate huge page", "Share huge page over fork()", "Trigger CoW on page 255 of 512",
            "*Maybe collapse with max_ptes_shared exceeded", "Trigger CoW on page 256 of 512",
            "*Collapse with max_ptes_shared PTEs shared", "Check if parent still has huge page"],
        M: ["Allocate huge page", "Share huge page over fork()", "Trigger CoW on page 255 of 512",
            "*Maybe collapse with max_ptes_shared exceeded",
            "Check if parent still has huge page"]}),
    ("madvise_collapse_existing_thps", {M: ["*Collapse fully populated PTE table...",
                                            "Re-collapse PMD-mapped hugepage"]}),
]


def step(message: str, verdict: str = OK, ticks: int = 0) -> str:
    """One step as printf writes it: message, '...', ticks, ' verdict\\n'."""
    if message == "EXTREME":
        loop = "".join(f"\r{EXTREME} {i:3d}/512..." for i in range(1, 513))
        return f"{loop} {verdict}\n"
    return f"{message.lstrip('*')}...{'.' * ticks} {verdict}\n"


def legacy_612(contexts=(K, M), verdicts: dict[tuple[str, str, int], str] | None = None,
               stop_at: tuple[str, str, int] | None = None) -> str:
    """`./khugepaged` (6.12.117, anon): all OK unless `verdicts` says otherwise;
    `stop_at` cuts the output right after that step's message (a crash)."""
    verdicts = verdicts or {}
    out = ["Save THP and khugepaged settings... " + OK + "\n",
           step("Allocate huge page on fault"), step("Split huge PMD on MADV_DONTNEED")]
    for test, by_ctx in ANON_612:
        for ctx in contexts:
            if ctx not in by_ctx:
                continue
            out.append(f"\nRun test: {test} ({ctx}:anon)\n")
            for n, message in enumerate(by_ctx[ctx]):
                ticks = (6 if "Maybe" in message or "empty" in message else 2) \
                    if ctx == K and message.startswith("*") else 0
                if stop_at == (test, ctx, n):
                    out.append(f"{message.lstrip('*')}..." + "." * 3)
                    return "".join(out)
                out.append(step(message, verdicts.get((test, ctx, n), OK), ticks))
    out.append("Restore THP and khugepaged settings... " + OK + "\n")
    return "".join(out)


def runner(sections: list[tuple[str, str, int]]) -> str:
    """run_vmtests.sh -t thp in TAP mode around (command, output, exit code) sections."""
    out = ["TAP version 13\n"]
    counts = {"PASS": 0, "SKIP": 0, "FAIL": 0}
    for n, (cmd, text, code) in enumerate(sections, 1):
        title = f"running {cmd}"
        sep = "-" * len(title)
        out += [f"# {sep}\n", f"# {title}\n", f"# {sep}\n"]
        out += [f"# {line}\n" for line in text.rstrip("\n").split("\n")]
        name = cmd.removeprefix("./")
        if code == 0:
            counts["PASS"] += 1
            out += ["# [PASS]\n", f"ok {n} {name}\n"]
        elif code == 4:
            counts["SKIP"] += 1
            out += ["# [SKIP]\n", f"ok {n} {name} # SKIP\n"]
        else:
            counts["FAIL"] += 1
            out += ["# [FAIL]\n", f"not ok {n} {name} # exit={code}\n"]
    out.append(f"# SUMMARY: PASS={counts['PASS']} SKIP={counts['SKIP']} FAIL={counts['FAIL']}\n")
    out.append(f"1..{len(sections)}\n")
    return "".join(out)


def file_on_tmpfs_612() -> str:
    """`./khugepaged khugepaged:file /mnt/thp-tmpfs` without colours (stripped by a pipe)."""
    path = "/mnt/thp-tmpfs/collapse_test_file"
    setup = [f"Creating {path} for collapse (tmpfs)... OK\n",
             f"Opening {path} read only for collapse... OK\n"]
    out = ["Save THP and khugepaged settings... OK\n", "Allocate huge page on fault... OK\n",
           "Split huge PMD on MADV_DONTNEED... OK\n"]
    out += ["\nRun test: collapse_full (khugepaged:file)\n", *setup,
            "Collapse multiple fully populated PTE table... OK\n"]
    out += ["\nRun test: collapse_single_pte_entry (khugepaged:file)\n", *setup,
            "Collapse PTE table with single PTE entry present.. OK\n"]
    out += ["\nRun test: collapse_max_ptes_none (khugepaged:file)\n", *setup,
            "tmpfs... Skip\n"]
    out += ["\nRun test: collapse_single_pte_entry_compound (khugepaged:file)\n", *setup,
            "Allocate huge page... OK\n", "tmpfs... Skip\n"]
    out += ["\nRun test: collapse_full_of_compound (khugepaged:file)\n", *setup,
            "Allocate huge page... OK\n",
            "Split huge page leaving single PTE page table full of compound pages... OK\n",
            "Collapse PTE table full of compound pages..... OK\n"]
    out.append("Restore THP and khugepaged settings... OK\n")
    return "".join(out)


V61 = ["Collapse fully populated PTE table", "Do not collapse empty PTE table",
       "Collapse PTE table with single PTE entry present",
       "Maybe collapse with max_ptes_none exceeded", "Collapse with max_ptes_none PTEs empty",
       "Swapout one page", "Collapse with swapping in single PTE entry",
       "Swapout 65 of 512 pages", "Maybe collapse with max_ptes_swap exceeded",
       "Swapout 64 of 512 pages", "Collapse with max_ptes_swap pages swapped out",
       "Allocate huge page", "Split huge page leaving single PTE mapping compound page",
       "Collapse PTE table with single PTE mapping compound page"]


def v61() -> str:
    """`./khugepaged` (6.1, selftests/vm): two context blocks, one Fail in madvise."""
    out = ["Save THP and khugepaged settings... " + OK + "\n",
           step("Allocate huge page on fault"), step("Split huge PMD on MADV_DONTNEED")]
    out.append("\n*** Testing context: khugepaged ***\n")
    out += [step(m, OK, 2 if "ollapse" in m else 0) for m in V61]
    out.append("\n*** Testing context: madvise ***\n")
    madvise = [m for m in V61 if "max_ptes_none PTEs empty" not in m
               and "64 of 512" not in m and "swapped out" not in m]
    out += [step(m, BADRET if "single PTE entry present" in m else OK) for m in madvise]
    out += [step("Collapse fully populated PTE table"),
            "Re-collapse PMD-mapped hugepage " + OK + "\n"]
    out.append("Restore THP and khugepaged settings... " + OK + "\n")
    return "".join(out)


def ktap_2026() -> str:
    """The 2026 KTAP version, `./khugepaged khugepaged:anon`, one failing case whose
    last step passed (exit_status keeps only the last verdict) and one skipped case."""
    out = ["TAP version 13\n", "1..5\n", "# Save THP and khugepaged settings... " + OK + "\n",
           "# Allocate huge page on fault... " + OK + "\n",
           "# Split huge PMD on MADV_DONTNEED... " + OK + "\n",
           "ok 1 allocate on fault and split\n",
           "# \n# Run test: collapse_full (khugepaged:anon)\n",
           "# Collapse multiple fully populated PTE table..... " + OK + "\n",
           "ok 2 collapse_full\n",
           "# \n# Run test: collapse_empty (khugepaged:anon)\n",
           "# Do not collapse empty PTE table......... " + OK + "\n",
           "ok 3 collapse_empty\n",
           "# \n# Run test: collapse_max_ptes_none (khugepaged:anon)\n",
           "# Maybe collapse with max_ptes_none exceeded... " + FAIL + "\n",
           "# Collapse with max_ptes_none PTEs empty.... " + OK + "\n",
           "ok 4 collapse_max_ptes_none\n",
           "# \n# Run test: collapse_compound_extreme (khugepaged:anon)\n",
           f"# {EXTREME}\n", " " + SKIP + "\n",
           "ok 5 # SKIP collapse_compound_extreme\n",
           "# Totals: pass:4 fail:0 xfail:0 xpass:0 skip:1 error:0\n"]
    return "".join(out)


def main() -> None:
    """Write every synthetic fixture."""
    default = legacy_612()
    s2 = legacy_612(verdicts={("collapse_max_ptes_none", K, 0): FAIL,
                              ("collapse_max_ptes_shared", K, 5): TIMEOUT,
                              ("collapse_max_ptes_shared", K, 6): SKIP})
    files = {
        "synthetic-6.12-default-pass.txt": default,
        "synthetic-6.12-s2-fail.txt": s2,
        "synthetic-6.12-runner.txt": runner([("./khugepaged", default, 0),
                                             ("./khugepaged -s 2", s2, 2)]),
        "synthetic-6.12-crash.txt": legacy_612(stop_at=("collapse_compound_extreme", K, 1)),
        "synthetic-6.12-file-tmpfs.txt": file_on_tmpfs_612(),
        "synthetic-6.12-signal.txt": legacy_612(contexts=(K,))
        .split("\nRun test: collapse_fork ")[0]
        + "\nRun test: collapse_fork (khugepaged:anon)\nAllocate small page... " + OK
        + "\nShare small page over fork()... " + OK
        + "\nCollapse PTE table with single page shared with parent process...."
        + "Restore THP and khugepaged settings... " + OK + "\n",
        "synthetic-6.12-fatal.txt": legacy_612(contexts=(K,))
        .split("\nRun test: collapse_swapin_single_pte ")[0]
        + "\nRun test: collapse_swapin_single_pte (khugepaged:anon)\n"
        + "Swapout one page...madvise(MADV_PAGEOUT): Invalid argument\n"
        + "Restore THP and khugepaged settings... " + OK + "\n",
        "synthetic-6.12-thp-unavailable.txt": "Transparent Hugepages not available\n",
        "synthetic-6.1-default.txt": v61(),
        "synthetic-ktap-2026.txt": ktap_2026(),
    }
    for name, text in files.items():
        (HERE / name).write_text(text)


if __name__ == "__main__":
    main()
