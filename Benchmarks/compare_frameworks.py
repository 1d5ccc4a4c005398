#!/usr/bin/env python3
"""Inception V3 at 150x150: BoneTriage's engine beside TensorFlow-CPU and ONNX Runtime, in one run.

Each framework runs in its own child process (so peak RSS is its own), on the same machine, one after
the other, with 2 threads. TensorFlow runs keras.applications.InceptionV3 (random weights; speed does
not depend on them) through a tf.function; ONNX Runtime runs the same Keras model exported to ONNX;
BoneTriage runs `bonetriage bench --json`. Prints ms/image at batch 1 and 16, images/s, GFLOP/s, peak
RSS, and the ratios (> 1 means BoneTriage is faster or smaller).

    python3 Benchmarks/compare_frameworks.py [--bonetriage .build/release/bonetriage] [--json]

TensorFlow, ONNX Runtime and tf2onnx are installed into a throwaway venv (default .cache/bench-venv)
on first use; they are benchmark tooling only, never used by BoneTriage itself.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MACS_PER_IMAGE = 1.0666e9  # Inception V3 at 150x150 (bonetriage bench reports the exact figure)
PACKAGES = ["tensorflow-cpu", "onnxruntime", "tf2onnx", "onnx", "numpy"]


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def time_per_image(run, batch, repeats):
    run(batch)  # warm-up (graph building, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.median(times)


def worker(kind, size, iterations):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    inputs = {b: np.random.default_rng(0).uniform(-1, 1, (b, size, size, 3)).astype("float32") for b in (1, 16)}
    onnx_path = os.path.join(ROOT, ".cache", f"inception-v3-{size}.onnx")
    if kind == "export":  # its own process, so TensorFlow's memory is not counted against ONNX Runtime
        import keras
        model = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
        model(inputs[1])
        os.makedirs(os.path.dirname(onnx_path), exist_ok=True)
        model.export(onnx_path, format="onnx")
        print(json.dumps({"exported": onnx_path}))
        return
    if kind == "tf":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras
        model = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
        fn = tf.function(lambda x: model(x, training=False))
        run = lambda b: fn(tf.constant(inputs[b])).numpy()
    else:
        import onnxruntime as ort
        path = onnx_path
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda b: session.run(None, {name: inputs[b]})
    b1 = time_per_image(run, 1, iterations)
    b16 = time_per_image(run, 16, max(3, iterations // 4))
    print(json.dumps({"ms_per_image_batch1": b1, "ms_per_image_batch16": b16, "peak_rss_mb": peak_rss_mb()}))


def ensure_venv(venv):
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        print(f"creating {venv} with {' '.join(PACKAGES)} (benchmark tooling only)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([python, "-m", "pip", "install", "--quiet"] + PACKAGES)
    return python


def child(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bonetriage", default=os.path.join(ROOT, ".build", "release", "bonetriage"))
    ap.add_argument("--venv", default=os.path.join(ROOT, ".cache", "bench-venv"))
    ap.add_argument("--input-size", type=int, default=150)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", choices=["tf", "ort", "export"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.input_size, args.iterations)

    python = ensure_venv(args.venv)
    me = os.path.abspath(__file__)
    common = ["--input-size", str(args.input_size), "--iterations", str(args.iterations)]
    exported = child([python, me, "--worker", "export"] + common)
    rows = {
        "BoneTriage": child([args.bonetriage, "bench", "--json"] + common) if os.path.exists(args.bonetriage)
        else {"error": f"{args.bonetriage} not found: run `make build` first"},
        "ONNX Runtime": child([python, me, "--worker", "ort"] + common) if "error" not in exported
        else {"error": f"export to ONNX failed: {exported['error']}"},
        "TensorFlow (tf.function)": child([python, me, "--worker", "tf"] + common),
    }
    macs = MACS_PER_IMAGE * (args.input_size / 150) ** 2
    for r in rows.values():
        if "error" not in r:
            r["images_per_s_batch1"] = 1000 / r["ms_per_image_batch1"]
            r["images_per_s_batch16"] = 1000 / r["ms_per_image_batch16"]
            r["gflops_batch16"] = 2 * macs * r["images_per_s_batch16"] / 1e9
    ratios = {}
    bt = rows["BoneTriage"]
    for peer in ("ONNX Runtime", "TensorFlow (tf.function)"):
        p = rows[peer]
        if "error" in bt or "error" in p:
            continue
        ratios[peer] = {
            "speed_batch1": p["ms_per_image_batch1"] / bt["ms_per_image_batch1"],
            "speed_batch16": p["ms_per_image_batch16"] / bt["ms_per_image_batch16"],
            "rss": p["peak_rss_mb"] / bt["peak_rss_mb"],
        }
    if args.json:
        print(json.dumps({"input_size": args.input_size, "frameworks": rows, "ratios_vs_peer": ratios}, indent=1))
        return
    print(f"Inception V3 at {args.input_size}x{args.input_size}, 2 threads, medians\n")
    print(f"{'':26} {'ms/img b1':>10} {'ms/img b16':>11} {'img/s b16':>10} {'GFLOP/s':>8} {'peak RSS MB':>12}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:26} failed: {r['error']}")
        else:
            print(f"{name:26} {r['ms_per_image_batch1']:10.2f} {r['ms_per_image_batch16']:11.2f} "
                  f"{r['images_per_s_batch16']:10.1f} {r['gflops_batch16']:8.1f} {r['peak_rss_mb']:12.0f}")
    print()
    for peer, r in ratios.items():
        print(f"BoneTriage vs {peer}: speed x{r['speed_batch1']:.2f} at batch 1, x{r['speed_batch16']:.2f} at batch 16; "
              f"{r['rss']:.2f}x less memory")


if __name__ == "__main__":
    sys.exit(main())
