#!/usr/bin/env python3
"""Inception V3 speed and memory: BoneTriage beside TensorFlow-CPU and ONNX Runtime, in one run.

What it measures (all in the same run, the frameworks interleaved over ``--rounds`` rounds in rotating
order, so that the ratios are fair on a machine whose speed drifts):

  * TensorFlow-CPU: ``keras.applications.InceptionV3(weights=None, include_top=False, pooling='avg',
    input_shape=(S, S, 3))`` called through a ``tf.function`` (no XLA), 2 intra-op / 1 inter-op threads.
  * ONNX Runtime: the same Keras model (same seed, so the same weights) converted with tf2onnx, run on
    the CPU execution provider with ``intra_op_num_threads=2`` and ``ORT_ENABLE_ALL``. Its output is
    checked against Keras on a fixed input before timing.
  * BoneTriage: ``BIN bench --json --input-size S``, which prints one JSON object with
    ``ms_per_image_batch1``, ``ms_per_image_batch16``, ``gflops_batch16`` and ``peak_rss_mb``.

For each: median milliseconds per image at batch 1 and batch 16 (after warm-up), images/s, GFLOP/s
(2 x multiply-adds x images/s; Inception V3 at 150x150 is 1.07 G multiply-adds per image) and the
peak RSS of the process that ran it. Every framework runs in its own child process (this script
re-invoked with ``--worker tf`` / ``--worker ort``, or the BoneTriage binary), and the peak RSS is that
child's own ``ru_maxrss`` collected with ``os.wait4``, so the numbers are not mixed. The ONNX export
runs in a separate, untimed child so TensorFlow's memory is not counted against ONNX Runtime.
Random weights are used throughout: speed does not depend on their values.

Run from the repository root (a fresh machine needs only python3 with the venv module, and PyPI):

    python3 Benchmarks/compare_frameworks.py                       # table
    python3 Benchmarks/compare_frameworks.py --json                # one JSON object on stdout
    python3 Benchmarks/compare_frameworks.py --bonetriage PATH --input-size 150 --iterations 30

On first use it creates a venv (``--venv``, default ``.cache/bench-venv`` under the repository root)
with ``python3 -m venv``, pip-installs ``tensorflow-cpu onnxruntime tf2onnx numpy`` into it, and
re-executes itself inside it. These packages are benchmark tooling only; BoneTriage never uses them.
A framework that fails to install, convert or run is reported in its own row; the others still run.
The exit status is 0 when every selected framework produced figures, 1 otherwise.

Environment variables that affect performance (OPENBLAS_*, OMP_*, TF_ENABLE_ONEDNN_OPTS, ...) are
passed through untouched. Do not run other heavy jobs while this is timing.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.abspath(__file__)

PACKAGES = ["tensorflow-cpu", "onnxruntime", "tf2onnx", "numpy"]
MODULE_OF_PACKAGE = {"tensorflow-cpu": "tensorflow", "onnxruntime": "onnxruntime", "tf2onnx": "tf2onnx", "numpy": "numpy"}
FALLBACK_PACKAGE = {"tensorflow-cpu": "tensorflow"}  # e.g. platforms without a tensorflow-cpu wheel

INTRA_OP_THREADS = 2
INTER_OP_THREADS = 1
MACS_PER_IMAGE_150 = 1.07e9  # Inception V3 without top at 150x150 (the export worker counts it exactly)
ONNX_OPSET = 17
SEED = 0
RESULT_MARKER = "BENCH_RESULT "  # workers print their result on one stdout line after this marker
REEXEC_GUARD = "BONETRIAGE_BENCH_REEXECED"

TF, ORT, BT = "tf", "ort", "bonetriage"
ROW_NAMES = {TF: "TensorFlow (tf.function)", ORT: "ONNX Runtime", BT: "BoneTriage"}
BONETRIAGE_KEYS = ("ms_per_image_batch1", "ms_per_image_batch16", "gflops_batch16", "peak_rss_mb")


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, as `bonetriage bench` prints it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def log(message):
    print(f"[compare_frameworks] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Workers: run inside the venv, one per child process, and print one RESULT_MARKER line.
# --------------------------------------------------------------------------------------------------

def emit(result):
    print(RESULT_MARKER + json.dumps(result), flush=True)


def vm_hwm_mb():
    """This process's peak resident set size from /proc (None where /proc is not available)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def worker_environment():
    # Logging only, and only if the user has not chosen; performance variables are left alone.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"  # the TensorFlow row must run on TensorFlow


