#!/usr/bin/env python3
"""Four JPEG 2000 DX images made from the real DX radiographs in ../shared, for a receive/latency run.

Usage: make_j2k_dx_study.py SHARED_RADIOGRAPHS OUT_FOLDER   (needs pydicom + pylibjpeg-openjpeg: `make bench-decode`'s venv)

Writes OUT_FOLDER/{1..4}-*.dcm and prints their paths separated by commas (for receive_throughput.py --source),
all JPEG 2000 lossless (the archive encoding of DX; one storescu association proposes one JPEG 2000 syntax):
  1. DX_966_fixed_J2KR.dcm as it is (2000x2128, windowed, MONOCHROME1, encoded by Kakadu)
  2. DX_cat_deid-data.dcm re-encoded by OpenJPEG (3072x2614, windowed, MONOCHROME2)
  3. DX_966_fixed_J2KR.dcm re-encoded by OpenJPEG
  4. DX_cat_deid-data.dcm re-encoded by OpenJPEG with 512x512 tiles
DX_JPEG2KLossless_1s_1f_u_16_16.dcm (the third DX file) is left out: its window misses every pixel value,
so its model input needs the min-max window of the full image, which only a full decode gives (see the
README); `--with-min-max` puts it in place of the fourth image.
"""
import os, shutil, sys
import pydicom
from pydicom.uid import JPEG2000Lossless

args = [a for a in sys.argv[1:] if not a.startswith("--")]
if len(args) != 2:
    sys.exit(__doc__)
shared, out = args
os.makedirs(out, exist_ok=True)
paths = []

def keep(name, target):
    path = os.path.join(out, target)
    shutil.copyfile(os.path.join(shared, name), path)
    paths.append(path)

def reencode(name, uid, target, **kwargs):
    ds = pydicom.dcmread(os.path.join(shared, name))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.compress(uid, **kwargs)
    path = os.path.join(out, target)
    ds.save_as(path, enforce_file_format=True)
    paths.append(path)

keep("DX_966_fixed_J2KR.dcm", "1-DX_966-kakadu.dcm")
reencode("DX_cat_deid-data.dcm", JPEG2000Lossless, "2-DX_cat-openjpeg.dcm")
reencode("DX_966_fixed_J2KR.dcm", JPEG2000Lossless, "3-DX_966-openjpeg.dcm")
if "--with-min-max" in sys.argv:
    keep("DX_JPEG2KLossless_1s_1f_u_16_16.dcm", "4-DX_JPEG2KLossless-min-max.dcm")
else:
    reencode("DX_cat_deid-data.dcm", JPEG2000Lossless, "4-DX_cat-openjpeg-tiled.dcm", tile_size=[512, 512])
print(",".join(paths))
