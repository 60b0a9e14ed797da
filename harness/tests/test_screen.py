"""Screen decoders (VGA text, framebuffer via the font) and the screen check."""

import random

import pytest

from harness import images
from harness import screen as S

FINAL = [
    "LHV 0.1 arch=amd64 boot=uefi cpus=2 opt=0x3e",
    "TEST vmx_lifecycle: GOOD",
    "TEST ept_basic: BAD (EPT violation, #GP)",
    "LHV SUMMARY: 1 good, 1 bad, 0 skipped, 0 error",
    "LHV RESULT: BAD",
    "FAILED ept_basic: BAD",
]


def synthetic_font(seed=1):
    """256 distinct glyphs; 0x20 blank, 0xdb a full block like the banner's."""
    rnd = random.Random(seed)
    glyphs = []
    seen = set()
    for c in range(256):
        if c in (0, 0x20, 0xff):
            g = bytes(16)
        elif c == 0xdb:
            g = b"\xff" * 16
        else:
            while True:
                g = bytes(rnd.randrange(256) for _ in range(16))
                if g not in seen and any(g):
                    break
        seen.add(g)
        glyphs.append(g)
    return b"".join(glyphs)


def fonts():
    out = [pytest.param(synthetic_font(), id="synthetic")]
    real = images.font_path()
    if real.exists():
        out.append(pytest.param(real.read_bytes(), id="images-font8x16"))
    return out


def vga_buffer(rows, attr=0x07):
    buf = bytearray(b" \x07" * (80 * 25))
    for r, text in enumerate(rows):
        for c, ch in enumerate(text):
            buf[(r * 80 + c) * 2] = ord(ch)
            buf[(r * 80 + c) * 2 + 1] = attr
    return bytes(buf)


def test_vga_text_decode():
    buf = bytearray(vga_buffer(FINAL, 0x1f))
    buf[(20 * 80) * 2:(20 * 80 + 10) * 2] = b"\xdb\x0a" * 10      # block-char banner
    rows = S.decode_vga_text(bytes(buf))
    assert len(rows) == 25
    assert rows[:len(FINAL)] == FINAL
    assert rows[20] == ""
    facts = S.screen_facts(rows)
    assert (facts["result"], facts["failed"], facts["more"]) == ("BAD", {"ept_basic": "BAD"}, 0)


def test_shortened_failed_list():
    """A screen too small for every failure lists a prefix and '... and N more'."""
    serial = {"a": "BAD", "b": "ERROR", "c": "TIMEOUT", "d": "GOOD"}
    rows = ["LHV RESULT: BAD", "FAILED a: BAD", "... and 2 more (see serial log)"]
    ok, reason, _ = S.check(rows, "BAD", serial)
    assert ok, reason
    wrong_count = ["LHV RESULT: BAD", "FAILED a: BAD", "... and 1 more (see serial log)"]
    assert not S.check(wrong_count, "BAD", serial)[0]
    wrong_item = ["LHV RESULT: BAD", "FAILED d: BAD", "... and 2 more (see serial log)"]
    assert not S.check(wrong_item, "BAD", serial)[0]


