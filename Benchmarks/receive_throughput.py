#!/usr/bin/env python3
"""DICOM receive throughput and triage latency: BoneTriage's receiver beside DCMTK's storescp, in one run.

What it does (all receivers on this machine, in the same run, interleaved round by round):

  * Makes N studies of M images (default 8 x 4) from a real radiograph, RG3_UNCR.dcm from the
    MIT-licensed pydicom-data wheel (an uncompressed 1760x1760 extremity CR, about 6 MB), each copy
    with new Study / Series / SOP Instance UIDs (dcmodify). Two sets: one WITHOUT Number of Study
    Related Instances (0020,1208), so BoneTriage waits for its quiet period, and one WITH it set to M,
    so a study is triaged as soon as its M-th image arrives.
  * Sends a set with one `storescu` process per study (one association each), P at a time
    (default 4), to:
      - `bonetriage serve` (a fresh daemon, state folder and worklist per round),
      - `storescp +xa` (DCMTK's receiver; without --fork it handles one association at a time),
      - `storescp +xa --fork` (one child process per association), unless --storescp-modes says not.
    The same files, the same client command line and the same maximum PDU are used for all of them.
  * Throughput: images acknowledged with Success / (last storescu exit - first storescu start), per
    round; BoneTriage / storescp is taken per round (same minute, same noise), and the median of
    those ratios is reported. The target (>= 0.90) is checked against the first --storescp-modes
    entry (`storescp +xa --fork`, the concurrent one, by default); the ratio against the other is printed too.
  * Latency (BoneTriage only): from a study's last image being acknowledged (storescu's
    "Received Store Response (Success)" line, read as it is printed) to the study appearing as
    triaged in `bonetriage list --db DB --format json`, polled every --poll-interval seconds.
    Without (0020,1208) the quiet period is subtracted; with it, nothing is. The daemon's own
    "study triaged" log line (read as it is printed) gives a second, poll-free figure, and its ms=
    splits the latency into waiting (behind other studies: one triage worker) and triaging.
    The (0020,1208)=M set goes to BoneTriage only, once per round, for its latency.

Caveats the output repeats: BoneTriage answers C-STORE success only after the file is fsync'd in its
spool and recorded in the worklist; storescp does no fsync. Each round starts after os.sync() so one
receiver's dirty pages are not written back during the other's round. Polling the worklist costs CPU
(a process per poll), so in the rounds that are compared it starts only when the first triage can be
due (quiet period after the first finished study, minus a margin) or when sending is over.

Run from the repository root (needs dcmtk: storescu, storescp, echoscu, dcmodify, dcmdump):

    python3 Benchmarks/receive_throughput.py                 # or: make bench-receive
    python3 Benchmarks/receive_throughput.py --json          # one JSON object on stdout
    python3 Benchmarks/receive_throughput.py --save out.json # the report, and the JSON (per study) in a file
    python3 Benchmarks/receive_throughput.py --studies 16 --images 4 --parallel 4 --rounds 3
    python3 Benchmarks/receive_throughput.py --worklist both --storescp-modes none   # SQLite vs PostgreSQL

Worklist backend (issue 14): --worklist sqlite (the default), postgresql, or both. PostgreSQL is a cluster
of the benchmark's own (Benchmarks/pg_cluster.py: initdb + pg_ctl in the temporary folder, Unix socket,
PostgreSQL's default durability: fsync and synchronous_commit on), started once for the run and stopped at
its end (also on Ctrl-C); each PostgreSQL round gets a fresh database, as each SQLite round a fresh file.
With both, the SQLite and PostgreSQL daemons run in the same rounds, interleaved, and the report gives
PostgreSQL / SQLite per round (images/s) and for the latencies. --review-probe also times the radiologist's
commands (`list` first page, `show`, `confirm`) against the daemon while it is still receiving, in the
(0020,1208) rounds (which are not compared for throughput).

Progress goes to stderr. Exit status 0 when every round completed (whether or not the targets are met),
1 when something failed (a receiver did not start, an image was refused, a study was not triaged).
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pg_cluster

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARY = os.path.join(REPO_ROOT, ".build", "release", "bonetriage")
DEMO_FILE = os.path.join(REPO_ROOT, ".cache", "demo", "data_store", "data", "RG3_UNCR.dcm")
DEMO_WHEEL = os.path.join(REPO_ROOT, ".cache", "wheels", "pydicom_data-1.0.0-py3-none-any.whl")
WHEEL_MEMBER = "data_store/data/RG3_UNCR.dcm"

CALLING_AE = "BENCH"
CALLED_AE = "BONETRIAGE"
HOST = "127.0.0.1"
TERMINAL_STATES = ("triaged", "not_applicable", "failed")
TARGET_RATIO = 0.90          # BoneTriage images/s >= 90% of storescp's
TARGET_LATENCY_S = 1.0       # a study triaged within 1 s after its quiet period
POLL_START_MARGIN_S = 0.5    # start polling this long before the first triage can be due

FSYNC_NOTE = ("BoneTriage answers C-STORE success only after the file is fsync'd in its spool and "
              "recorded in the worklist (a SQLite or PostgreSQL commit); storescp does no fsync (its files may still be in the page cache).")


def log(message):
    print(f"[receive_throughput] {message}", file=sys.stderr, flush=True)


class BenchmarkError(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------------

def find_source(explicit, workdir):
    """The radiographs to copy: --source (one file, or several separated by commas), the demo's extracted
    copy, or the member of the pydicom-data wheel. A list of paths."""
    if explicit:
        paths = [p for p in explicit.split(",") if p]
        for path in paths:
            if not os.path.isfile(path):
                raise BenchmarkError(f"--source {path}: no such file")
        return paths
    if os.path.isfile(DEMO_FILE):
        return [DEMO_FILE]
    if os.path.isfile(DEMO_WHEEL):
        # Only the one member is needed; extracting the whole wheel would write about 35 MB more.
        with zipfile.ZipFile(DEMO_WHEEL) as wheel:
            return [wheel.extract(WHEEL_MEMBER, os.path.join(workdir, "wheel"))]
    raise BenchmarkError(f"neither {DEMO_FILE} nor {DEMO_WHEEL} exists; fetch the wheel with "
                         f"`python3 -m pip download --no-deps pydicom-data==1.0.0 -d .cache/wheels` "
                         f"(or `make bench-receive`, which does it)")


def body_parts(sources):
    """Body Part Examined of each source, upper case, for the daemon's covered_body_parts."""
    parts = set()
    for source in sources:
        match = re.search(r"\[([^\]]*)\]", run_checked(["dcmdump", "+P", "0018,0015", source]).stdout)
        if match and match.group(1).strip():
            parts.add(match.group(1).strip().upper())
    return sorted(parts)


