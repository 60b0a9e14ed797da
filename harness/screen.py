"""Read back what the image put on the screen, and check it against serial.

VGA text: 80x25 cells of (character, attribute) bytes from 0xb8000.
UEFI framebuffer: a PPM screendump; the image draws text in 8x16 cells from
pixel (0,0) with images/font8x16.bin (256 glyphs x 16 bytes, MSB leftmost),
each font pixel a k x k block (k = height / 540 from 1000 lines, else 1),
light foreground on a dark background.  Cells are decoded by thresholding and
looking the 16-byte bitmap up among the glyphs; anything else (the large
banner drawn with filled blocks, the heartbeat) decodes as a space.
"""

import re

from .verdicts import FAILED_VERDICTS

VGA_COLS, VGA_ROWS = 80, 25
CELL_W, CELL_H = 8, 16

RE_SCREEN_RESULT = re.compile(r"LHV RESULT: (GOOD|BAD|SKIP|ERROR|CRASH)\b")
RE_SCREEN_FAILED = re.compile(r"FAILED ([a-z0-9_]+): (BAD|ERROR|TIMEOUT)\b")
# When the failed list does not fit, the image's last row says how many it left out.
RE_SCREEN_MORE = re.compile(r"\.\.\. and (\d+) more")
# The final screen's other rows (lhv/report.c): "GOOD <id>", "SKIP <id>: <reason>",
# "<n> skipped: <reason>" (skips sharing a reason), each cut at the screen's width.
RE_SCREEN_GOOD = re.compile(r"^GOOD ([a-z0-9_]+)\s*$")
RE_SCREEN_SKIP = re.compile(r"^SKIP ([a-z0-9_]+): (.*?)\s*$")
RE_SCREEN_SKIPPED = re.compile(r"^(\d+) skipped: (.*?)\s*$")


def _printable(code):
    return chr(code) if 0x20 <= code < 0x7f else " "


def decode_vga_text(data, cols=VGA_COLS, rows=VGA_ROWS):
    """(char, attr) byte pairs -> list of text rows (right-stripped)."""
    out = []
    for r in range(rows):
        row = data[r * cols * 2:(r + 1) * cols * 2]
        out.append("".join(_printable(c) for c in row[0::2]).rstrip())
    return out


def parse_ppm(data):
    """Binary PPM (P6, maxval < 256) -> (width, height, rgb bytes)."""
    pos = 0
    fields = []
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] != b"\n":
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError("truncated PPM header")
        fields.append(data[start:pos])
    if fields[0] != b"P6":
        raise ValueError("not a binary PPM (P6) file")
    w, h, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    if maxval > 255:
        raise ValueError("16-bit PPM not supported")
    pos += 1                                   # the single whitespace after maxval
    pix = data[pos:pos + w * h * 3]
    if len(pix) != w * h * 3:
        raise ValueError("truncated PPM data")
    return w, h, pix


def write_ppm(w, h, pix):
    return b"P6\n%d %d\n255\n" % (w, h) + bytes(pix)


