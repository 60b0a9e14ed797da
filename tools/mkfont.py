#!/usr/bin/env python3
"""Turn a Linux console font (PSF1/PSF2, 8x16, with a Unicode table) into the raw 256x16-byte
table LHV draws with: entry N is the glyph for code point N (CP437 0xdb, the full block, at 0xdb)."""
import gzip
import struct
import sys

CP437_HIGH = {0xDB: 0x2588}


def load_psf(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    if data[:2] == b"\x36\x04":
        mode, charsize = data[2], data[3]
        count = 512 if mode & 1 else 256
        glyphs = [data[4 + i * charsize: 4 + (i + 1) * charsize] for i in range(count)]
        table, width, height, pos = {}, 8, charsize, 4 + count * charsize
        if mode & 2:
            for index in range(count):
                while pos + 1 < len(data):
                    (cp,) = struct.unpack_from("<H", data, pos)
                    pos += 2
                    if cp == 0xFFFF:
                        break
                    if cp != 0xFFFE:
                        table.setdefault(cp, index)
        return glyphs, table, width, height
    magic, _, hdr, flags, count, charsize, height, width = struct.unpack_from("<8I", data)
    if magic != 0x864AB572:
        raise SystemExit(f"{path}: not a PSF font")
    glyphs = [data[hdr + i * charsize: hdr + (i + 1) * charsize] for i in range(count)]
    table, pos = {}, hdr + count * charsize
    if flags & 1:
        for index in range(count):
            end = data.index(b"\xff", pos)
            for ch in data[pos:end].decode("utf-8", "replace"):
                table.setdefault(ord(ch), index)
            pos = end + 1
    return glyphs, table, width, height


def main():
    src, out = sys.argv[1], sys.argv[2]
    glyphs, table, width, height = load_psf(src)
    if width != 8 or height != 16:
        raise SystemExit(f"{src}: need an 8x16 font, got {width}x{height}")
    result = bytearray(256 * 16)
    for code in range(256):
        cp = CP437_HIGH.get(code, code if code < 0x7F else None)
        if cp is None:
            continue
        index = table.get(cp, cp if not table else None)
        if index is not None and index < len(glyphs):
            result[code * 16:(code + 1) * 16] = glyphs[index][:16]
    if code_missing := [c for c in range(0x20, 0x7F) if not any(result[c * 16:(c + 1) * 16]) and c != 0x20]:
        raise SystemExit(f"{src}: no glyph for {code_missing}")
    open(out, "wb").write(bytes(result))


if __name__ == "__main__":
    main()
