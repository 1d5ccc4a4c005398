#!/usr/bin/env python3
"""Build a seed-style Keras classifier, convert it with tools/import_keras_model.py, and record Keras'
own probabilities, so the Swift suite can check the converted model against Keras.

Writes OUT_DIR/seed.keras, OUT_DIR/model.safetensors and OUT_DIR/expected.json. Inputs (150x150x3,
already in the model's [0, 1] range): all zeros, all ones, and (i % 256) / 255 at flat index i.
Run by `make keras-import-check` with TensorFlow in a throwaway venv.
"""
import json
import os
import subprocess
import sys

import numpy as np


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    keras.utils.set_random_seed(7)
    base = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg", input_shape=(150, 150, 3))
    # Non-trivial batch-norm statistics, so the check covers BN folding with gamma (scale=False here) and means.
    rng = np.random.default_rng(3)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            beta, mean, var = layer.get_weights()
            layer.set_weights([rng.normal(0, 0.1, beta.shape).astype("f4"), rng.normal(0, 0.1, mean.shape).astype("f4"),
                               rng.uniform(0.5, 1.5, var.shape).astype("f4")])
    head = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(base.input, head(base.output))
    head.set_weights([rng.normal(0, 0.5, (2048, 1)).astype("f4"), np.array([-0.2], "f4")])
    n = 150 * 150 * 3
    i = np.arange(n)
    inputs = np.stack([np.zeros(n), np.ones(n), (i % 256) / 255.0]).reshape(3, 150, 150, 3).astype("f4")
    path = os.path.join(out, "seed.keras")
    model.save(path)
    probabilities = [float(p) for p in np.asarray(model(inputs, training=False))[:, 0]]
    subprocess.check_call([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "import_keras_model.py"), path,
                           "--out", os.path.join(out, "model.safetensors"), "--input-range", "0,1", "--model-id", "seed-check"])
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"keras_version": keras.__version__, "probabilities": probabilities}, f)
    print(f"expected probabilities {probabilities}")


if __name__ == "__main__":
    main()