def new_uid():
    # A UUID-derived UID (PS3.5 B.2): unique without a registered root, at most 44 characters.
    return "2.25." + str(uuid.uuid4().int)


def make_study_set(sources, folder, studies, images, announce):
    """studies x images copies of the sources (image i of a study copies sources[i % len]); each study with its own Study and Series Instance UID, each
    file with its own SOP Instance UID. announce: also set (0020,1208) Number of Study Related
    Instances to `images`. Returns [{"uid": ..., "files": [...]}]."""
    made = []
    source_announces = any(has_study_instance_count(source) for source in sources)
    for s in range(studies):
        study_dir = os.path.join(folder, f"study{s:03d}")
        os.makedirs(study_dir)
        files = []
        for i in range(images):
            path = os.path.join(study_dir, f"image{i:02d}.dcm")
            shutil.copyfile(sources[i % len(sources)], path)
            files.append(path)
        study_uid = new_uid()
        # -nb: no .bak copies; -gin: a new SOP Instance UID per file (meta header too);
        # -ma sets the shared study/series UIDs; -i inserts (0020,1208), which the source lacks.
        command = ["dcmodify", "-nb", "-gin", "-ma", f"(0020,000d)={study_uid}", "-ma", f"(0020,000e)={new_uid()}"]
        if announce:
            command += ["-i", f"(0020,1208)={images}"]
        run_checked(command + files)
        if not announce and source_announces:
            # Separately: dcmodify counts erasing an absent tag as an error.
            run_checked(["dcmodify", "-nb", "-ea", "(0020,1208)"] + files)
        made.append({"uid": study_uid, "files": files})
    # Check the set is what the latency figure assumes.
    if announce != has_study_instance_count(made[0]["files"][0]):
        raise BenchmarkError(f"(0020,1208) is {'missing from' if announce else 'present in'} {made[0]['files'][0]}")
    return made


def has_study_instance_count(path):
    return "(0020,1208)" in run_checked(["dcmdump", "+P", "0020,1208", path]).stdout


