#!/usr/bin/env python3
"""Convert a Keras Inception V3 classifier (.keras or .h5) into a BoneTriage model file.

The model must be keras.applications.InceptionV3 (the TF-Slim layout, as the seed project's
TF-Hub feature vector) with global average pooling and one Dense sigmoid unit on top, as the
original student project trained it. The output is the same safetensors format `bonetriage train`
writes: backbone tensors named `stem/i` and `mixedN/<branch>/i` in Keras' creation order, the head,
and metadata including the backbone fingerprint the head is tied to. Check it with
`bonetriage model show OUT`.

Run with TensorFlow in a throwaway venv (never needed by BoneTriage at run time):
    python3 -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install tensorflow-cpu safetensors numpy
    /tmp/kvenv/bin/python tools/import_keras_model.py MODEL.keras --out model.safetensors \
        [--input-range 0,1] [--threshold 0.5] [--body-parts HUMERUS] [--filter nearest]
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

import numpy as np

# Canonical names of the 94 convolutions in Keras' creation order (BoneTriage's architecture table).
def canonical_names():
    names = [f"stem/{i}" for i in range(5)]
    for n in range(3):
        names += [f"mixed{n}/branch1x1/0", f"mixed{n}/branch5x5/0", f"mixed{n}/branch5x5/1", f"mixed{n}/branch3x3dbl/0",
                  f"mixed{n}/branch3x3dbl/1", f"mixed{n}/branch3x3dbl/2", f"mixed{n}/branch_pool/0"]
    names += ["mixed3/branch3x3/0", "mixed3/branch3x3dbl/0", "mixed3/branch3x3dbl/1", "mixed3/branch3x3dbl/2"]
    for n in range(4, 8):
        names += [f"mixed{n}/branch1x1/0"] + [f"mixed{n}/branch7x7/{i}" for i in range(3)] + \
                 [f"mixed{n}/branch7x7dbl/{i}" for i in range(5)] + [f"mixed{n}/branch_pool/0"]
    names += ["mixed8/branch3x3/0", "mixed8/branch3x3/1"] + [f"mixed8/branch7x7x3/{i}" for i in range(4)]
    for n in (9, 10):
        names += [f"mixed{n}/branch1x1/0"] + [f"mixed{n}/branch3x3/{i}" for i in range(3)] + \
                 [f"mixed{n}/branch3x3dbl/{i}" for i in range(4)] + [f"mixed{n}/branch_pool/0"]
    assert len(names) == 94
    return names


def creation_order(layer):
    tail = layer.name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def fingerprint(variant, tensors):
    """BackboneFingerprint in Swift: variant, then per tensor in name order: name, shape, f32 LE bytes."""
    digest = hashlib.sha256(variant.encode())
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}[{', '.join(str(d) for d in t.shape)}]".encode())
        digest.update(np.ascontiguousarray(t, dtype="<f4").tobytes())
    return digest.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--input-range", default="0,1", help="model input for pixels 0..255 (the seed used x/255: 0,1)")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--body-parts", default="HUMERUS")
    ap.add_argument("--filter", default="nearest", choices=["nearest", "area"],
                    help="resize filter the model was trained with (flow_from_directory: nearest)")
    ap.add_argument("--model-id", default=None)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from safetensors.numpy import save_file

    model = keras.models.load_model(args.model, compile=False)
    layers = []
    def walk(m):
        for l in m.layers:
            if hasattr(l, "layers") and l.layers:
                walk(l)
            else:
                layers.append(l)
    walk(model)
    convs = sorted((l for l in layers if isinstance(l, keras.layers.Conv2D)), key=creation_order)
    norms = sorted((l for l in layers if isinstance(l, keras.layers.BatchNormalization)), key=creation_order)
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)]
    if len(convs) != 94 or len(norms) != 94:
        sys.exit(f"{args.model}: expected Inception V3's 94 convolutions and batch norms, found {len(convs)} and {len(norms)}")
    if len(dense) != 1 or dense[0].units != 1 or dense[0].activation.__name__ != "sigmoid":
        sys.exit(f"{args.model}: expected exactly one Dense layer with one sigmoid unit on top of the pooled features")
    tensors = {}
    for name, conv, norm in zip(canonical_names(), convs, norms):
        kernel = conv.get_weights()[0]
        weights = norm.get_weights()
        if norm.scale:
            gamma, beta, mean, var = weights
            tensors[f"{name}/gamma"] = gamma.astype("<f4")
        else:
            beta, mean, var = weights
        if abs(norm.epsilon - 0.001) > 1e-9:
            sys.exit(f"{args.model}: batch norm epsilon {norm.epsilon} is not Inception V3's 0.001")
        tensors[f"{name}/kernel"] = kernel.astype("<f4")
        tensors[f"{name}/beta"] = beta.astype("<f4")
        tensors[f"{name}/moving_mean"] = mean.astype("<f4")
        tensors[f"{name}/moving_variance"] = var.astype("<f4")
    size = int(model.input_shape[1])
    low, high = (float(v) for v in args.input_range.split(","))
    backbone_hash = fingerprint("keras", tensors)
    w, b = dense[0].get_weights()
    if w.shape != (2048, 1):
        sys.exit(f"{args.model}: the Dense layer reads {w.shape[0]} features, expected Inception V3's 2048 pooled features")
    tensors["head/weights"] = w[:, 0].astype("<f4")
    tensors["head/bias"] = b.astype("<f4")
    parts = [p.strip().upper() for p in args.body_parts.split(",") if p.strip()]
    metadata = {
        "format": "bonetriage-inception-v3", "format_version": "1", "variant": "keras", "input_size": str(size),
        "input_range": f"{low},{high}", "provenance": f"Keras model {os.path.basename(args.model)} via tools/import_keras_model.py",
        "head_format": "bonetriage-head", "model_id": args.model_id or f"keras-{os.path.splitext(os.path.basename(args.model))[0]}",
        "backbone_variant": "keras", "backbone_sha256": backbone_hash, "head_input_size": str(size),
        "head_input_range": f"{low},{high}", "resize_filter": args.filter, "threshold": str(args.threshold),
        "body_parts": ",".join(parts), "training_data": "imported from Keras; see the model's own records",
        "trained_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "cross_validation": "{}",
    }
    save_file(tensors, args.out, metadata=metadata)
    print(f"wrote {args.out}: Inception V3 (keras) at {size}x{size}, input {low}..{high}, backbone {backbone_hash[:16]}...")


if __name__ == "__main__":
    main()
