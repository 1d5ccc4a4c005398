#!/usr/bin/env python3
"""Time from file to model input in one `bonetriage decode-worker` (requests over its pipe), median of runs.

Usage: decode_time.py BONETRIAGE FILE RUNS [area|nearest] [OPENJPEG_THREADS]
(`nearest` makes the worker decode at full resolution; peak memory: run one request under /usr/bin/time -v.)"""
import json, statistics, subprocess, sys, time
binary, path, runs, flt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "area"
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
p = subprocess.Popen([binary, "decode-worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
req = json.dumps({"task": "model_input", "path": path, "maximumPixels": 256 << 20, "size": 150, "low": -1.0,
                  "high": 0.9921875, "filter": flt, "threads": threads}).encode() + b"\n"
times = []
for i in range(runs):
    t = time.perf_counter()
    p.stdin.write(req); p.stdin.flush()
    answer = json.loads(p.stdout.readline())
    frames = answer.get("frames") or 0
    p.stdout.read(frames * 150 * 150 * 3 * 4)
    times.append(time.perf_counter() - t)
    if answer.get("outcome") != "inputs": print(answer); break
p.stdin.close(); p.wait()
print(f"{path.split('/')[-1]} filter={flt} threads={threads}: median {statistics.median(times)*1000:.1f} ms over {len(times)} runs "
      f"(min {min(times)*1000:.1f}, max {max(times)*1000:.1f})")
