#!/usr/bin/env python3
"""File to model input (150x150), per transfer syntax: BoneTriage beside pydicom + pylibjpeg and DCMTK's dcmj2pnm/dcml2pnm.

`make bench-decode` runs it in a throwaway venv under .cache/ (pydicom 3, pylibjpeg with its OpenJPEG and
libjpeg plugins, pyjpegls, numpy). On every radiograph in ../shared/data/dicom/radiographs, and on
re-encodings of the uncompressed DX and CR radiographs made here (JPEG baseline 8-bit and extended 12-bit
and lossless by DCMTK's dcmcjpeg, JPEG-LS by dcmcjpls, RLE by dcmcrle, JPEG 2000 lossless and lossy by
pydicom + pylibjpeg-openjpeg, HTJ2K lossless, lossless RPCL and lossy by OpenJPH's ojph_compress), it
times, in the same run and one decoder thread each:

- bonetriage: one `bonetriage decode-worker` (the daemon's isolated decoder), request to model input over
  its pipe, warm (the file is read and decoded anew each time);
- pydicom: dcmread + pixel_array (full decode) + Modality LUT and window/VOI LUT + area resize to 150x150
  in numpy (two matrix products), in this Python process, warm;
- dcm2pnm: DCMTK's own converters (dcmj2pnm: uncompressed, RLE and JPEG; dcml2pnm: JPEG-LS) with scaling to
  150 pixels wide (+Sxv 150) and the min-max window, to a PGM file, a process per run as one uses them.
  DCMTK has no JPEG 2000 decoder, so they fail on those files (said so per file).

Each figure is the median of --runs runs; ratios are the peer's time over BoneTriage's (above 1: BoneTriage
is faster). Nothing is asserted: this prints figures (and --json writes them).
"""
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time

SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.4.50": "JPEG baseline (8-bit)",
    "1.2.840.10008.1.2.4.51": "JPEG extended (12-bit)",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE lossless",
    "1.2.840.10008.1.2.4.201": "HTJ2K lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K (lossy)",
}

# HTJ2K encodings by OpenJPH's ojph_compress (Debian's openjph-tools): (transfer syntax, label, options).
HTJ2K_JOBS = [("1.2.840.10008.1.2.4.201", "htj2k-lossless", ["-reversible", "true", "-prog_order", "LRCP"]),
              ("1.2.840.10008.1.2.4.202", "htj2k-lossless-rpcl", ["-reversible", "true", "-prog_order", "RPCL"]),
              ("1.2.840.10008.1.2.4.203", "htj2k-lossy", ["-qstep", "0.005"])]


def cpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