@pytest.mark.parametrize("font", fonts())
def test_framebuffer_decode(font):
    w, h, pix = S.render_text(FINAL, font, w=640, h=480, fg=(0xaa, 0xff, 0xaa), bg=(0, 0, 0x20))
    # A large banner drawn with filled blocks, in another colour, below the text.
    pix = bytearray(pix)
    for y in range(300, 380):
        for x in range(40, 400):
            if (x // 24) % 2 == 0:
                pix[(y * w + x) * 3:(y * w + x) * 3 + 3] = b"\x20\xff\x20"
    ppm = S.write_ppm(w, h, pix)
    w2, h2, pix2 = S.parse_ppm(ppm)
    rows = S.decode_framebuffer(w2, h2, pix2, S.load_font(font))
    assert len(rows) == h // 16
    assert rows[:len(FINAL)] == FINAL
    assert all(not r.strip() or set(r) <= {" ", "\x7f"} or r in FINAL for r in rows)
    ok, why, facts = S.check(rows, "BAD", {"vmx_lifecycle": "GOOD", "ept_basic": "BAD"})
    assert ok, why


def test_ppm_header_with_comment_and_errors():
    w, h, pix = 2, 1, b"\x00\x01\x02\x03\x04\x05"
    assert S.parse_ppm(b"P6\n# qemu\n2 1\n255\n" + pix) == (w, h, pix)
    with pytest.raises(ValueError):
        S.parse_ppm(b"P3\n2 1\n255\n0 0 0 0 0 0")
    with pytest.raises(ValueError):
        S.parse_ppm(b"P6\n2 1\n255\n\x00")
    with pytest.raises(ValueError):
        S.load_font(b"\0" * 100)


@pytest.mark.parametrize("rows,result,tests,ok,why", [
    (FINAL, "BAD", {"ept_basic": "BAD", "vmx_lifecycle": "GOOD"}, True, ""),
    (FINAL, "GOOD", {"ept_basic": "BAD"}, False, "screen says RESULT BAD, serial says GOOD"),
    (FINAL[:4], "BAD", {"ept_basic": "BAD"}, False, "no 'LHV RESULT:' line"),
    (FINAL[:5], "BAD", {"ept_basic": "BAD"}, False, "not shown as FAILED on screen: ept_basic: BAD"),
    (FINAL, "BAD", {"ept_basic": "TIMEOUT"}, False, "not shown as FAILED"),
    (FINAL + ["FAILED msr_lists: ERROR"], "BAD", {"ept_basic": "BAD", "msr_lists": "GOOD"},
     False, "shown as FAILED on screen but not on serial: msr_lists: ERROR"),
    (["LHV RESULT: SKIP"], "SKIP", {"a": "SKIP", "b": "GOOD"}, True, ""),
    # The final screen's other rows (lhv/report.c) are checked too.
    (["LHV RESULT: GOOD", "GOOD b", "SKIP a: no MTF"], "GOOD", {"a": "SKIP", "b": "GOOD"}, True, ""),
    (["LHV RESULT: GOOD", "GOOD a"], "GOOD", {"a": "SKIP", "b": "GOOD"}, False, "screen says GOOD a"),
    (["LHV RESULT: GOOD", "2 skipped: VMX not supp"], "GOOD", {"a": "SKIP", "c": "SKIP", "b": "GOOD"}, True, ""),
    (["LHV RESULT: GOOD", "3 skipped: VMX not supp"], "GOOD", {"a": "SKIP", "c": "SKIP", "b": "GOOD"}, False,
     "screen says 3 skipped"),
    # Failures come first: a GOOD row shown while a failure is left out is caught.
    (["LHV RESULT: BAD", "GOOD b", "... and 1 more"], "BAD", {"a": "BAD", "b": "GOOD", "c": "GOOD"}, False,
     "not shown as FAILED"),
])
def test_screen_check(rows, result, tests, ok, why):
    got_ok, got_why, _ = S.check(rows, result, tests)
    assert got_ok is ok
    assert why in got_why


@pytest.mark.parametrize("w,h,scale", [(1920, 1080, 2), (2560, 1600, 2), (2880, 1800, 3), (1280, 800, 1)])
@pytest.mark.parametrize("font", fonts())
def test_framebuffer_decode_detects_scale(font, w, h, scale):
    """Panels of 1000 lines or more get the font doubled or tripled (lhv/console/screen.c):
    the decoder finds the scale by itself, also when it is not the one the height implies."""
    assert S.lhv_scale(h) == scale
    for drawn in {scale, 1}:
        _, _, pix = S.render_text(FINAL, font, w=w, h=h, fg=(0xaa, 0xff, 0xaa), bg=(0, 0, 0x20), scale=drawn)
        rows = S.decode_framebuffer(w, h, pix, S.load_font(font))
        assert len(rows) == h // (16 * drawn)
        assert rows[:len(FINAL)] == FINAL
        assert S.check(rows, "BAD", {"vmx_lifecycle": "GOOD", "ept_basic": "BAD"})[0]