def make_input(batch, size):
    import numpy as np
    return np.random.default_rng(SEED).uniform(-1.0, 1.0, (batch, size, size, 3)).astype(np.float32)


def build_keras_model(size):
    import keras
    keras.utils.set_random_seed(SEED)  # same weights in the export worker and the TensorFlow worker
    return keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                          input_shape=(size, size, 3))


def count_macs(model):
    """Multiply-adds per image of all Conv2D layers (batch norm, pooling and the bias are not counted)."""
    import keras
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, oh, ow, _ = layer.output.shape
            macs += int(oh) * int(ow) * int(kh) * int(kw) * int(cin) * int(cout)
    return macs


def time_batches(run, size, iterations, prepare=lambda x: x):
    """Warm up, then time `iterations[batch]` calls per batch size; milliseconds per image.

    `prepare` turns the numpy input into the framework's own tensor once, outside the timed region."""
    inputs = {batch: prepare(make_input(batch, size)) for batch in iterations}
    out = {}
    for batch, count in iterations.items():
        for _ in range(3 if batch == 1 else 2):  # warm-up: tracing, allocation, caches
            run(inputs[batch])
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            run(inputs[batch])
            samples.append((time.perf_counter() - start) * 1000.0 / batch)
        out[f"ms_per_image_batch{batch}"] = statistics.median(samples)
        out[f"batch{batch}_samples_ms_per_image"] = {"min": min(samples), "max": max(samples), "runs": count}
    return out


def worker_export(args):
    """Build the Keras model, count its multiply-adds, convert it to ONNX, save a reference output."""
    worker_environment()
    import numpy as np
    import tensorflow as tf
    import tf2onnx
    model = build_keras_model(args.input_size)
    spec = (tf.TensorSpec((None, args.input_size, args.input_size, 3), tf.float32, name="input"),)
    result = {"macs_per_image": count_macs(model), "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}
    try:
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=ONNX_OPSET, output_path=args.onnx)
        result["converter"] = "tf2onnx.convert.from_keras"
    except Exception as e:  # Keras 3 / tf2onnx combinations where from_keras does not work
        print(f"from_keras failed ({type(e).__name__}: {e}); trying from_function", file=sys.stderr)
        function = tf.function(lambda x: model(x, training=False), input_signature=spec)
        tf2onnx.convert.from_function(function, input_signature=spec, opset=ONNX_OPSET, output_path=args.onnx)
        result["converter"] = "tf2onnx.convert.from_function"
    x = make_input(2, args.input_size)
    np.savez(args.reference, x=x, y=model(x, training=False).numpy())
    result["onnx_mb"] = os.path.getsize(args.onnx) / 1e6
    emit(result)


def worker_tf(args):
    worker_environment()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(INTRA_OP_THREADS)  # before any op runs
    tf.config.threading.set_inter_op_parallelism_threads(INTER_OP_THREADS)
    import keras
    model = build_keras_model(args.input_size)
    infer = tf.function(lambda x: model(x, training=False), jit_compile=False)
    result = time_batches(lambda x: infer(x).numpy(), args.input_size,
                          {1: args.iterations, 16: args.iterations_batch16}, prepare=tf.constant)
    result.update(vm_hwm_mb=vm_hwm_mb(), tensorflow=tf.__version__, keras=keras.__version__,
                  threads={"intra_op": INTRA_OP_THREADS, "inter_op": INTER_OP_THREADS})
    emit(result)


