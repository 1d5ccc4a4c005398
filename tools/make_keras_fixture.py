#!/usr/bin/env python3
"""Make the Keras parity fixture for BoneTriage's Inception V3 engine (`keras` variant).

Builds keras.applications.InceptionV3 (include_top=False, global average pooling) at 150x150,
fills every convolution and batch norm with the deterministic hash weights that
`SyntheticWeights` in Swift computes (same integer formula, so no weights need committing), runs
two 150x150 images as one batch and one 299x299 image, and writes
`Tests/Fixtures/keras-inception-v3-parity.safetensors` with:

  in150            [2,150,150,3] model inputs (u8 / 127.5 - 1)
  in150/pooled     [2,2048]      pooled features
  in150/stem, in150/mixed2, in150/mixed7, in150/mixed10   NHWC activations of image 0
  in299            [1,299,299,3], in299/pooled [1,2048]
and metadata listing every convolution's kernel shape in Keras creation order, which the Swift test
compares with its own architecture table.

Run (TensorFlow in a throwaway venv, never needed at BoneTriage's run time):
    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu safetensors numpy
    /tmp/tfvenv/bin/python tools/make_keras_fixture.py
"""
import json
import os
import sys

import numpy as np

MASK = 0xFFFFFFFF


def unit(layer, salt, index):
    """Vectorised twin of SyntheticWeights.unit: index may be a numpy uint64 array."""
    h = (np.asarray(index, dtype=np.uint64) * np.uint64(2654435761)
         + np.uint64((layer + 1) * 2246822519 + salt * 3266489917)) & np.uint64(MASK)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(MASK)
    h ^= h >> np.uint64(13)
    return (h >> np.uint64(8)).astype(np.float64) / 16777216.0


def test_image(size, seed):
    p = np.arange(size * size, dtype=np.uint64)
    y, x = p // size, p % size
    wave = (x * 7 + y * 3 + seed * 11) % 256
    noise = (unit(1000 + seed, 9, p) * 64).astype(np.uint64)
    return ((wave + noise) % 256).astype(np.uint8).reshape(size, size)


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from safetensors.numpy import save_file

    def build(size):
        keras.utils.clear_session()  # restart auto names at conv2d, conv2d_1, ...
        model = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                               input_shape=(size, size, 3))
        # model.layers is in topological order; Keras' auto names (conv2d, conv2d_1, ...) give the
        # creation order that SyntheticWeights indexes layers by.
        def creation_order(layer):
            tail = layer.name.rsplit("_", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        convs = sorted((l for l in model.layers if isinstance(l, keras.layers.Conv2D)), key=creation_order)
        norms = sorted((l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)), key=creation_order)
        assert [c.name for c in convs][:2] == ["conv2d", "conv2d_1"], [c.name for c in convs][:3]
        assert len(convs) == len(norms) == 94, (len(convs), len(norms))
        shapes = []
        for index, (conv, norm) in enumerate(zip(convs, norms)):
            kernel_shape = conv.get_weights()[0].shape
            shapes.append(list(kernel_shape))
            kh, kw, ic, oc = kernel_shape
            count = kh * kw * ic * oc
            limit = np.sqrt(6.0 / (kh * kw * ic))
            idx = np.arange(count, dtype=np.uint64)
            kernel = ((2 * unit(index, 0, idx) - 1) * limit).astype(np.float32).reshape(kernel_shape)
            conv.set_weights([kernel])
            o = np.arange(oc, dtype=np.uint64)
            beta = (0.1 * (2 * unit(index, 1, o) - 1)).astype(np.float32)
            mean = (0.1 * (2 * unit(index, 2, o) - 1)).astype(np.float32)
            var = (0.5 + unit(index, 3, o)).astype(np.float32)
            assert not norm.scale and abs(norm.epsilon - 0.001) < 1e-9
            norm.set_weights([beta, mean, var])
        return model, shapes

    def to_input(images):
        return (np.stack(images)[..., None].repeat(3, axis=-1).astype(np.float32) / 127.5 - 1.0).astype(np.float32)

    tensors = {}
    model150, shapes = build(150)
    pools = [l for l in model150.layers if isinstance(l, keras.layers.MaxPooling2D)]
    taps = {"stem": pools[1].output}
    for name in ("mixed2", "mixed7", "mixed10"):
        taps[name] = model150.get_layer(name).output
    probe = keras.Model(model150.input, list(taps.values()) + [model150.output])
    x150 = to_input([test_image(150, 1), test_image(150, 2)])
    outputs = probe(x150, training=False)
    tensors["in150"] = x150
    tensors["in150/pooled"] = np.asarray(outputs[-1], dtype=np.float32)
    for name, value in zip(taps.keys(), outputs[:-1]):
        tensors[f"in150/{name}"] = np.ascontiguousarray(np.asarray(value, dtype=np.float32)[0])

    model299, _ = build(299)
    x299 = to_input([test_image(299, 3)])
    tensors["in299"] = x299
    tensors["in299/pooled"] = np.asarray(model299(x299, training=False), dtype=np.float32)

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures",
                       "keras-inception-v3-parity.safetensors")
    metadata = {
        "generator": "tools/make_keras_fixture.py",
        "keras_version": keras.__version__,
        "kernel_shapes": json.dumps(shapes),
        "input": "u8 / 127.5 - 1, gray replicated to RGB; images from SyntheticWeights.testImage(size, seed) seeds 1,2 (150) and 3 (299)",
    }
    save_file(tensors, out, metadata=metadata)
    print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out)} bytes); keras {keras.__version__}")


if __name__ == "__main__":
    sys.exit(main())
