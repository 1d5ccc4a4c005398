"""A throwaway PostgreSQL 15 cluster for the benchmarks, started the way the tests' PostgresCluster.swift
does: `initdb` into a folder and `pg_ctl start` on a free loopback port, its Unix socket in that folder,
as the `postgres` user (`runuser -u postgres --`) when this runs as root, which PostgreSQL refuses.

Unlike the tests' cluster (fsync=off, synchronous_commit=off: speed, nothing to keep) the benchmark's
runs with PostgreSQL's own defaults unless told otherwise: each commit waits for its WAL to be fsync'd.
(The SQLite worklist is WAL with synchronous=NORMAL, GRDB's setting: a commit is not fsync'd, the last
ones may be lost if the machine crashes; PostgreSQL's equivalent is synchronous_commit=off, which the
benchmarks take as a `settings` entry.)

    with PostgresCluster(folder) as cluster:      # started; stopped at the end, on an exception or Ctrl-C
        uri = cluster.create_database("bench")     # postgresql:///bench?host=...&port=...&user=postgres

A folder given by the caller is kept (its data too, to start it again later); one made here is removed.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse

BINARIES = "/usr/lib/postgresql/15/bin"
SUPERUSER = "postgres"


class ClusterError(Exception):
    pass


def is_installed():
    return all(os.access(os.path.join(BINARIES, p), os.X_OK) for p in ("initdb", "pg_ctl", "postgres"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv):
    return ["/usr/sbin/runuser", "-u", SUPERUSER, "--"] + argv if os.getuid() == 0 else argv


def _sigterm_to_keyboard_interrupt():
    """A SIGTERM (an impatient `kill`) unwinds like Ctrl-C, so `with` blocks stop the server."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        def handler(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        signal.signal(signal.SIGTERM, handler)


class PostgresCluster:
    def __init__(self, folder=None, durable=True, settings=()):
        """folder: where the cluster lives (kept, and reused when it holds one); None: a temporary folder,
        removed at stop. durable=False: fsync, synchronous_commit and full_page_writes off (the tests'
        settings). settings: more `name=value` server settings."""
        if not is_installed():
            raise ClusterError(f"PostgreSQL 15 is not installed ({BINARIES}/initdb): apt-get install postgresql-15")
        self.keep = folder is not None
        self.folder = os.path.abspath(folder) if folder else tempfile.mkdtemp(prefix="bonetriage-bench-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = None
        self.settings = list(settings) + ([] if durable else ["fsync=off", "synchronous_commit=off", "full_page_writes=off"])
        self.durable = durable
        self._running = False

    def __enter__(self):
        _sigterm_to_keyboard_interrupt()
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _run(self, argv, **kwargs):
        result = subprocess.run(_as_postgres(argv), capture_output=True, text=True, **kwargs)
        if result.returncode != 0:
            raise ClusterError(f"{os.path.basename(argv[0])} {' '.join(argv[1:4])}... exited {result.returncode}: "
                               f"{(result.stderr or result.stdout).strip()[-800:]}")
        return result

    def start(self):
        os.makedirs(self.folder, exist_ok=True)
        if os.getuid() == 0:
            import pwd
            account = pwd.getpwnam(SUPERUSER)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        # The Unix socket's path (folder + /.s.PGSQL.PORT) must fit in sun_path's 107 bytes.
        if len(self.folder) > 90:
            raise ClusterError(f"{self.folder}: too long a path for the server's Unix socket (90 characters at most); choose a shorter folder")
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self._run([os.path.join(BINARIES, "initdb"), "-D", self.data, "-A", "trust", "--auth-local=trust", "-U", SUPERUSER,
                       "-E", "UTF8", "--locale=C.UTF-8"])
        self.port = free_port()
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        options += "".join(f" -c {s}" for s in self.settings)
        self._run([os.path.join(BINARIES, "pg_ctl"), "-D", self.data, "-o", options, "-l", os.path.join(self.folder, "server.log"),
                   "-w", "-t", "60", "start"], stdin=subprocess.DEVNULL)
        self._running = True
        atexit.register(self.stop)
        return self

    def stop(self):
        if self._running:
            self._running = False
            try:
                self._run([os.path.join(BINARIES, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"])
            except ClusterError:
                subprocess.run(_as_postgres([os.path.join(BINARIES, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop"]),
                               capture_output=True)
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def conninfo(self, database):
        return (f"postgresql:///{database}?host={urllib.parse.quote(self.folder, safe='')}"
                f"&port={self.port}&user={SUPERUSER}")

    def psql(self, sql, database="postgres"):
        """Runs SQL as the superuser; the rows, unaligned and tab-separated."""
        result = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", self.conninfo(database), "-c", sql],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"psql: {sql[:80]}: {result.stderr.strip()[-500:]}")
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def database_exists(self, name):
        return bool(self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))

    def create_database(self, name, replace=False):
        if replace:
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def setting(self, name, database="postgres"):
        return self.psql(f"SHOW {name}", database)[0][0]

    def describe(self):
        keys = ("server_version", "shared_buffers", "fsync", "synchronous_commit", "full_page_writes")
        return ", ".join(f"{k}={self.setting(k)}" for k in keys)