def write_png(w, h, pix):
    """RGB bytes -> PNG file contents (for people looking at a kept screen)."""
    import struct
    import zlib
    raw = b"".join(b"\0" + pix[y * w * 3:(y + 1) * w * 3] for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + \
            struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def load_font(path_or_bytes):
    data = path_or_bytes
    if not isinstance(data, (bytes, bytearray)):
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    if len(data) != 256 * CELL_H:
        raise ValueError("font must be 256 glyphs x 16 bytes, got %d bytes" % len(data))
    return bytes(data)


def glyph_table(font):
    """bitmap (16 bytes) -> character; printable ASCII wins over other codes."""
    table = {}
    order = list(range(0x20, 0x7f)) + [c for c in range(256) if not 0x20 <= c < 0x7f]
    for code in order:
        g = font[code * CELL_H:(code + 1) * CELL_H]
        table.setdefault(g, _printable(code))
    return table


_THRESH = bytes(1 if i >= 128 else 0 for i in range(256))


def _bitplane(w, h, pix):
    """1 byte per pixel: 1 where any channel is bright."""
    n = w * h
    acc = 0
    for c in range(3):
        acc |= int.from_bytes(pix[c::3].translate(_THRESH), "big")
    return acc.to_bytes(n, "big")


def lhv_scale(h):
    """The font scale lhv/console/screen.c draws with: 1 below 1000 lines, then height / 540."""
    return h // 540 if h >= 1000 else 1


def _decode_scaled(w, h, plane, table, k):
    """Text cells of (8k)x(16k) pixels, each font pixel read at the centre of its k x k block.
    Returns (rows, number of non-blank cells that are a glyph of the font)."""
    to01 = bytes.maketrans(b"\x00\x01", b"01")
    cw, ch = CELL_W * k, CELL_H * k
    cols, rows = w // cw, h // ch
    centre = k // 2
    out = []
    known = 0
    for r in range(rows):
        # the sampled pixel rows of this text row, one pixel per font column, as '0'/'1'
        lines = []
        for y in range(CELL_H):
            start = (r * ch + y * k + centre) * w + centre
            lines.append(plane[start:start + cols * cw:k].translate(to01))
        chars = []
        for c in range(cols):
            x = c * CELL_W
            bitmap = bytes(int(ln[x:x + CELL_W], 2) for ln in lines)
            char = table.get(bitmap, " ")
            known += char != " "
            chars.append(char)
        out.append("".join(chars).rstrip())
    return out, known


def decode_framebuffer(w, h, pix, font, scale=None):
    """Decode text cells from an RGB image drawn with `font`, each font pixel drawn as a
    scale x scale block (LHV doubles or triples the font on panels of 1000 lines or more).
    scale=None detects it: the scale LHV would use for this height is tried first, then the
    others up to 4; the one that reads the most glyphs wins."""
    table = glyph_table(font)
    plane = _bitplane(w, h, pix)
    if scale:
        return _decode_scaled(w, h, plane, table, scale)[0]
    best = None
    for k in [lhv_scale(h)] + [k for k in range(1, 5) if k != lhv_scale(h)]:
        if w < CELL_W * k or h < CELL_H * k:
            continue
        rows, known = _decode_scaled(w, h, plane, table, k)
        if best is None or known > best[1]:
            best = (rows, known)
    return best[0] if best else []


def render_text(rows, font, w=None, h=None, fg=(0xc0, 0xc0, 0xc0), bg=(0, 0, 0), scale=1):
    """Render text rows into an RGB image with `font`, each font pixel a scale x scale block
    (used by the tests)."""
    cols = max((len(r) for r in rows), default=0)
    k = scale
    w = w or cols * CELL_W * k
    h = h or len(rows) * CELL_H * k
    pix = bytearray(bytes(bg) * (w * h))
    fgb = bytes(fg) * k
    for r, text in enumerate(rows):
        for c, ch in enumerate(text):
            g = font[ord(ch) * CELL_H:(ord(ch) + 1) * CELL_H]
            for y in range(CELL_H):
                bits = g[y]
                for x in range(CELL_W):
                    if bits & (0x80 >> x):
                        for dy in range(k):
                            off = (((r * CELL_H + y) * k + dy) * w + (c * CELL_W + x) * k) * 3
                            pix[off:off + 3 * k] = fgb
    return w, h, bytes(pix)


def screen_facts(rows):
    """What the screen says: last RESULT verdict, the FAILED set, the "... and N more" count,
    and the final screen's GOOD / SKIP / grouped-skip rows."""
    facts = {"result": None, "failed": {}, "more": 0, "good": [], "skip": {}, "skipped": []}
    for row in rows:
        for m in RE_SCREEN_RESULT.finditer(row):
            facts["result"] = m.group(1)
        for m in RE_SCREEN_FAILED.finditer(row):
            facts["failed"][m.group(1)] = m.group(2)
        for m in RE_SCREEN_MORE.finditer(row):
            facts["more"] = int(m.group(1))
        line = row.strip()
        m = RE_SCREEN_GOOD.match(line)
        if m:
            facts["good"].append(m.group(1))
        m = RE_SCREEN_SKIP.match(line)
        if m:
            facts["skip"][m.group(1)] = m.group(2)
        m = RE_SCREEN_SKIPPED.match(line)
        if m:
            facts["skipped"].append((int(m.group(1)), m.group(2)))
    return facts


def _reason_shown(shown, reason):
    """A reason on the screen is the serial one, cut at the screen's width."""
    return bool(shown) and (reason or "").startswith(shown.rstrip())


def _check_other_rows(facts, serial_tests, serial_reasons, problems):
    for sid in facts["good"]:
        if serial_tests.get(sid) != "GOOD":
            problems.append("screen says GOOD %s, serial says %s" % (sid, serial_tests.get(sid)))
    for sid, shown in facts["skip"].items():
        if serial_tests.get(sid) != "SKIP" or (serial_reasons and not _reason_shown(shown, serial_reasons.get(sid))):
            problems.append("screen says SKIP %s: %s; serial says %s" % (sid, shown, serial_tests.get(sid)))
    for count, shown in facts["skipped"]:
        alike = [sid for sid, v in serial_tests.items() if v == "SKIP"
                 and (not serial_reasons or _reason_shown(shown, serial_reasons.get(sid)))]
        if len(alike) != count:
            problems.append("screen says %d skipped: %s; serial has %d such skips" % (count, shown, len(alike)))


def check(rows, serial_result, serial_tests, serial_reasons=None):
    """Compare the screen with serial.

    serial_tests: {id: verdict}; serial_reasons: {id: reason} (optional).
    Returns (ok, reason, facts dict).
    """
    facts = screen_facts(rows)
    result, failed, more = facts["result"], facts["failed"], facts["more"]
    want = {sid: v for sid, v in serial_tests.items() if v in FAILED_VERDICTS}
    problems = []
    if result is None:
        problems.append("no 'LHV RESULT:' line on the screen")
    elif result != serial_result:
        problems.append("screen says RESULT %s, serial says %s" % (result, serial_result))
    # Failures come first: once a GOOD or SKIP row is shown, every failure must be shown.
    others_shown = facts["good"] or facts["skip"] or facts["skipped"]
    if more and not others_shown:
        # A shortened list: what is shown must be true, and shown + left out covers all failures.
        if not set(failed.items()) <= set(want.items()) or len(failed) + more < len(want):
            problems.append("screen lists %d FAILED and %d more, serial has %d failures (%s)"
                            % (len(failed), more, len(want), ", ".join(sorted(want))))
    elif failed != want:
        extra = sorted(set(failed.items()) - set(want.items()))
        missing = sorted(set(want.items()) - set(failed.items()))
        if missing:
            problems.append("not shown as FAILED on screen: %s"
                            % ", ".join("%s: %s" % m for m in missing))
        if extra:
            problems.append("shown as FAILED on screen but not on serial: %s"
                            % ", ".join("%s: %s" % e for e in extra))
    _check_other_rows(facts, serial_tests, serial_reasons, problems)
    return (not problems), "; ".join(problems), facts


def read_rows(path, kind, font=None):
    """Decode a saved screen: kind 'vga' (raw text memory) or 'ppm'."""
    with open(path, "rb") as f:
        data = f.read()
    if kind == "vga":
        return decode_vga_text(data)
    if kind == "ppm":
        if font is None:
            raise ValueError("a font is needed to decode a framebuffer dump")
        return decode_framebuffer(*parse_ppm(data), font)
    raise ValueError("unknown screen kind %r" % kind)