class BoneTriageWorker:
    """The daemon's decoder child: a JSON request per line, the model input back over the pipe."""

    def __init__(self, binary):
        self.process = subprocess.Popen([binary, "decode-worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def model_input(self, path):
        request = {"task": "model_input", "path": path, "maximumPixels": 256 << 20, "size": 150, "low": -1.0,
                   "high": 0.9921875, "filter": "area", "threads": 1}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        frames = answer.get("frames") or 0
        self.process.stdout.read(frames * 150 * 150 * 3 * 4)
        if answer.get("outcome") != "inputs":
            raise RuntimeError(f"bonetriage could not decode {path}: {answer}")

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def area_matrix(n, size, np):
    """size x n weights: output pixel o averages input [o n/size, (o+1) n/size)."""
    m = np.zeros((size, n), dtype=np.float32)
    scale = n / size
    for o in range(size):
        start, end = o * scale, (o + 1) * scale
        i = int(start)
        while i < end and i < n:
            m[o, i] = (min(end, i + 1) - max(start, i)) / scale
            i += 1
    return m


def pydicom_model_input(path, np, pydicom, cache):
    """What a Python service does: full decode, Modality LUT, window or VOI LUT (else min-max), area resize."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    pixels = ds.pixel_array
    frames = pixels if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else pixels[None]
    out = []
    for frame in frames:
        values = apply_modality_lut(frame, ds).astype(np.float32)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            values = apply_voi_lut(values, ds).astype(np.float32)
        low, high = float(values.min()), float(values.max())
        gray = (values - low) / max(high - low, 1e-6)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            gray = 1 - gray
        if gray.ndim == 3:
            gray = gray.mean(axis=2)
        h, w = gray.shape
        key = (h, w)
        if key not in cache:
            cache[key] = (area_matrix(h, 150, np), area_matrix(w, 150, np).T.copy())
        rows, columns = cache[key]
        small = rows @ gray @ columns
        out.append(np.repeat((small * 2 - 1)[:, :, None], 3, axis=2))
    return out


def dcm2pnm(path, syntax, out):
    # DCMTK 3.6.7's converters: dcmj2pnm (uncompressed, RLE and JPEG decoders registered), dcml2pnm (JPEG-LS).
    tool = "dcml2pnm" if syntax in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81") else "dcmj2pnm"
    r = subprocess.run([tool, "+Sxv", "150", "+Wm", path, out], capture_output=True)
    if r.returncode != 0:
        first = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"exit {r.returncode}: {first[:160]}")


def reencode(shared, work, np, pydicom, dcmtk):
    """Re-encodings of the uncompressed radiographs, each in one transfer syntax; (label, path) pairs."""
    made = []
    from pydicom.uid import JPEG2000Lossless, JPEG2000, ExplicitVRLittleEndian
    for name in ["DX_cat_deid-data.dcm", "RG3_UNCR.dcm"]:
        source = os.path.join(shared, name)
        if not os.path.exists(source):
            continue
        stem = name.replace(".dcm", "")
        # 8-bit: the stored values mapped through the file's window, written back as 8 bits (MONOCHROME2 kept).
        ds = pydicom.dcmread(source)
        from pydicom.pixels import apply_voi_lut, apply_modality_lut
        values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
        low, high = values.min(), values.max()
        eight = np.clip((values - low) / max(high - low, 1e-6) * 255 + 0.5, 0, 255).astype(np.uint8)
        ds8 = pydicom.dcmread(source)
        ds8.BitsAllocated, ds8.BitsStored, ds8.HighBit, ds8.PixelRepresentation = 8, 8, 7, 0
        for keyword in ["WindowCenter", "WindowWidth", "VOILUTSequence", "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"]:
            if keyword in ds8:
                delattr(ds8, keyword)
        ds8.WindowCenter, ds8.WindowWidth = "128", "256"
        ds8.PhotometricInterpretation = ds.PhotometricInterpretation
        ds8.PixelData = eight.tobytes()
        ds8.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        native8 = os.path.join(work, f"{stem}-8bit.dcm")
        ds8.save_as(native8, enforce_file_format=True)
        jobs = [("dcmcjpeg", ["+eb", "+q", "90"], native8, "jpeg-baseline"),
                ("dcmcjpeg", ["+ee", "+q", "90"], source, "jpeg-extended"),
                ("dcmcjpeg", ["+e1"], source, "jpeg-lossless-sv1"),
                ("dcmcjpls", ["+el"], source, "jpegls-lossless"),
                ("dcmcrle", [], source, "rle")]
        for tool, options, input_path, label in jobs:
            out = os.path.join(work, f"{stem}-{label}.dcm")
            r = subprocess.run([os.path.join(dcmtk, tool)] + options + [input_path, out], capture_output=True)
            if r.returncode == 0:
                made.append((f"{stem} {label}", out))
            else:
                print(f"  (could not make {stem} {label}: {r.stderr.decode(errors='replace')[:120]})")
        for uid, label, kwargs in [(JPEG2000Lossless, "j2k-lossless", {}), (JPEG2000, "j2k-lossy20", {"j2k_cr": [20]})]:
            try:
                ds2 = pydicom.dcmread(source)
                ds2.compress(uid, **kwargs)
                out = os.path.join(work, f"{stem}-{label}.dcm")
                ds2.save_as(out, enforce_file_format=True)
                made.append((f"{stem} {label}", out))
            except Exception as error:  # an encoder the venv lacks: say so, go on
                print(f"  (could not make {stem} {label}: {error})")
        made += htj2k(source, stem, work, np, pydicom)
    return made


def htj2k(source, stem, work, np, pydicom):
    """The stored values as HTJ2K (ojph_compress on a PGM), wrapped with the HTJ2K transfer syntaxes."""
    tool = shutil.which("ojph_compress")
    if not tool:
        print(f"  (could not make {stem} HTJ2K: ojph_compress is not installed; make deps installs openjph-tools)")
        return []
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID
    ds = pydicom.dcmread(source)
    values = ds.pixel_array.astype(">u2")
    pgm = os.path.join(work, f"{stem}.pgm")
    with open(pgm, "wb") as f:
        f.write(f"P5\n{ds.Columns} {ds.Rows}\n{(1 << int(ds.BitsStored)) - 1}\n".encode() + values.tobytes())
    made = []
    for uid, label, options in HTJ2K_JOBS:
        code = os.path.join(work, f"{stem}-{label}.j2c")
        r = subprocess.run([tool, "-i", pgm, "-o", code] + options, capture_output=True)
        if r.returncode != 0:
            print(f"  (could not make {stem} {label}: {r.stderr.decode(errors='replace')[:120]})")
            continue
        out_ds = pydicom.dcmread(source)
        out_ds.file_meta.TransferSyntaxUID = UID(uid)
        with open(code, "rb") as f:
            out_ds.PixelData = encapsulate([f.read()])
        out_ds["PixelData"].VR = "OB"
        out_ds["PixelData"].is_undefined_length = True
        out = os.path.join(work, f"{stem}-{label}.dcm")
        out_ds.save_as(out, enforce_file_format=True)
        made.append((f"{stem} {label}", out))
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bonetriage", required=True)
    parser.add_argument("--shared", default="../shared/data/dicom/radiographs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    import numpy as np
    import pydicom
    dcmtk = os.path.dirname(shutil.which("dcmj2pnm") or "/usr/bin/dcmj2pnm")
    if not os.path.isdir(args.shared):
        sys.exit(f"no radiographs at {args.shared}: run from the checkout beside ../shared, or give --shared")
    work = tempfile.mkdtemp(prefix="bonetriage-decode-bench.")
    files = [(name, os.path.join(args.shared, name)) for name in sorted(os.listdir(args.shared)) if name.endswith(".dcm")]
    print(f"re-encoding the uncompressed radiographs into {work} ...")
    files += reencode(args.shared, work, np, pydicom, dcmtk)
    cpu = cpu_model()
    print(f"\nfile to 150x150 model input, median of {args.runs} runs, one decoder thread each; {cpu}, {time.strftime('%Y-%m-%d')}")
    print(f"{'file':54} {'syntax':24} {'size':>11} {'bonetriage':>10} {'pydicom':>9} {'dcm2pnm':>9} {'pyd/bt':>7} {'dcm2/bt':>7}")
    worker = BoneTriageWorker(args.bonetriage)
    rows, cache = [], {}
    for label, path in files:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2"))
        size = f"{getattr(ds, 'Columns', '?')}x{getattr(ds, 'Rows', '?')}" + (f"x{ds.NumberOfFrames}" if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else "")
        row = {"file": label, "syntax": syntax, "syntax_name": SYNTAXES.get(syntax, syntax), "size": size}
        try:
            worker.model_input(path)
            row["bonetriage_ms"] = median_ms(lambda: worker.model_input(path), args.runs)
        except Exception as error:
            row["bonetriage_error"] = str(error)[:200]
        try:
            pydicom_model_input(path, np, pydicom, cache)
            row["pydicom_ms"] = median_ms(lambda: pydicom_model_input(path, np, pydicom, cache), max(1, min(args.runs, 3)))
        except Exception as error:
            row["pydicom_error"] = str(error)[:200]
        try:
            out = os.path.join(work, "out.pgm")
            row["dcm2pnm_ms"] = median_ms(lambda: dcm2pnm(path, syntax, out), max(1, min(args.runs, 3)))
        except Exception as error:
            row["dcm2pnm_error"] = str(error)[:200]
        bt = row.get("bonetriage_ms")

        def cell(key):
            return f"{row[key]:.1f}" if key in row else "fails"

        def ratio(key):
            return f"x{row[key] / bt:.1f}" if bt and key in row else "-"
        print(f"{label[:54]:54} {row['syntax_name'][:24]:24} {size:>11} {cell('bonetriage_ms'):>10} {cell('pydicom_ms'):>9} "
              f"{cell('dcm2pnm_ms'):>9} {ratio('pydicom_ms'):>7} {ratio('dcm2pnm_ms'):>7}")
        rows.append(row)
    worker.close()
    print("\nper transfer syntax (sum over its files that BoneTriage and pydicom decode; ratio = peer / bonetriage;"
          " dcm2pnm over the files it decodes):")
    by_syntax = {}
    for row in rows:
        if all(k in row for k in ("bonetriage_ms", "pydicom_ms")):
            by_syntax.setdefault(row["syntax_name"], []).append(row)
    summary = []
    for name, group in sorted(by_syntax.items()):
        bt = sum(r["bonetriage_ms"] for r in group)
        pyd = sum(r["pydicom_ms"] for r in group)
        both = [r for r in group if "dcm2pnm_ms" in r]
        dj_ratio = sum(r["dcm2pnm_ms"] for r in both) / sum(r["bonetriage_ms"] for r in both) if both else None
        summary.append({"syntax": name, "files": len(group), "bonetriage_ms": bt, "pydicom_ms": pyd,
                        "pydicom_ratio": pyd / bt, "dcm2pnm_ratio": dj_ratio, "dcm2pnm_files": len(both)})
        dj_text = f"dcm2pnm x{dj_ratio:5.1f} ({len(both)} file(s))" if dj_ratio else "dcm2pnm cannot decode it"
        print(f"  {name:26} {len(group):2} file(s): bonetriage {bt:8.1f} ms, pydicom x{pyd / bt:5.1f}, {dj_text}")
    for row in rows:
        for key in ("bonetriage_error", "pydicom_error", "dcm2pnm_error"):
            if key in row:
                print(f"  note: {row['file']}: {key.split('_')[0]} {row[key]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "date": time.strftime("%Y-%m-%d"), "runs": args.runs, "files": rows, "syntaxes": summary}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
