#!/usr/bin/env python3
"""The radiologist's CLI on a worklist at hospital scale (issue 12).

Builds a synthetic worklist through the store's API (`bonetriage bench worklist`: 100,000 studies,
about 242,000 images, 72,000 reviews, 3% flagged, over 180 days) unless it exists, then runs each
command as a user would (the built binary, output to /dev/null, so not a terminal: `list` shows its
40-row first page) and prints a Markdown table of medians with the CPU it ran on.

    python3 Benchmarks/worklist_scale.py --bonetriage .build/release/bonetriage [--studies 100000] [--runs 5]
"""
import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time

# The figures measured before (issue 12), on the same number of studies.
BEFORE = {
    "list": "11.4 s (printed all 100,050 rows)",
    "list --all": "11.4 s",
    "list --format json": "98 s",
    "list --format csv": "",
    "list --flagged --all": "0.53 s",
    "export --out e.csv": "8.8 s",
    "export --mura --out m.csv": "31 s",
    "show": "0.08 - 0.11 s",
    "confirm": "0.08 - 0.11 s",
    "override": "0.08 - 0.11 s",
    "list --accession": "",
    "list --patient": "",
}


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def timed(argv, runs):
    """The median time of `runs` runs of argv, or of each argv in turn when given a list of them."""
    argvs = argv if isinstance(argv[0], list) else [argv] * runs
    times = []
    for argv in argvs:
        start = time.perf_counter()
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bonetriage", default=".build/release/bonetriage")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--db", help="the worklist (default .cache/bench/worklist-N.sqlite; built when missing)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true", help="build the worklist again")
    args = parser.parse_args()

    db = args.db or f".cache/bench/worklist-{args.studies}.sqlite"
    os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    if args.rebuild or not os.path.exists(db):
        command = [args.bonetriage, "bench", "worklist", "--studies", str(args.studies), "--out", db, "--force"]
        print("building:", " ".join(command), file=sys.stderr)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        print(f"built in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        studies, images = conn.execute("SELECT count(*), (SELECT count(*) FROM image) FROM study").fetchone()
        reviews, flagged = conn.execute("SELECT (SELECT count(*) FROM review), (SELECT count(*) FROM study WHERE flagged)").fetchone()
        # A review is recorded once: each run of confirm and override takes a flagged study of its own.
        flagged_ids = [row[0] for row in conn.execute("SELECT shortID FROM study WHERE flagged ORDER BY id DESC LIMIT ?", (2 * args.runs,))]
        if len(flagged_ids) < 2 * args.runs:
            sys.exit(f"{db} has {len(flagged_ids)} flagged studies left, {2 * args.runs} needed: run with --rebuild")
        flagged_id = flagged_ids[0]
        accession = conn.execute("SELECT accessionNumber FROM study WHERE accessionNumber IS NOT NULL ORDER BY id LIMIT 1 OFFSET 5000").fetchone()[0]
        patient = conn.execute("SELECT patientName FROM study WHERE patientName IS NOT NULL ORDER BY id LIMIT 1").fetchone()[0].split("^")[0]
    folder = os.path.dirname(os.path.abspath(db))
    b = [args.bonetriage]
    d = ["--db", db]
    commands = [
        ("list", b + ["list"] + d),
        ("list --all", b + ["list", "--all"] + d),
        ("list --format json", b + ["list", "--format", "json"] + d),
        ("list --format csv", b + ["list", "--format", "csv"] + d),
        ("list --flagged --all", b + ["list", "--flagged", "--all"] + d),
        ("export --out e.csv", b + ["export", "--out", os.path.join(folder, "e.csv"), "--force"] + d),
        ("export --mura --out m.csv", b + ["export", "--mura", "--out", os.path.join(folder, "m.csv"), "--force"] + d),
        ("show", b + ["show", flagged_id] + d),
        ("confirm", [b + ["confirm", i] + d for i in flagged_ids[:args.runs]]),
        ("override", [b + ["override", i, "--label", "normal"] + d for i in flagged_ids[args.runs:]]),
        ("list --accession", b + ["list", "--accession", accession] + d),
        ("list --patient", b + ["list", "--patient", patient] + d),
    ]
    print(f"Worklist: {studies:,} studies, {images:,} images, {reviews:,} reviews, {flagged:,} flagged; "
          f"median of {args.runs} runs; {cpu_name()}, {os.cpu_count()} CPUs\n")
    print("| command | median | before (issue 12) |")
    print("|---|---|---|")
    for name, argv in commands:
        median = timed(argv, args.runs)
        print(f"| `{name}` | {median:.3f} s | {BEFORE.get(name, '')} |", flush=True)


if __name__ == "__main__":
    main()
