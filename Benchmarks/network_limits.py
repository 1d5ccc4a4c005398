#!/usr/bin/env python3
"""What an unauthenticated peer on the network can do to `bonetriage serve`'s DICOM port: measured.

Starts the daemon (no model needed: it receives without one) on 127.0.0.1 with a throwaway state folder
and prints, for the README's threat model:
  1. how many silent connections (TCP connected, no A-ASSOCIATE-RQ) the daemon holds, from one address
     and from many (loopback addresses 127.0.0.x stand for hosts), and the threads and memory that costs;
  2. a real sender's C-ECHO time (DCMTK's echoscu) with no silent connection, with a few, and during a
     flood of connections from one address and from many;
  3. what max_associations does: associations held open by an allowed caller, one more refused, and an
     unknown calling AE title that never takes a slot.
Only the standard library and echoscu (Debian package dcmtk). Usage:
  python3 Benchmarks/network_limits.py --bonetriage .build/release/bonetriage [--caller-without-hosts] [--json]
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

CALLED_AE, CALLING_AE = "BONETRIAGE", "ECHOSCU"


def write_config(state, acse, max_associations, dimse, listed):
    path = os.path.join(state, "bonetriage.toml")
    with open(path, "w") as f:
        f.write(f"""[dicom]
ae_title = "{CALLED_AE}"
bind_address = "127.0.0.1"
port = 0
allowed_callers = [{{ ae_title = "{CALLING_AE}"{', hosts = ["127.0.0.1"]' if listed else ''} }}]
acse_timeout_seconds = {acse}
dimse_timeout_seconds = {dimse}
max_associations = {max_associations}
[drop_folder]
path = ""
[storage]
spool = "{state}/spool"
archive = "{state}/archive"
quarantine = "{state}/quarantine"
minimum_free_space_mb = 1
[worklist]
database = "{state}/worklist.sqlite"
[model]
path = "{state}/no-model.safetensors"
""")
    return path


class Daemon:
    def __init__(self, binary, config):
        self.process = subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines, self.port = [], None
        ready = threading.Event()

        def read():
            for line in self.process.stderr:
                self.lines.append(line.rstrip())
                m = re.search(r"\blistening\b.*\baddress=[0-9.]+:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()
        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            sys.exit("bonetriage serve did not start:\n" + "\n".join(self.lines[-10:]))

    def threads_and_rss(self):
        status = open(f"/proc/{self.process.pid}/status").read()
        return int(re.search(r"Threads:\s+(\d+)", status).group(1)), int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024

    def stop(self):
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - start


def connect(port, source="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def still_open(s):
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.settimeout(5)


def echo(port, timeout=60):
    start = time.monotonic()
    r = subprocess.run(["echoscu", "-aet", CALLING_AE, "-aec", CALLED_AE, "-to", str(timeout), "-ta", str(timeout),
                        "127.0.0.1", str(port)], capture_output=True, text=True)
    return r.returncode == 0, time.monotonic() - start


def pdu(kind, body):
    return struct.pack(">BBI", kind, 0, len(body)) + body


def item(kind, value):
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate(port, calling):
    """An A-ASSOCIATE-RQ proposing Verification; returns (socket, PDU type answered)."""
    body = struct.pack(">HH", 1, 0) + CALLED_AE.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    body += item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"))
    body += item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.826.0.1.3680043.10.999"))
    s = connect(port)
    s.sendall(pdu(1, body))
    s.settimeout(30)
    header = b""
    while len(header) < 6:
        chunk = s.recv(6 - len(header))
        if not chunk:
            return s, "closed"
        header += chunk
    remaining, body = struct.unpack(">I", header[2:6])[0], b""
    while len(body) < remaining:
        chunk = s.recv(remaining - len(body))
        if not chunk:
            break
        body += chunk
    if header[0] == 2:
        return s, "accepted"
    if header[0] == 3 and len(body) >= 4:
        return s, f"rejected ({'permanent' if body[1] == 1 else 'transient'}, source {body[2]}, reason {body[3]})"
    return s, f"PDU type {header[0]}"


def measure(args):
    results = {}
    state = tempfile.mkdtemp(prefix="bt-network-")
    try:
        daemon = Daemon(args.bonetriage, write_config(state, args.acse, args.max_associations, args.dimse, not args.caller_without_hosts))
        port = daemon.port
        results["settings"] = {"acse_timeout_seconds": args.acse, "max_associations": args.max_associations,
                               "dimse_timeout_seconds": args.dimse, "limits": "defaults (max_pending_connections 64, per address 8)",
                               "echoscu's address listed in allowed_callers hosts": not args.caller_without_hosts}
        base_threads, base_rss = daemon.threads_and_rss()
        ok, t = echo(port)
        results["echo_alone_s"] = round(t, 3) if ok else None

        for label, addresses, per in [("one_address", 1, 100), ("many_addresses", 25, 8)]:
            held = []
            for a in range(addresses):
                for _ in range(per):
                    try:
                        held.append(connect(port, f"127.0.{1 + a // 250}.{2 + a % 250}"))
                    except OSError:
                        pass
            time.sleep(1)
            alive = [s for s in held if still_open(s)]
            threads, rss = daemon.threads_and_rss()
            ok, t = echo(port)
            results[f"silent_{label}"] = {"opened": len(held), "held_by_daemon": len(alive), "daemon_threads": threads - base_threads,
                                         "rss_mb_added": rss - base_rss, "echo_ok": ok, "echo_s": round(t, 3)}
            for s in held:
                s.close()
            time.sleep(1)

        for label, addresses in [("flood_one_address", 1), ("flood_16_addresses", 16)]:
            stop = threading.Event()
            opened = [0]

            def flood():
                held, i = [], 0
                while not stop.is_set():
                    try:
                        held.append(connect(port, f"127.0.3.{2 + i % addresses}"))
                        opened[0] += 1
                    except OSError:
                        time.sleep(0.01)
                    i += 1
                    if len(held) > 1000:
                        held.pop(0).close()
                for s in held:
                    s.close()
            workers = [threading.Thread(target=flood) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(2)
            echoes = [echo(port, timeout=args.acse + 20) for _ in range(5)]
            stop.set()
            for w in workers:
                w.join()
            good = [t for ok, t in echoes if ok]
            results[label] = {"connections_opened": opened[0], "echoes_ok": f"{len(good)}/5",
                              "echo_s_max": round(max(good), 3) if good else None}
            time.sleep(args.acse + 1)

        # max_associations: an allowed caller holds associations open (no DIMSE message); one more is
        # rejected (transient); an unknown calling AE title is refused at once and takes no slot.
        _, stranger = associate(port, "INTRUDER")
        held, answers = [], []
        for _ in range(args.max_associations):
            s, kind = associate(port, CALLING_AE)
            held.append(s)
            answers.append(kind)
        _, extra = associate(port, CALLING_AE)
        start = time.monotonic()
        held[0].settimeout(args.dimse + 30)
        try:
            held[0].recv(1 << 16)
        except OSError:
            pass
        results["max_associations"] = {"unknown_calling_ae": stranger, "held_open": sum(1 for k in answers if k == "accepted"), "one_more": extra,
                                       "idle_association_dropped_after_s": round(time.monotonic() - start, 1)}
        for s in held:
            s.close()
        time.sleep(1)

        held = [connect(port) for _ in range(8)]
        results["stop_with_8_silent_connections_s"] = round(daemon.stop(), 2)
        for s in held:
            s.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bonetriage", default=".build/release/bonetriage")
    parser.add_argument("--acse", type=int, default=10, help="acse_timeout_seconds (default 10, the daemon's default)")
    parser.add_argument("--dimse", type=int, default=10, help="dimse_timeout_seconds for the run (default 10, to keep it short)")
    parser.add_argument("--max-associations", type=int, default=8)
    parser.add_argument("--caller-without-hosts", action="store_true",
                        help="allow the sender's AE title from any address (no hosts): its address is then not 'listed'")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not shutil.which("echoscu"):
        sys.exit("echoscu is missing: apt-get install dcmtk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flood holds thousands of sockets
    results = measure(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
