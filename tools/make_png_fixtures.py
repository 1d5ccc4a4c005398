#!/usr/bin/env python3
"""Write the small self-made PNG fixtures in Tests/Fixtures/png/ (standard library only).

One 24x16 test pattern (values 0..255, so no window stretches it) stored in every PNG colour type and
bit depth BoneTriage must read; each decodes to the same 8-bit gray or RGB pixels, which the Swift
tests check. Run: python3 tools/make_png_fixtures.py
"""
import os
import struct
import zlib

W, H = 24, 16
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "png")


def gray(x, y):
    return (x * 11 + y * 17) % 256 if (x, y) not in ((0, 0), (1, 0)) else (0 if x == 0 else 255)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(name, color_type, depth, rows, extra=b""):
    raw = b"".join(b"\x00" + r for r in rows)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, depth, color_type, 0, 0, 0))
    data += extra + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    return data


def main():
    os.makedirs(OUT, exist_ok=True)
    g = [[gray(x, y) for x in range(W)] for y in range(H)]
    png("gray8.png", 0, 8, [bytes(r) for r in g])
    # 16-bit: v * 257 scales back to exactly v.
    png("gray16.png", 0, 16, [b"".join(struct.pack(">H", v * 257) for v in r) for r in g])
    png("gray_alpha8.png", 4, 8, [bytes(b for v in r for b in (v, 200)) for r in g])
    rgb = [[(v, (v + 85) % 256, (v + 170) % 256) for v in r] for r in g]
    png("rgb8.png", 2, 8, [bytes(c for p in r for c in p) for r in rgb])
    png("rgba8.png", 6, 8, [bytes(c for p in r for c in (*p, 128)) for r in rgb])
    # Palette of the 256 grays: index v is gray v.
    palette = chunk(b"PLTE", bytes(c for v in range(256) for c in (v, v, v)))
    png("palette8.png", 3, 8, [bytes(r) for r in g], extra=palette)
    good = open(os.path.join(OUT, "gray8.png"), "rb").read()
    with open(os.path.join(OUT, "truncated.png"), "wb") as f:
        f.write(good[: len(good) // 2])
    bad = bytearray(good)
    bad[-20] ^= 0xFF  # inside IDAT: CRC and zlib stream broken
    with open(os.path.join(OUT, "corrupt_idat.png"), "wb") as f:
        f.write(bytes(bad))
    with open(os.path.join(OUT, "not_a_png.png"), "wb") as f:
        f.write(b"GIF89a this is not a PNG")


if __name__ == "__main__":
    main()
