#!/usr/bin/env python3
"""The radiologist's CLI on a worklist at hospital scale (issue 12), on SQLite, PostgreSQL or both (issue 14).

Builds a synthetic worklist through the store's API (`bonetriage bench worklist`: 100,000 studies,
about 242,000 images, 72,000 reviews, 3% flagged, over 180 days) unless it exists, then runs each
command as a user would (the built binary, output to /dev/null, so not a terminal: `list` shows its
40-row first page) and prints a Markdown table of medians with the CPU it ran on.

With --worklist postgresql the worklist is a database in a PostgreSQL 15 cluster of the benchmark's own
(Benchmarks/pg_cluster.py: initdb + pg_ctl, Unix socket, PostgreSQL's default durability), kept in
.cache/bench/ like the SQLite file and started only for the run. With --worklist both, the same commands
run on both worklists (built the same way) interleaved run by run, and the table gives PostgreSQL/SQLite.

    python3 Benchmarks/worklist_scale.py --bonetriage .build/release/bonetriage [--studies 100000] [--runs 5]
    python3 Benchmarks/worklist_scale.py --worklist both --studies 100000
"""
import argparse
import os
import shutil
import tempfile
import platform
import sqlite3
import statistics
import subprocess
import sys
import time

import pg_cluster

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



def run_timed(argv):
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return elapsed


