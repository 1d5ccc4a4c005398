#!/usr/bin/env python3
"""Split a MURA-layout labels CSV into two halves by patient (never by image or study), with a fixed seed.

    tools/split_by_patient.py ../shared/data/MURA-v1.1/train_labeled_studies.csv OUTDIR [--seed 17]

Writes OUTDIR/calibration.csv and OUTDIR/evaluation.csv (MURA's 'folder,label' form) and a symbolic link
OUTDIR/MURA-v1.1 to the data, so that the CSVs' folders resolve next to them as `--labels` expects.
"""
import argparse, os, random

parser = argparse.ArgumentParser()
parser.add_argument("labels")
parser.add_argument("out")
parser.add_argument("--seed", type=int, default=17)
args = parser.parse_args()

rows = []
with open(args.labels) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        folder, label = line.rsplit(",", 1)
        if label not in ("0", "1"):
            continue
        parts = folder.rstrip("/").split("/")
        patient = next(p for p in parts if p.startswith("patient"))
        rows.append((folder, label, patient))
patients = sorted({r[2] for r in rows})
random.Random(args.seed).shuffle(patients)
first = set(patients[: len(patients) // 2])
os.makedirs(args.out, exist_ok=True)
data = os.path.dirname(os.path.abspath(args.labels))  # the MURA-v1.1 folder
link = os.path.join(args.out, os.path.basename(data))
if not os.path.islink(link):
    os.symlink(data, link)
for name, keep in (("calibration.csv", lambda p: p in first), ("evaluation.csv", lambda p: p not in first)):
    with open(os.path.join(args.out, name), "w") as f:
        f.write("path,label\n")
        for folder, label, patient in rows:
            if keep(patient):
                f.write(f"{folder},{label}\n")
    n = sum(1 for r in rows if keep(r[2]))
    a = sum(1 for r in rows if keep(r[2]) and r[1] == "1")
    print(f"{name}: {n} studies ({a} abnormal, {n - a} normal), {len(first) if name == 'calibration.csv' else len(patients) - len(first)} patients")