def worker_ort(args):
    worker_environment()
    import numpy as np
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = INTER_OP_THREADS
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    reference = np.load(args.reference)
    got = session.run(None, {name: reference["x"]})[0]
    diff = float(np.max(np.abs(got - reference["y"]))) if got.shape == reference["y"].shape else float("inf")
    scale = float(np.max(np.abs(reference["y"])))
    if not diff <= 1e-3 * scale + 1e-6:  # relative: random-weight outputs are small (about 0.01)
        raise SystemExit(f"ONNX output differs from Keras: max |diff| {diff:.3g} (output scale {scale:.3g})")
    result = time_batches(lambda x: session.run(None, {name: x}), args.input_size,
                          {1: args.iterations, 16: args.iterations_batch16})
    result.update(vm_hwm_mb=vm_hwm_mb(), onnxruntime=ort.__version__, max_abs_diff_vs_keras=diff,
                  threads={"intra_op": INTRA_OP_THREADS, "inter_op": INTER_OP_THREADS})
    emit(result)


# --------------------------------------------------------------------------------------------------
# Orchestration: venv, child processes, table.
# --------------------------------------------------------------------------------------------------

def missing_modules(python, modules):
    """Modules `python` cannot find (found without importing them, so this is quick)."""
    code = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    out = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, check=True)
    return out.stdout.split()


def pip_install(python, packages):
    log(f"pip install {' '.join(packages)} (into {os.path.dirname(os.path.dirname(python))})")
    # pip's output goes to stderr so that --json keeps stdout to one JSON object.
    return subprocess.run([python, "-m", "pip", "install", *packages], stdout=sys.stderr).returncode == 0


def ensure_venv(venv):
    """Create `venv` if needed and install whatever of PACKAGES is missing. Returns its python."""
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        log(f"creating venv {venv}")
        made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
        if made.returncode != 0:
            hint = " (on Debian/Ubuntu: apt-get install python3-venv)" if "ensurepip" in made.stdout + made.stderr else ""
            raise RuntimeError(f"`{sys.executable} -m venv {venv}` failed: "
                               f"{last_error_line(made.stdout + made.stderr, made.returncode)}{hint}")
    missing_mods = set(missing_modules(python, MODULE_OF_PACKAGE.values()))
    missing = [p for p in PACKAGES if MODULE_OF_PACKAGE[p] in missing_mods]
    if missing and not pip_install(python, missing):
        failed = missing
        if len(missing) > 1:
            log("installing them together failed; trying one at a time so the others can still run")
            failed = [package for package in missing if not pip_install(python, [package])]
        for package in failed:
            if package in FALLBACK_PACKAGE:
                log(f"{package} failed to install; trying {FALLBACK_PACKAGE[package]}")
                pip_install(python, [FALLBACK_PACKAGE[package]])
    return python


def in_venv(venv):
    return os.path.realpath(sys.prefix) == os.path.realpath(venv)


def run_child(cmd, timeout):
    """Run `cmd`; returns (returncode, stdout, stderr, peak RSS MB of that child alone, seconds)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timed_out = False
        while True:  # wait4 rather than wait: it returns this child's own rusage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if timed_out:
        stderr += f"\ntimed out after {timeout:.0f} s"
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    rss_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return proc.returncode, stdout, stderr, rss_mb, time.monotonic() - start


def last_error_line(stderr, returncode):
    """The most telling line of a failed child's stderr (skipping TensorFlow/absl log noise)."""
    noise = ("I0000", "W0000", "E0000", "WARNING: All log messages", "To enable the following instructions")
    lines = [l.strip() for l in stderr.splitlines() if l.strip() and not l.lstrip().startswith(noise)]
    return lines[-1] if lines else f"exit status {returncode}"