def run_checked(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise BenchmarkError(f"{shlex.join(command[:8])}... exited {result.returncode}: {(result.stderr or result.stdout).strip()[-500:]}")
    return result


def warm_page_cache(study_sets):
    # Every round reads its files from the page cache, including the first one.
    for studies in study_sets:
        for study in studies:
            for path in study["files"]:
                with open(path, "rb") as f:
                    while f.read(1 << 20):
                        pass


# --------------------------------------------------------------------------------------------------
# Sending: one storescu per study, P at a time
# --------------------------------------------------------------------------------------------------

class Association:
    """One storescu run (one study, one association) with the times its -v log lines were read."""

    def __init__(self, study):
        self.study_uid = study["uid"]
        self.files = study["files"]
        self.launched = self.accepted = self.released = self.exited = None
        self.acks = []            # (monotonic time, success?) per C-STORE response
        self.last_ack = None      # time of the last response when all were Success
        self.returncode = None
        self.tail = []            # the last log lines, for error messages

    @property
    def succeeded(self):
        return self.returncode == 0 and len(self.acks) == len(self.files) and all(ok for _, ok in self.acks)


def send_study(association, port, extra_args):
    command = ["storescu", "-v", "-aet", CALLING_AE, "-aec", CALLED_AE, *extra_args, HOST, str(port), *association.files]
    association.launched = time.monotonic()
    # storescu logs to stderr, unbuffered; its progress dots go to stdout and are dropped.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)
    for line in process.stderr:
        now = time.monotonic()
        if "Association Accepted" in line:
            association.accepted = now
        elif "Received Store Response" in line:
            association.acks.append((now, "(Success)" in line))
            if len(association.acks) == len(association.files) and all(ok for _, ok in association.acks):
                association.last_ack = now
        elif "Releasing Association" in line:
            association.released = now
        association.tail = (association.tail + [line.rstrip()])[-6:]
    association.returncode = process.wait()
    association.exited = time.monotonic()


class Load:
    """Sends a study set in the background so the caller can poll the worklist meanwhile."""

    def __init__(self, port, studies, parallel, extra_args):
        self.associations = [Association(s) for s in studies]
        self.done = threading.Event()
        self._args = (port, parallel, extra_args)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        port, parallel, extra_args = self._args
        try:
            with ThreadPoolExecutor(max_workers=parallel) as pool:
                list(pool.map(lambda a: send_study(a, port, extra_args), self.associations))
        finally:
            self.done.set()

    def wait(self, timeout):
        if not self.done.wait(timeout):
            raise BenchmarkError(f"sending did not finish within {timeout:.0f} s")


def load_figures(associations, bytes_per_image):
    """Throughput of one round, seen from the clients."""
    start = min(a.launched for a in associations)
    end = max(a.exited for a in associations)
    images = sum(1 for a in associations for _, ok in a.acks if ok)
    expected = sum(len(a.files) for a in associations)
    wall = end - start
    return {
        "wall_s": wall,
        "images": images,
        "images_expected": expected,
        "images_per_s": images / wall,
        "mb_per_s": images * bytes_per_image / 1e6 / wall,
        "max_concurrent_associations": max_concurrency(associations),
        "failed_associations": [{"study": a.study_uid, "returncode": a.returncode, "log": a.tail}
                                for a in associations if not a.succeeded],
    }


def max_concurrency(associations):
    """How many associations were open (accepted, not yet released) at once: 1 means serialised."""
    events = []
    for a in associations:
        if a.accepted is not None:
            events += [(a.accepted, 1), (a.released or a.exited, -1)]
    open_now = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # a release sorts before an accept at the same time
        open_now += step
        peak = max(peak, open_now)
    return peak


# --------------------------------------------------------------------------------------------------
# storescp
# --------------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_echo(port, process, timeout=20):
    # A C-ECHO rather than a bare TCP connect: storescp would log a failed association for the latter.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"storescp exited {process.returncode} before answering C-ECHO")
        if subprocess.run(["echoscu", "-aet", CALLING_AE, "-aec", CALLED_AE, HOST, str(port)],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise BenchmarkError(f"storescp did not answer C-ECHO on port {port} within {timeout} s")


def storescp_round(args, studies, workdir, fork, bytes_per_image):
    out = tempfile.mkdtemp(prefix="storescp-", dir=workdir)
    port = free_port()
    command = ["storescp", "+xa", "-aet", CALLED_AE, "-pdu", str(args.max_pdu), "-od", out,
               *(["--fork"] if fork else []), *shlex.split(args.storescp_args), str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_echo(port, process)
        load = Load(port, studies, args.parallel, shlex.split(args.storescu_args)).start()
        load.wait(args.timeout)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    figures = load_figures(load.associations, bytes_per_image)
    received = sum(len(files) for _, _, files in os.walk(out))
    if received != figures["images"]:
        figures["failed_associations"].append({"error": f"storescp wrote {received} files for {figures['images']} acknowledged images"})
    figures["command"] = shlex.join(command)
    shutil.rmtree(out)
    return figures


# --------------------------------------------------------------------------------------------------
# BoneTriage
# --------------------------------------------------------------------------------------------------

def toml_string(text):
    return json.dumps(text)  # a JSON string is a valid TOML basic string for these paths


def write_config(state, args, database):
    path = os.path.join(state, "bonetriage.toml")
    with open(path, "w") as f:
        f.write(f"""[dicom]
ae_title = "{CALLED_AE}"
bind_address = "{HOST}"
port = 0
allowed_callers = [{{ ae_title = "{CALLING_AE}", hosts = ["{HOST}"] }}]
max_associations = {max(8, args.parallel)}
max_pdu = {args.max_pdu}
[drop_folder]
path = {toml_string(os.path.join(state, "drop"))}
[storage]
spool = {toml_string(os.path.join(state, "spool"))}
archive = {toml_string(os.path.join(state, "archive"))}
quarantine = {toml_string(os.path.join(state, "quarantine"))}
[worklist]
database = {toml_string(database)}
[triage]
quiet_period_seconds = {args.quiet_period}
covered_body_parts = {json.dumps(sorted(set(["HUMERUS", "ARM", "EXTREMITY"] + getattr(args, "source_body_parts", []))))}
""")
    return path


class Daemon:
    """`bonetriage serve` with its stderr read line by line: the port from 'listening', and the time each
    'study triaged' line was printed (a poll-free cross-check of the worklist figures)."""

    LISTENING = re.compile(r"\blistening\b.*\baddress=[0-9.]+:(\d+)")
    TRIAGED = re.compile(r"\bstudy triaged\b")

    def __init__(self, binary, config):
        self.command = [binary, "serve", "--config", config]
        self.port = None
        self.triaged = {}          # short study id -> (monotonic time of the log line, triage ms)
        self.lines = []
        self._listening = threading.Event()

    def start(self, timeout=120):
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        try:
            while not self._listening.wait(0.1):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise BenchmarkError("bonetriage serve did not start listening:\n  " + "\n  ".join(self.lines[-10:]))
        except BaseException:  # also Ctrl-C: the daemon is not left running
            self.stop()
            raise
        return self

    def _read(self):
        for line in self.process.stderr:
            now = time.monotonic()
            self.lines.append(line.rstrip())
            if self.port is None and (m := self.LISTENING.search(line)):
                self.port = int(m.group(1))
                self._listening.set()
            elif self.TRIAGED.search(line):
                study = re.search(r"\bstudy=(\S+)", line)
                ms = re.search(r"\bms=(\d+)", line)
                if study:
                    self.triaged[study.group(1)] = (now, int(ms.group(1)) if ms else None)

    def alive(self):
        return self.process.poll() is None

    def stop(self, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def poll_worklist(binary, database):
    """One `bonetriage list` run: (start, end, {study uid: row})."""
    start = time.monotonic()
    result = subprocess.run([binary, "list", "--db", database, "--format", "json"], capture_output=True, text=True)
    end = time.monotonic()
    if result.returncode != 0:
        raise BenchmarkError(f"bonetriage list exited {result.returncode}: {result.stderr.strip()[-300:]}")
    return start, end, {row["study_instance_uid"]: row for row in json.loads(result.stdout or "[]")}


def bonetriage_round(args, studies, workdir, announced, bytes_per_image, backend="sqlite"):
    """A fresh daemon receives the set; the worklist is polled until every study is in a final state.
    backend: sqlite (a new file) or postgresql (a new database in args.pg, the run's cluster)."""
    state = tempfile.mkdtemp(prefix="bonetriage-", dir=workdir)
    pg_database = None
    if backend == "postgresql":
        pg_database = "round_" + uuid.uuid4().hex[:10]
        database = args.pg.create_database(pg_database)
    else:
        database = os.path.join(state, "worklist.sqlite")
    try:
        daemon = Daemon(args.bonetriage, write_config(state, args, database)).start()
    except BaseException:
        if pg_database:
            args.pg.psql(f'DROP DATABASE IF EXISTS "{pg_database}" WITH (FORCE)')
        raise
    problems = []
    probes = []               # (command, seconds, sending still in progress?)
    try:
        load = Load(daemon.port, studies, args.parallel, shlex.split(args.storescu_args)).start()
        wanted = {s["uid"] for s in studies}
        seen = {}                 # study uid -> (row, start of the poll before, end of the poll that showed it)
        polls = []                # (start, end)
        deadline = time.monotonic() + args.timeout
        while not (load.done.is_set() and wanted <= seen.keys()):
            if time.monotonic() > deadline:
                raise BenchmarkError(f"not every study reached a final state within {args.timeout:.0f} s")
            if not daemon.alive():
                raise BenchmarkError("bonetriage serve exited during the round:\n  " + "\n  ".join(daemon.lines[-10:]))
            if not polling_due(args, load, announced):
                time.sleep(0.01)
                continue
            start, end, rows = poll_worklist(args.bonetriage, database)
            previous_start = polls[-1][0] if polls else start
            polls.append((start, end))
            for uid, row in rows.items():
                if uid in wanted and uid not in seen and row["state"] in TERMINAL_STATES:
                    seen[uid] = (row, previous_start, end)
            if announced and args.review_probe and not load.done.is_set():
                probe_review(args, database, seen, probes, load)
            time.sleep(args.poll_interval)
        load.wait(args.timeout)
    finally:
        exit_status = daemon.stop()
        if pg_database:
            args.pg.psql(f'DROP DATABASE IF EXISTS "{pg_database}" WITH (FORCE)')
    if exit_status != 0:
        problems.append(f"bonetriage serve exited {exit_status} after SIGTERM (expected 0)")

    figures = load_figures(load.associations, bytes_per_image)
    last_exit = max(a.exited for a in load.associations)
    figures["polls"] = len(polls)
    figures["polls_during_sending"] = sum(1 for start, _ in polls if start < last_exit)
    figures["poll_cycle_ms"] = 1000 * statistics.median(b[0] - a[0] for a, b in zip(polls, polls[1:])) if len(polls) > 1 else None

    subtract = 0.0 if announced else args.quiet_period
    round_start = min(a.launched for a in load.associations)
    latencies = []
    for a in load.associations:
        row, before, shown = seen[a.study_uid]
        if row["state"] != "triaged" or a.last_ack is None:
            problems.append(f"study {row['id']}: state {row['state']} ({row.get('state_reason')}), "
                            f"{len(a.acks)} responses for {len(a.files)} images")
            continue
        if row["images"] != len(a.files):
            problems.append(f"study {row['id']}: the worklist has {row['images']} images, {len(a.files)} were sent")
        logged = daemon.triaged.get(row["id"])
        latencies.append({
            "study": row["id"],
            # When it was triaged, from the round's first storescu start (the log line's time when there is one).
            "triaged_at_s": (logged[0] if logged else shown) - round_start,
            # Upper bound: the end of the first poll that showed the study triaged.
            "latency_s": shown - a.last_ack - subtract,
            # Lower bound: it was not yet triaged when the poll before it started.
            "latency_lower_bound_s": max(before - a.last_ack - subtract, -subtract),
            "log_latency_s": (logged[0] - a.last_ack - subtract) if logged else None,
            "triage_ms": logged[1] if logged else None,
            # Time from "due" (quiet period over, or M-th image) to the triage starting: scheduling and queueing.
            "wait_before_triage_s": (logged[0] - a.last_ack - subtract - logged[1] / 1000) if logged and logged[1] is not None else None,
        })
    # In the order they were triaged: the first one did not wait behind another study.
    figures["latencies"] = sorted(latencies, key=lambda l: l["triaged_at_s"])
    figures["review_probes"] = [{"command": c, "seconds": t, "while_sending": busy} for c, t, busy in probes]
    figures["failed_associations"] += [{"error": p} for p in problems]
    shutil.rmtree(state)
    return figures


def probe_review(args, database, seen, probes, load):
    """The radiologist's commands against the busy daemon, each timed as run: `list` (its first page, not
    a terminal), `show` of a triaged study, `confirm` of one not yet reviewed here."""
    triaged = [row["id"] for row, _, _ in seen.values() if row["state"] == "triaged"]
    confirmed = {c.split(" ", 1)[1] for c, _, _ in probes if c.startswith("confirm ")}
    commands = [["list"]]
    if triaged:
        commands.append(["show", triaged[0]])
        fresh = [i for i in triaged if i not in confirmed]
        if fresh:
            commands.append(["confirm", fresh[0]])
    for command in commands:
        start = time.monotonic()
        result = subprocess.run([args.bonetriage, *command, "--db", database], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.monotonic() - start
        if result.returncode != 0:
            raise BenchmarkError(f"bonetriage {' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-300:]}")
        probes.append((" ".join(command), elapsed, not load.done.is_set()))


def polling_due(args, load, announced):
    """Poll only when a triage can be due, so the polling processes do not take CPU from the receiver
    while it is being timed: with (0020,1208) at once (that variant is not compared), otherwise from
    the quiet period after the first study's last acknowledgement (minus a margin), or once sending ends."""
    if announced or load.done.is_set():
        return True
    finished = [a.last_ack for a in load.associations if a.last_ack is not None]
    return bool(finished) and time.monotonic() >= min(finished) + args.quiet_period - POLL_START_MARGIN_S


# --------------------------------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------------------------------

def distribution(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return {"n": len(values), "min": values[0], "median": statistics.median(values), "max": values[-1]}


def latency_summary(rounds, variant):
    entries = [l for r in rounds if variant in r for l in r[variant]["latencies"]]
    return {
        "latency_s": distribution([l["latency_s"] for l in entries]),
        "log_latency_s": distribution([l["log_latency_s"] for l in entries]),
        "triage_ms": distribution([l["triage_ms"] for l in entries]),
        "wait_before_triage_s": distribution([l["wait_before_triage_s"] for l in entries]),
        "first_triaged_per_round_s": [r[variant]["latencies"][0]["latency_s"] for r in rounds
                                      if variant in r and r[variant]["latencies"]],
        "within_target": sum(1 for l in entries if l["latency_s"] <= TARGET_LATENCY_S),
        "studies": len(entries),
    }


def summarize(args, rounds, storescp_modes):
    """Figures per BoneTriage receiver (one per worklist backend), its ratios to each storescp, and, with
    both backends, PostgreSQL / SQLite. The top-level keys the report had before issue 14 describe the
    first receiver (SQLite unless --worklist postgresql)."""
    mine = args.bonetriage_modes
    summary = {"bonetriage_modes": mine, "by_receiver": {}, "receivers": {}}
    for m in mine:
        probes = [p for r in rounds if announced_mode(m) in r for p in r[announced_mode(m)].get("review_probes", [])]
        summary["by_receiver"][m] = {
            "images_per_s": distribution([r[m]["images_per_s"] for r in rounds]),
            "max_concurrent_associations": max(r[m]["max_concurrent_associations"] for r in rounds),
            "latency_quiet": latency_summary(rounds, m),
            "latency_announced": latency_summary(rounds, announced_mode(m)),
            "ratio_to": {},
            "review_probes": {name: distribution([p["seconds"] for p in probes if p["while_sending"] and p["command"].split(" ")[0] == name])
                              for name in ("list", "show", "confirm")},
        }
    head = mine[0]
    summary["bonetriage_images_per_s"] = summary["by_receiver"][head]["images_per_s"]
    summary["bonetriage_max_concurrent_associations"] = summary["by_receiver"][head]["max_concurrent_associations"]
    summary["latency_quiet"] = summary["by_receiver"][head]["latency_quiet"]
    summary["latency_announced"] = summary["by_receiver"][head]["latency_announced"]
    for mode in storescp_modes:
        theirs = [r[mode]["images_per_s"] for r in rounds]
        for m in mine:
            # Ratios are paired by round (same minute, same machine noise), then the median is taken.
            ratios = [r[m]["images_per_s"] / r[mode]["images_per_s"] for r in rounds]
            summary["by_receiver"][m]["ratio_to"][mode] = {"ratio_per_round": ratios, "ratio_median": statistics.median(ratios)}
        summary["receivers"][mode] = {
            "images_per_s": distribution(theirs),
            "ratio_per_round": summary["by_receiver"][head]["ratio_to"][mode]["ratio_per_round"],
            "ratio_median": summary["by_receiver"][head]["ratio_to"][mode]["ratio_median"],
            "max_concurrent_associations": max(r[mode]["max_concurrent_associations"] for r in rounds),
        }
    if storescp_modes:
        headline = storescp_modes[0]
        summary["ratio"] = summary["receivers"][headline]["ratio_median"]
        summary["ratio_against"] = headline
        summary["ratio_target_met"] = summary["ratio"] >= TARGET_RATIO
    if len(mine) == 2:
        sqlite, pg = mine
        per_round = [r[pg]["images_per_s"] / r[sqlite]["images_per_s"] for r in rounds]
        comparison = {"images_per_s_ratio_per_round": per_round, "images_per_s_ratio_median": statistics.median(per_round)}
        for key in ("latency_quiet", "latency_announced"):
            a, b = summary["by_receiver"][sqlite][key]["latency_s"], summary["by_receiver"][pg][key]["latency_s"]
            if a and b:
                comparison[key + "_median_ratio"] = b["median"] / a["median"] if a["median"] > 0 else None
                comparison[key + "_median_difference_s"] = b["median"] - a["median"]
        summary["postgresql_over_sqlite"] = comparison

    variants = [v for m in mine for v in (m, announced_mode(m))]
    cycles = [r[v]["poll_cycle_ms"] for r in rounds for v in variants if v in r and r[v]["poll_cycle_ms"] is not None]
    summary["poll_cycle_ms_median"] = statistics.median(cycles) if cycles else None
    summary["notes"] = [FSYNC_NOTE] + [
        f"{mode_label(m)} " + ("serialises associations: at most 1 was open at a time"
                               if summary["receivers"][m]["max_concurrent_associations"] <= 1 else
                               f"ran up to {summary['receivers'][m]['max_concurrent_associations']} associations at once")
        for m in storescp_modes]
    if "bonetriage_pg" in mine:
        summary["notes"].append(f"PostgreSQL: {args.pg_description}; each round a fresh database, over the server's Unix socket")
    return summary


def backend_of(mode):
    return "postgresql" if mode.startswith("bonetriage_pg") else "sqlite"


def announced_mode(mode):
    return mode + "_announced"


MODE_LABELS = {"bonetriage": "bonetriage serve", "storescp": "storescp +xa", "storescp_fork": "storescp +xa --fork",
               "bonetriage_announced": "bonetriage (0020,1208)=M",
               "bonetriage_pg": "bonetriage serve, PostgreSQL", "bonetriage_pg_announced": "bonetriage PG (0020,1208)=M"}


def mode_label(mode):
    return MODE_LABELS[mode]


def print_report(args, setup, rounds, summary, storescp_modes):
    p = print
    mine = args.bonetriage_modes
    head = mine[0]
    mb = setup["bytes_per_image"] / 1e6
    p(f"Receive benchmark: {args.studies} studies x {args.images} images of {mb:.1f} MB "
      f"({args.studies * args.images * mb:.0f} MB a round), one storescu per study, {args.parallel} at a time, "
      f"{args.rounds} round(s) interleaved, max PDU {args.max_pdu}, quiet period {args.quiet_period:g} s")
    p(f"source: {setup['source']}")
    p("")
    p(f"{'round':>5}  {'receiver':<29} {'wall s':>7} {'images/s':>9} {'MB/s':>7} {'max assoc':>9}  {mode_label(head)}/this")
    for i, r in enumerate(rounds, 1):
        for mode in r["order"]:
            f = r[mode]
            ratio = "" if mode == head else f"{r[head]['images_per_s'] / f['images_per_s']:.2f}"
            p(f"{i:>5}  {mode_label(mode):<29} {f['wall_s']:>7.2f} {f['images_per_s']:>9.1f} {f['mb_per_s']:>7.0f} "
              f"{f['max_concurrent_associations']:>9}  {ratio}")
    p("")
    for m in mine:
        bt = summary["by_receiver"][m]["images_per_s"]
        p(f"{mode_label(m)}: median {bt['median']:.1f} images/s (min {bt['min']:.1f}, max {bt['max']:.1f})")
    for mode in storescp_modes:
        d = summary["receivers"][mode]["images_per_s"]
        p(f"{mode_label(mode)}: median {d['median']:.1f} images/s (min {d['min']:.1f}, max {d['max']:.1f})")
        for m in mine:
            s = summary["by_receiver"][m]["ratio_to"][mode]
            p(f"  {mode_label(m)} / {mode_label(mode)} = {s['ratio_median']:.2f} (median of per-round ratios "
              + ", ".join(f"{x:.2f}" for x in s["ratio_per_round"]) + ")")
    if storescp_modes:
        met = "met" if summary["ratio_target_met"] else "NOT met"
        p(f"Target {mode_label(head)} >= {TARGET_RATIO:.0%} of {mode_label(summary['ratio_against'])}: "
          f"{summary['ratio']:.0%} -> {met}")
    if "postgresql_over_sqlite" in summary:
        c = summary["postgresql_over_sqlite"]
        p(f"PostgreSQL / SQLite, images/s: {c['images_per_s_ratio_median']:.2f} (median of per-round ratios "
          + ", ".join(f"{x:.2f}" for x in c["images_per_s_ratio_per_round"]) + ")")
    for note in summary["notes"]:
        p(f"Note: {note}")
    p("")
    cycle = summary["poll_cycle_ms_median"]
    p(f"Latency, last image acknowledged -> triaged in `bonetriage list` (polled; median poll cycle "
      f"{cycle:.0f} ms; a figure is the end of the first poll that showed it, so up to one cycle late):")
    for m in mine:
        if len(mine) > 1:
            p(f"{mode_label(m)}:")
        for key, title in (("latency_quiet", f"without (0020,1208), minus the {args.quiet_period:g} s quiet period"),
                           ("latency_announced", f"with (0020,1208)={args.images}, nothing subtracted")):
            s = summary["by_receiver"][m][key]
            d, lg, tm = s["latency_s"], s["log_latency_s"], s["triage_ms"]
            if not d:
                p(f"  {title}: no study triaged")
                continue
            p(f"  {title}:")
            p(f"    {d['n']} studies: min {d['min']:.2f} s, median {d['median']:.2f} s, max {d['max']:.2f} s; "
              f"within {TARGET_LATENCY_S:g} s: {s['within_target']} of {s['studies']}")
            p(f"    the first study triaged in each round (no other study ahead of it): "
              + ", ".join(f"{x:.2f} s" for x in s["first_triaged_per_round_s"]))
            if lg:
                p(f"    from the daemon's 'study triaged' log line instead of polling: min {lg['min']:.2f} s, "
                  f"median {lg['median']:.2f} s, max {lg['max']:.2f} s")
            if tm:
                p(f"    triage itself (log ms=): min {tm['min']} ms, median {tm['median']:.0f} ms, max {tm['max']} ms per study")
            if s["wait_before_triage_s"]:
                w = s["wait_before_triage_s"]
                p(f"    due -> triage started (log time - ms=): min {w['min']:.2f} s, median {w['median']:.2f} s, max {w['max']:.2f} s "
                  f"(negative: started before storescu read the last response; studies due together wait for each other: one triage worker)")
        probes = summary["by_receiver"][m]["review_probes"]
        if any(probes.values()):
            p("  the radiologist's commands while this daemon was still receiving ((0020,1208) rounds), seconds: "
              + "; ".join(f"`{name}` median {d['median']:.3f} (min {d['min']:.3f}, max {d['max']:.3f}, n {d['n']})"
                          for name, d in probes.items() if d))
    if "postgresql_over_sqlite" in summary:
        c = summary["postgresql_over_sqlite"]
        for key, title in (("latency_quiet", "without (0020,1208)"), ("latency_announced", "with (0020,1208)")):
            if c.get(key + "_median_ratio") is not None:
                p(f"PostgreSQL / SQLite, median latency {title}: {c[key + '_median_ratio']:.2f} "
                  f"({c[key + '_median_difference_s'] * 1000:+.0f} ms)")
    polls_during = {mode_label(m): [r[m]["polls_during_sending"] for r in rounds] for m in mine}
    p(f"Worklist polls while the compared BoneTriage rounds were still sending: {polls_during} "
      f"(polling starts {POLL_START_MARGIN_S:g} s before the first triage can be due)")


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(description="DICOM receive throughput and triage latency: BoneTriage vs storescp.")
    parser.add_argument("--bonetriage", default=DEFAULT_BINARY, help="the bonetriage binary (default: %(default)s)")
    parser.add_argument("--studies", "-n", type=int, default=8, help="studies per round (default: %(default)s)")
    parser.add_argument("--images", "-m", type=int, default=4, help="images per study (default: %(default)s)")
    parser.add_argument("--parallel", "-p", type=int, default=4, help="associations (storescu processes) at once (default: %(default)s)")
    parser.add_argument("--quiet-period", type=float, default=2.0, help="BoneTriage's quiet period, seconds (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; every receiver runs once per round, in alternating order (default: %(default)s)")
    parser.add_argument("--storescp-modes", default="fork,serial",
                        help="storescp variants, comma-separated: serial (storescp +xa), fork (storescp +xa --fork), or none; "
                             "the first is the one the target ratio is checked against (default: %(default)s)")
    parser.add_argument("--worklist", choices=("sqlite", "postgresql", "both"), default="sqlite",
                        help="the daemon's worklist: a SQLite file, a PostgreSQL database in a cluster the benchmark starts, "
                             "or both, interleaved in the same rounds, with PostgreSQL / SQLite (default: %(default)s)")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a PostgreSQL server setting (repeatable), e.g. synchronous_commit=off, the durability of the SQLite "
                             "worklist (WAL with synchronous=NORMAL: a commit is not fsync'd, a crash of the machine may lose the last "
                             "ones); default: PostgreSQL's own settings (each commit fsync'd)")
    parser.add_argument("--review-probe", action="store_true", help="in the (0020,1208) rounds, also time `list`, `show` and "
                        "`confirm` while the daemon is still receiving")
    parser.add_argument("--no-announced", action="store_true", help="skip the (0020,1208)=M latency variant")
    parser.add_argument("--max-pdu", type=int, default=65536, help="max receive PDU of both receivers (default: %(default)s)")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="sleep between worklist polls, seconds (default: %(default)s)")
    parser.add_argument("--storescu-args", default="-R", help="extra storescu options, the same for every receiver; write --storescu-args=\"...\" (default: %(default)s: "
                        "propose only the files' SOP class, as a modality would)")
    parser.add_argument("--storescp-args", default="", help="extra storescp options; write --storescp-args=\"...\"")
    parser.add_argument("--source", help="the DICOM file to copy, or several separated by commas: image i of every study copies the "
                        "i-th, cyclically (default: RG3_UNCR.dcm from the demo or the pydicom-data wheel)")
    parser.add_argument("--workdir", help="where to make the temporary folder (default: the system's temp folder; "
                        "it should be a real disk, not tmpfs, so fsync costs what it costs)")
    parser.add_argument("--timeout", type=float, default=300, help="per round, seconds (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every figure instead of the report")
    parser.add_argument("--save", metavar="FILE", help="also write that JSON object to FILE (with the report on stdout)")
    args = parser.parse_args()
    if min(args.studies, args.images, args.parallel, args.rounds) < 1:
        parser.error("--studies, --images, --parallel and --rounds must be at least 1")
    modes = [m.strip() for m in args.storescp_modes.split(",") if m.strip()]
    if modes == ["none"]:
        modes = []
    elif not modes or any(m not in ("serial", "fork") for m in modes):
        parser.error("--storescp-modes: a comma-separated list of serial and fork, or none")
    args.storescp_modes = ["storescp" if m == "serial" else "storescp_fork" for m in dict.fromkeys(modes)]
    args.bonetriage_modes = {"sqlite": ["bonetriage"], "postgresql": ["bonetriage_pg"], "both": ["bonetriage", "bonetriage_pg"]}[args.worklist]
    if args.worklist == "both":
        MODE_LABELS["bonetriage"] = "bonetriage serve, SQLite"
        MODE_LABELS["bonetriage_announced"] = "bonetriage SQLite (0020,1208)=M"
    return args


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_tools(args):
    missing = [t for t in ("storescu", "storescp", "echoscu", "dcmodify", "dcmdump") if not shutil.which(t)]
    if missing:
        raise BenchmarkError(f"missing DCMTK tools: {', '.join(missing)} (Debian: apt-get install dcmtk)")
    if not (os.path.isfile(args.bonetriage) and os.access(args.bonetriage, os.X_OK)):
        raise BenchmarkError(f"{args.bonetriage} is not an executable; build it with `make build`")


def main():
    args = parse_args()
    check_tools(args)
    workdir = tempfile.mkdtemp(prefix="bonetriage-receive-bench-", dir=args.workdir)
    failed = []
    args.pg = None
    try:
        if "bonetriage_pg" in args.bonetriage_modes:
            # One cluster for the run, in the temporary folder (a real disk, as the spool); stopped in finally.
            # The server runs as postgres when this is root: it must be able to reach its folder.
            os.chmod(workdir, 0o711)
            args.pg = pg_cluster.PostgresCluster(os.path.join(workdir, "pg"), settings=args.pg_setting).__enter__()
            args.pg_description = args.pg.describe()
            log(f"PostgreSQL cluster on port {args.pg.port}: {args.pg_description}")
        source = find_source(args.source, workdir)
        args.source_body_parts = body_parts(source)
        log(f"making {args.studies} x {args.images} files twice from {', '.join(source)} in {workdir}")
        quiet_set = make_study_set(source, os.path.join(workdir, "quiet"), args.studies, args.images, announce=False)
        announced_set = [] if args.no_announced else make_study_set(
            source, os.path.join(workdir, "announced"), args.studies, args.images, announce=True)
        warm_page_cache([quiet_set, announced_set])
        study_bytes = sum(os.path.getsize(f) for f in quiet_set[0]["files"])
        setup = {"source": ", ".join(source), "bytes_per_image": study_bytes // len(quiet_set[0]["files"]),
                 "bonetriage": args.bonetriage, "bonetriage_sha256": file_sha256(args.bonetriage)}

        rounds = []
        for i in range(args.rounds):
            # Alternate the order so neither receiver always runs first (or right after the other).
            order = args.bonetriage_modes + args.storescp_modes
            if i % 2:
                order = order[::-1]
            result = {"order": order}
            for mode in order:
                os.sync()  # the previous receiver's dirty pages are not written back during this one
                log(f"round {i + 1}/{args.rounds}: {mode_label(mode)}")
                if mode in args.bonetriage_modes:
                    result[mode] = bonetriage_round(args, quiet_set, workdir, False, setup["bytes_per_image"], backend_of(mode))
                else:
                    result[mode] = storescp_round(args, quiet_set, workdir, mode == "storescp_fork", setup["bytes_per_image"])
            if announced_set:
                for mode in (args.bonetriage_modes if i % 2 == 0 else args.bonetriage_modes[::-1]):
                    os.sync()
                    log(f"round {i + 1}/{args.rounds}: {mode_label(announced_mode(mode))} (latency only)")
                    result[announced_mode(mode)] = bonetriage_round(args, announced_set, workdir, True, setup["bytes_per_image"], backend_of(mode))
            for mode, figures in result.items():
                if mode != "order" and figures["failed_associations"]:
                    failed.append({"round": i + 1, "receiver": mode, "problems": figures["failed_associations"]})
            rounds.append(result)

        # A rebuild during the run would mix two binaries' figures.
        if file_sha256(args.bonetriage) != setup["bonetriage_sha256"]:
            failed.append({"round": None, "receiver": "bonetriage", "problems": [f"{args.bonetriage} changed during the run"]})
        summary = summarize(args, rounds, args.storescp_modes)
        everything = json.dumps({
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "save", "pg")},
            "setup": setup, "summary": summary, "rounds": rounds, "failures": failed,
        }, indent=2)
        if args.save:
            with open(args.save, "w") as f:
                f.write(everything + "\n")
        if args.json:
            print(everything)
        else:
            print_report(args, setup, rounds, summary, args.storescp_modes)
        for f in failed:
            log(f"round {f['round'] or '-'} {mode_label(f['receiver'])}: {json.dumps(f['problems'])}")
        return 1 if failed else 0
    except (BenchmarkError, pg_cluster.ClusterError) as error:
        log(f"error: {error}")
        return 1
    finally:
        if args.pg:
            args.pg.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
