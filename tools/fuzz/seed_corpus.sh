#!/usr/bin/env bash
# Seeds the fuzzing corpus with small DICOM files: self-made ones (DCMTK's own encoders) and, where
# ../shared is present, the small real and broken files. Nothing here is committed.
set -euo pipefail
out="$1"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/p.bmp" <<'PY'
import struct, sys
w, h = 20, 12
px = bytes(((x * 13 + y * 7) % 256) for y in range(h) for x in range(w))
row = (w + 3) // 4 * 4
pal = b"".join(bytes([i, i, i, 0]) for i in range(256))
data = b"".join(px[y * w:(y + 1) * w] + b"\0" * (row - w) for y in reversed(range(h)))
off = 14 + 40 + 1024
open(sys.argv[1], "wb").write(b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off)
    + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 0, len(data), 2835, 2835, 256, 0) + pal + data)
PY
img2dcm -i BMP "$tmp/p.bmp" "$out/native.dcm"
dcmcjpeg +e1 "$out/native.dcm" "$out/jpeg-lossless.dcm"
dcmcjpeg "$out/native.dcm" "$out/jpeg-baseline.dcm"
dcmcjpls "$out/native.dcm" "$out/jpeg-ls.dcm"
dcmcrle "$out/native.dcm" "$out/rle.dcm"
dcmconv +te "$out/native.dcm" "$out/big-endian.dcm"
dcmconv +ti "$out/native.dcm" "$out/implicit.dcm"
shared="$(dirname "$0")/../../../shared/data/dicom"
if [ -d "$shared" ]; then
  find "$shared" -name '*.dcm' -size -64k -exec cp {} "$out/" \;
fi
echo "corpus: $(ls "$out" | wc -l) files in $out"