def run_worker(python, kind, args, extra):
    cmd = [python, SCRIPT, "--worker", kind, "--input-size", str(args.input_size),
           "--iterations", str(args.iterations), "--iterations-batch16", str(args.iterations_batch16), *extra]
    code, stdout, stderr, rss_mb, seconds = run_child(cmd, args.timeout)
    lines = [l[len(RESULT_MARKER):] for l in stdout.splitlines() if l.startswith(RESULT_MARKER)]
    if code != 0 or not lines:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        log(f"worker {kind} failed (exit {code}); last lines of its stderr:\n{tail}")
        return {"error": last_error_line(stderr, code)}
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = rss_mb
    result["wall_s"] = seconds
    return result


def bonetriage_command(spec):
    """`--bonetriage` may be a path or a command line (e.g. 'swift run -c release bonetriage')."""
    cmd = shlex.split(spec)
    if not cmd:
        return None, "empty --bonetriage command"
    exe = cmd[0]
    found = (os.path.isfile(exe) and os.access(exe, os.X_OK)) if os.sep in exe else shutil.which(exe)
    if not found:
        return None, f"{exe} not found: build it first (`make build`, i.e. swift build -c release) or pass --bonetriage"
    return cmd, None


def run_bonetriage(args):
    cmd, error = bonetriage_command(args.bonetriage)
    if error:
        return {"error": error}
    cmd += ["bench", "--json", "--input-size", str(args.input_size), "--kernels", args.kernels, "--precision", args.precision]
    try:
        code, stdout, stderr, rss_mb, seconds = run_child(cmd, args.timeout)
    except OSError as e:
        return {"error": f"cannot run {shlex.join(cmd)}: {e}"}
    if code != 0:
        return {"error": f"{shlex.join(cmd)} failed: {last_error_line(stderr, code)}"}
    report = None
    try:
        report = json.loads(stdout)
    except ValueError:  # tolerate stray lines around the JSON object
        for line in reversed(stdout.splitlines()):
            try:
                report = json.loads(line)
                break
            except ValueError:
                continue
    if not isinstance(report, dict):
        return {"error": f"{shlex.join(cmd)} printed no JSON object: {stdout.strip()[:200]!r}"}
    bad = [k for k in BONETRIAGE_KEYS if not isinstance(report.get(k), (int, float)) or isinstance(report.get(k), bool)]
    if bad:
        return {"error": f"bench --json output lacks numeric {', '.join(bad)}: {json.dumps(report)[:200]}"}
    if not (report["ms_per_image_batch1"] > 0 and report["ms_per_image_batch16"] > 0):
        return {"error": f"bench --json reported non-positive times: {json.dumps(report)[:200]}"}
    result = {k: report[k] for k in ("ms_per_image_batch1", "ms_per_image_batch16")}
    result.update(peak_rss_mb=rss_mb, peak_rss_mb_reported=report["peak_rss_mb"],
                  gflops_batch16_reported=report["gflops_batch16"], wall_s=seconds,
                  command=shlex.join(cmd), report=report)
    return result


def neighbour_main(duty, seed):
    """A noisy neighbour: one process that keeps a core busy `duty` of the time, in bursts of 2-20 ms
    at random, as another tenant's VM or the decoder beside the engine would. Runs until killed."""
    import random
    rng = random.Random(seed)
    while True:
        burst = rng.uniform(0.002, 0.020)
        end = time.perf_counter() + burst
        while time.perf_counter() < end:
            pass
        if duty < 1:
            time.sleep(burst * (1 - duty) / duty)


class Neighbour:
    """Starts the noisy neighbour (when duty > 0) for the duration of a `with` block."""

    def __init__(self, duty):
        self.duty, self.process = duty, None

    def __enter__(self):
        if self.duty > 0:
            self.process = subprocess.Popen([sys.executable, SCRIPT, "--worker", "neighbour", "--neighbour", str(self.duty)])
        return self

    def __exit__(self, *exc):
        if self.process:
            self.process.kill()
            self.process.wait()