class SQLiteBackend:
    name = "SQLite"

    def __init__(self, args):
        self.path = args.db or f".cache/bench/worklist-{args.studies}.sqlite"
        self.db = self.path
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.folder = os.path.dirname(os.path.abspath(self.path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def exists(self):
        return os.path.exists(self.path)

    def prepare(self):
        pass  # `bench worklist --force` replaces the file

    def query(self, sql, parameters=()):
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as conn:
            return conn.execute(sql, parameters).fetchall()

    def describe(self):
        return f"SQLite {sqlite3.sqlite_version} file {self.path}"


class PostgresBackend:
    name = "PostgreSQL"
    database = "worklist"

    def __init__(self, args):
        self.cluster = pg_cluster.PostgresCluster(args.pg_folder or f".cache/bench/worklist-{args.studies}.pg",
                                                  settings=args.pg_setting)
        self.folder = self.cluster.folder
        self.db = None

    def __enter__(self):
        self.cluster.__enter__()
        self.db = self.cluster.conninfo(self.database)
        return self

    def __exit__(self, *exc):
        self.cluster.__exit__(*exc)

    def exists(self):
        if not self.cluster.database_exists(self.database):
            return False
        return bool(self.cluster.psql("SELECT 1 FROM pg_tables WHERE tablename = 'study'", self.database))

    def prepare(self):
        # A fresh database: `bench worklist` (as the daemon) creates the schema in it.
        self.cluster.create_database(self.database, replace=True)

    def query(self, sql, parameters=()):
        # The few queries below take integers only, written in by %d: no quoting to get wrong. Values come
        # back as text (the caller converts the counts).
        return [tuple(row) for row in self.cluster.psql(sql.replace("?", "%d") % tuple(int(p) for p in parameters), self.database)]

    def describe(self):
        return f"PostgreSQL {self.cluster.describe()}, over its Unix socket"


def build(backend, args):
    if args.rebuild or not backend.exists():
        backend.prepare()
        command = [args.bonetriage, "bench", "worklist", "--studies", str(args.studies), "--out", backend.db, "--force"]
        print(f"building the {backend.name} worklist: {' '.join(command)}", file=sys.stderr)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        backend.build_seconds = time.perf_counter() - start
        print(f"built in {backend.build_seconds:.1f} s", file=sys.stderr)


def commands_for(backend, args):
    studies, images = map(int, backend.query("SELECT count(*), (SELECT count(*) FROM image) FROM study")[0])
    reviews, flagged = map(int, backend.query("SELECT (SELECT count(*) FROM review), (SELECT count(*) FROM study WHERE flagged)")[0])
    # A review is recorded once: each run of confirm and override takes a flagged study of its own.
    flagged_ids = [row[0] for row in backend.query("SELECT shortID FROM study WHERE flagged ORDER BY id DESC LIMIT ?", (2 * args.runs,))]
    if len(flagged_ids) < 2 * args.runs:
        sys.exit(f"{backend.db} has {len(flagged_ids)} flagged studies left, {2 * args.runs} needed: run with --rebuild")
    flagged_id = flagged_ids[0]
    accession = backend.query("SELECT accessionNumber FROM study WHERE accessionNumber IS NOT NULL ORDER BY id LIMIT 1 OFFSET ?",
                              (min(5000, studies // 2),))[0][0]
    patient = backend.query("SELECT patientName FROM study WHERE patientName IS NOT NULL ORDER BY id LIMIT 1")[0][0].split("^")[0]
    folder = backend.folder
    b = [args.bonetriage]
    d = ["--db", backend.db]
    commands = {
        "list": b + ["list"] + d,
        "list --all": b + ["list", "--all"] + d,
        "list --format json": b + ["list", "--format", "json"] + d,
        "list --format csv": b + ["list", "--format", "csv"] + d,
        "list --flagged --all": b + ["list", "--flagged", "--all"] + d,
        "export --out e.csv": b + ["export", "--out", os.path.join(folder, "e.csv"), "--force"] + d,
        "export --mura --out m.csv": b + ["export", "--mura", "--out", os.path.join(folder, "m.csv"), "--force"] + d,
        "show": b + ["show", flagged_id] + d,
        "confirm": [b + ["confirm", i] + d for i in flagged_ids[:args.runs]],
        "override": [b + ["override", i, "--label", "normal"] + d for i in flagged_ids[args.runs:]],
        "list --accession": b + ["list", "--accession", accession] + d,
        "list --patient": b + ["list", "--patient", patient] + d,
    }
    header = f"{studies:,} studies, {images:,} images, {reviews:,} reviews, {flagged:,} flagged"
    return commands, header


def busy(backends, args):
    """The review commands next to a daemon that is receiving (and triaging) into the same worklist."""
    import receive_throughput as rt
    print(f"\nWhile `bonetriage serve` on the same worklist receives {args.busy} studies x 4 images (6.2 MB each, "
          f"4 associations at once, quiet period 2 s), each command run again and again until sending ends:\n")
    print("| command | " + " | ".join(f"{b.name} median (min - max, n)" for b in backends) + " |")
    print("|---|" + "---|" * len(backends))
    results = []
    for backend in backends:
        work = tempfile.mkdtemp(prefix="bonetriage-busy-")
        try:
            source = rt.find_source(None, work)
            settings = argparse.Namespace(parallel=4, max_pdu=65536, quiet_period=2.0, source_body_parts=rt.body_parts(source))
            studies = rt.make_study_set(source, os.path.join(work, "set"), args.busy, 4, announce=False)
            rt.warm_page_cache([studies])
            # Flagged studies the timed runs above did not review.
            ids = [row[0] for row in backend.query("SELECT shortID FROM study WHERE flagged AND reviewState = 'unreviewed' ORDER BY id DESC LIMIT ?", (500,))]
            state = os.path.join(work, "state")
            os.makedirs(state)
            database = backend.db if backend.db.startswith("postgresql:") else os.path.abspath(backend.db)
            daemon = rt.Daemon(args.bonetriage, rt.write_config(state, settings, database)).start()
            times = {"list": [], "show": [], "confirm": []}
            try:
                load = rt.Load(daemon.port, studies, 4, ["-R"]).start()
                b, d = [args.bonetriage], ["--db", backend.db]
                while not load.done.is_set() and ids:
                    times["list"].append(run_timed(b + ["list"] + d))
                    times["show"].append(run_timed(b + ["show", ids[-1]] + d))
                    times["confirm"].append(run_timed(b + ["confirm", ids.pop(0)] + d))
                load.wait(300)
            finally:
                daemon.stop()
            refused = [a for a in load.associations if not a.succeeded]
            if refused:
                sys.exit(f"{len(refused)} associations to the {backend.name} daemon failed: {refused[0].tail}")
            results.append(times)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for name in ("list", "show", "confirm"):
        cells = []
        for times in results:
            t = sorted(times[name])
            cells.append(f"{statistics.median(t):.3f} s ({t[0]:.3f} - {t[-1]:.3f}, {len(t)})" if t else "none")
        print(f"| `{name}` | " + " | ".join(cells) + " |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bonetriage", default=".build/release/bonetriage")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--worklist", choices=("sqlite", "postgresql", "both"), default="sqlite",
                        help="the backend(s); both: the same commands on each, interleaved, with PostgreSQL/SQLite (default: %(default)s)")
    parser.add_argument("--db", help="the SQLite worklist (default .cache/bench/worklist-N.sqlite; built when missing)")
    parser.add_argument("--pg-folder", help="the PostgreSQL cluster's folder, kept between runs (default .cache/bench/worklist-N.pg; "
                        "created, and the worklist built, when missing; at most 90 characters: the socket is in it)")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a PostgreSQL server setting (repeatable), e.g. synchronous_commit=off, the durability of the SQLite "
                             "worklist (WAL with synchronous=NORMAL: a commit is not fsync'd, a crash of the machine may lose the last "
                             "ones); default: PostgreSQL's own settings (each commit fsync'd)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true", help="build the worklist(s) again")
    parser.add_argument("--busy", type=int, default=0, metavar="STUDIES",
                        help="then, per backend, `bonetriage serve` on the same worklist receives STUDIES new studies of 4 images "
                             "(RG3_UNCR.dcm copies, storescu, 4 associations at once) while `list`, `show` and `confirm` are timed "
                             "over and over until sending ends (default: 0, not done)")
    args = parser.parse_args()
    if args.runs < 1 or args.studies < 1:
        parser.error("--runs and --studies must be at least 1")

    kinds = {"sqlite": [SQLiteBackend], "postgresql": [PostgresBackend], "both": [SQLiteBackend, PostgresBackend]}[args.worklist]
    backends = [kind(args) for kind in kinds]
    try:
        for backend in backends:
            backend.__enter__()
            build(backend, args)
        plans = [commands_for(backend, args) for backend in backends]
        for backend, (_, header) in zip(backends, plans):
            print(f"Worklist ({backend.describe()}): {header}"
                  + (f"; built in {backend.build_seconds:.0f} s" if hasattr(backend, "build_seconds") else ""))
        print(f"Median of {args.runs} runs" + (", the backends interleaved run by run" if len(backends) > 1 else "")
              + f"; {cpu_name()}, {os.cpu_count()} CPUs\n")
        if len(backends) == 1:
            print("| command | median | before (issue 12) |")
            print("|---|---|---|")
        else:
            print("| command | SQLite median | PostgreSQL median | PostgreSQL / SQLite |")
            print("|---|---|---|---|")
        for name in plans[0][0]:
            times = [[] for _ in backends]
            for run in range(args.runs):
                # Interleaved, the order alternating run by run: both see the same minute of a shared machine.
                order = list(range(len(backends)))
                if run % 2:
                    order.reverse()
                for k in order:
                    argv = plans[k][0][name]
                    times[k].append(run_timed(argv[run] if isinstance(argv[0], list) else argv))
            medians = [statistics.median(t) for t in times]
            if len(backends) == 1:
                print(f"| `{name}` | {medians[0]:.3f} s | {BEFORE.get(name, '') if isinstance(backends[0], SQLiteBackend) else ''} |", flush=True)
            else:
                print(f"| `{name}` | {medians[0]:.3f} s | {medians[1]:.3f} s | {medians[1] / medians[0]:.2f} |", flush=True)
        if args.busy:
            busy(backends, args)
    except (pg_cluster.ClusterError, sqlite3.Error) as error:
        sys.exit(f"worklist_scale: {error}")
    finally:
        for backend in backends:
            backend.__exit__(None, None, None)


if __name__ == "__main__":
    main()