def measure(args, python, setup_error):
    """Run the selected frameworks one after the other; returns (rows, macs per image, its source)."""
    rows = {}
    macs, macs_source = MACS_PER_IMAGE_150 * (args.input_size / 150) ** 2, "1.07e9 at 150x150, scaled by area"
    need = {TF: ["tensorflow", "keras", "numpy"], ORT: ["tensorflow", "tf2onnx", "onnxruntime", "numpy"]}
    for kind in (TF, ORT):
        if kind not in args.frameworks:
            continue
        if setup_error:
            rows[kind] = {"error": f"not run: could not set up the venv {args.venv}: {setup_error}"}
            continue
        missing = missing_modules(python, need[kind])
        if missing:
            rows[kind] = {"error": f"not installed in {sys.prefix}: {', '.join(missing)} "
                                   "(pip install failed? see the messages above)"}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        onnx_path, reference = os.path.join(tmp, "inception_v3.onnx"), os.path.join(tmp, "reference.npz")
        exported = None
        if ORT in args.frameworks and ORT not in rows:
            # The export feeds the ONNX row and the exact multiply-add count, so it comes first.
            log("exporting the Keras model to ONNX (separate, untimed process)")
            exported = run_worker(python, "export", args, ["--onnx", onnx_path, "--reference", reference])
            if "error" in exported:
                rows[ORT] = {"error": f"conversion to ONNX failed: {exported['error']}"}
            else:
                macs, macs_source = exported["macs_per_image"], "counted from the Keras model's Conv2D layers"
        runnable = [k for k in (TF, ORT, BT) if k in args.frameworks and k not in rows]
        per_round = {k: [] for k in runnable}
        for round_index in range(args.rounds):
            # Interleaved, in a rotating order, so that a slow spell of a shared machine falls on every
            # framework alike; each round's ratio compares runs made a minute apart.
            shift = round_index % max(1, len(runnable))
            for kind in runnable[shift:] + runnable[:shift]:
                if per_round[kind] and "error" in per_round[kind][-1]:
                    continue
                log(f"round {round_index + 1}/{args.rounds}: timing {ROW_NAMES[kind]}")
                with Neighbour(args.neighbour):
                    if kind == BT:
                        row = run_bonetriage(args)
                    else:
                        extra = ["--onnx", onnx_path, "--reference", reference] if kind == ORT else []
                        row = run_worker(python, kind, args, extra)
                if kind == ORT and "error" not in row:
                    row["converter"] = exported.get("converter")
                per_round[kind].append(row)
        for kind, runs in per_round.items():
            rows[kind] = combine_rounds(runs)
    for row in rows.values():
        if "error" not in row:
            for batch in (1, 16):
                row[f"images_per_s_batch{batch}"] = 1000.0 / row[f"ms_per_image_batch{batch}"]
                row[f"gflops_batch{batch}"] = 2.0 * macs * row[f"images_per_s_batch{batch}"] / 1e9
    return rows, macs, macs_source


def combine_rounds(runs):
    """One row from a framework's rounds: the median time at each batch size, the largest peak RSS, and
    every round's own figures under "rounds". An error in any round is the row's error."""
    failed = [r for r in runs if "error" in r]
    if failed or not runs:
        return failed[0] if failed else {"error": "not run"}
    row = dict(runs[len(runs) // 2])
    for key in ("ms_per_image_batch1", "ms_per_image_batch16"):
        row[key] = statistics.median(r[key] for r in runs)
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    row["rounds"] = [{k: r[k] for k in ("ms_per_image_batch1", "ms_per_image_batch16", "peak_rss_mb")} for r in runs]
    # Spread over the rounds: (slowest - fastest) / median, per batch size.
    for batch in (1, 16):
        times = [r[f"ms_per_image_batch{batch}"] for r in runs]
        row[f"spread_batch{batch}"] = (max(times) - min(times)) / statistics.median(times)
    return row


def ratios(rows):
    """BoneTriage against each peer: images/s ratio (> 1: BoneTriage faster) as the median of the
    per-round ratios (each compares runs made close together), with every round's ratio; peak RSS both ways."""
    out = {}
    bt = rows.get(BT)
    for kind in (ORT, TF):
        peer = rows.get(kind)
        if not bt or not peer or "error" in bt or "error" in peer:
            continue
        entry = {}
        for batch in (1, 16):
            key = f"ms_per_image_batch{batch}"
            each = [p[key] / b[key] for b, p in zip(bt["rounds"], peer["rounds"])]
            entry[f"images_per_s_batch{batch}"] = statistics.median(each)
            entry[f"images_per_s_batch{batch}_per_round"] = each
        entry["peer_rss_over_bonetriage_rss"] = peer["peak_rss_mb"] / bt["peak_rss_mb"]
        entry["bonetriage_rss_over_peer_rss"] = bt["peak_rss_mb"] / peer["peak_rss_mb"]
        out[f"BoneTriage vs {ROW_NAMES[kind]}"] = entry
    return out


def print_table(report):
    rows, size = report["frameworks"], report["input_size"]
    print(f"Inception V3 (no top, average pool), {size}x{size} input, {report['macs_per_image'] / 1e9:.3g} G "
          f"multiply-adds per image; TF/ORT with {INTRA_OP_THREADS} intra-op threads; median of "
          f"{report['iterations']['batch1']} (batch 1) / {report['iterations']['batch16']} (batch 16) timed runs")
    print(f"{report['host']['cpu_model']}, {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}; "
          f"peak RSS = that framework's own process; {report['rounds']} interleaved round(s), times are the median over rounds")
    bt = rows.get(BT, {})
    if "report" in bt:
        print(f"BoneTriage kernels: {bt['report'].get('kernels', '?')}"
              + (" (forced with --kernels)" if report["kernels"] != "auto" else " (the CPU's best)")
              + f"; precision: {bt['report'].get('precision', '?')}")
    if report["neighbour"] > 0:
        print(f"With a noisy neighbour: one process keeping a core busy {report['neighbour']:.0%} of the time in 2-20 ms bursts")
    print()
    head = ("ms/img b1", "ms/img b16", "img/s b16", "GFLOP/s b1", "GFLOP/s b16", "peak RSS MB", "spread b1", "spread b16")
    print(f"{'':26}" + "".join(f"{h:>13}" for h in head))
    for kind in (TF, ORT, BT):
        if kind not in rows:
            continue
        r = rows[kind]
        if "error" in r:
            print(f"{ROW_NAMES[kind]:26}   {r['error']}")
            continue
        values = (f"{r['ms_per_image_batch1']:.2f}", f"{r['ms_per_image_batch16']:.2f}",
                  f"{r['images_per_s_batch16']:.1f}", f"{r['gflops_batch1']:.1f}", f"{r['gflops_batch16']:.1f}",
                  f"{r['peak_rss_mb']:.0f}", f"{r['spread_batch1']:.0%}", f"{r['spread_batch16']:.0%}")
        print(f"{ROW_NAMES[kind]:26}" + "".join(f"{v:>13}" for v in values))
    print("(spread: slowest minus fastest round over the median round)")
    if report["ratios"]:
        print("\nBoneTriage images/s relative to the others (> 1: BoneTriage faster; median of the per-round ratios), and peak RSS:")
        for name, r in report["ratios"].items():
            peer = name.replace("BoneTriage vs ", "")
            print(f"  {name:38} x{r['images_per_s_batch1']:.2f} at batch 1, x{r['images_per_s_batch16']:.2f} at batch 16; "
                  f"{peer} peak RSS is {r['peer_rss_over_bonetriage_rss']:.2f}x BoneTriage's")
            if len(r["images_per_s_batch1_per_round"]) > 1:
                for batch in (1, 16):
                    each = ", ".join(f"x{v:.2f}" for v in r[f"images_per_s_batch{batch}_per_round"])
                    print(f"  {'':38}   batch {batch:>2} per round: {each}")
    elif BT in rows:
        print("\nNo ratios: BoneTriage or both peers did not run.")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bonetriage", default=os.path.join(REPO_ROOT, ".build", "release", "bonetriage"),
                    help="BoneTriage binary or command line, run as `BIN bench --json --input-size S` "
                         "(default: %(default)s)")
    ap.add_argument("--venv", default=os.path.join(REPO_ROOT, ".cache", "bench-venv"),
                    help="venv for TensorFlow/ONNX Runtime, created on first use (default: %(default)s)")
    ap.add_argument("--input-size", type=int, default=150, help="square input size S (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=30, help="timed runs at batch 1 (default: %(default)s)")
    ap.add_argument("--iterations-batch16", type=int, default=5, help="timed runs at batch 16 (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds; every framework runs once per round, in rotating order (default: %(default)s)")
    ap.add_argument("--frameworks", default=f"{TF},{ORT},{BT}",
                    help="comma-separated subset of tf, ort, bonetriage (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per child process (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--kernels", default="auto",
                    help="BoneTriage's kernel family (bench --kernels): auto, avx512, avx2 (e.g. to stand in for an "
                         "AVX2-only CPU on an AVX-512 one), portable (default: %(default)s)")
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                    help="BoneTriage's precision (bench --precision): float32, or bfloat16 on CPUs with AVX512-BF16 "
                         "(ONNX Runtime stays float32) (default: %(default)s)")
    ap.add_argument("--neighbour", type=float, default=0.0,
                    help="run a noisy neighbour beside every timed run: a process keeping one core busy this fraction "
                         "of the time in random 2-20 ms bursts, 0 for none (default: %(default)s)")
    ap.add_argument("--worker", choices=["export", TF, ORT, "neighbour"], help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    ap.add_argument("--reference", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = set(args.frameworks) - {TF, ORT, BT}
    if unknown or not args.frameworks:
        ap.error(f"--frameworks: unknown {', '.join(sorted(unknown))}" if unknown else "--frameworks: empty")
    if args.input_size < 75:
        ap.error("--input-size: Keras InceptionV3 needs at least 75")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not 0 <= args.neighbour <= 1:
        ap.error("--neighbour is a fraction of one core's time, from 0 to 1")
    if args.iterations < 1 or args.iterations_batch16 < 1:
        ap.error("--iterations and --iterations-batch16 must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "neighbour":
        neighbour_main(args.neighbour, os.getpid())
        return 0
    if args.worker:
        {"export": worker_export, TF: worker_tf, ORT: worker_ort}[args.worker](args)
        return 0

    setup_error = None
    if {TF, ORT} & set(args.frameworks) and not in_venv(args.venv):
        if os.environ.get(REEXEC_GUARD):
            setup_error = f"re-executed with {sys.executable} but sys.prefix {sys.prefix} is not {args.venv}"
        else:
            try:
                python = ensure_venv(args.venv)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
                setup_error = str(e)
            else:
                os.environ[REEXEC_GUARD] = "1"
                sys.stdout.flush()
                sys.stderr.flush()
                os.execv(python, [python, SCRIPT, *(sys.argv[1:] if argv is None else argv)])
        if setup_error:
            log(f"venv setup failed: {setup_error}")

    rows, macs, macs_source = measure(args, sys.executable, setup_error)
    report = {
        "model": "keras.applications.InceptionV3(weights=None, include_top=False, pooling='avg')",
        "input_size": args.input_size,
        "macs_per_image": macs,
        "macs_source": macs_source,
        "iterations": {"batch1": args.iterations, "batch16": args.iterations_batch16},
        "rounds": args.rounds,
        "kernels": args.kernels,
        "precision": args.precision,
        "neighbour": args.neighbour,
        "threads": {"intra_op": INTRA_OP_THREADS, "inter_op": INTER_OP_THREADS},
        "host": {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.system(),
                 "python": platform.python_version(), "venv": sys.prefix},
        "frameworks": {ROW_NAMES[k]: rows[k] for k in (TF, ORT, BT) if k in rows},
        "ratios": ratios(rows),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table({**report, "frameworks": rows})
    return 0 if all("error" not in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
