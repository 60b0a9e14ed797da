"""QR codes on LHV's final screen: decode a picture (a screenshot, a rendered VGA dump, a phone
photo) with Debian's zbar, and the picture helpers the tests use.

`python3 -m harness judge --photo <image>` decodes the QR and judges its text exactly as a
serial log is judged.
"""

import random
import shutil
import subprocess

ZBARIMG = "zbarimg"


def missing_tools():
    """What is missing to read QR codes here ('' when nothing)."""
    missing = []
    if shutil.which(ZBARIMG) is None:
        missing.append("zbarimg (apt-get install zbar-tools)")
    try:
        import PIL  # noqa: F401
    except ImportError:
        missing.append("PIL (apt-get install python3-pil)")
    return ", ".join(missing)


class DecodeError(Exception):
    """No QR code could be read from the picture."""


def decode(path):
    """The bytes of the QR code in the picture at path (the first one zbar finds)."""
    if shutil.which(ZBARIMG) is None:
        raise DecodeError("zbarimg is not installed (apt-get install zbar-tools)")
    r = subprocess.run([ZBARIMG, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", "-Sbinary", str(path)],
                       capture_output=True, timeout=60)
    if r.returncode != 0 or not r.stdout:
        raise DecodeError("no QR code found in %s (zbarimg exit %d)" % (path, r.returncode))
    return r.stdout  # with -Sbinary: the symbol's bytes as they are, nothing added


def render_modules(rows, scale=4, quiet=4):
    """A black-on-white picture of a symbol given as rows of '#' (dark) and '.' (light)."""
    from PIL import Image
    n = len(rows)
    img = Image.new("L", (n + 2 * quiet, n + 2 * quiet), 255)
    px = img.load()
    for y, row in enumerate(rows):
        for x, c in enumerate(row):
            if c == "#":
                px[x + quiet, y + quiet] = 0
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def degrade(img, seed=0, angle=3.0, shrink=0.8, noise=40):
    """What a phone makes of a screen: smaller, a little rotated, blurred, noisy."""
    from PIL import Image, ImageFilter
    rng = random.Random(seed)
    img = img.convert("L")
    img = img.resize((int(img.width * shrink), int(img.height * shrink)), Image.BILINEAR)
    img = img.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=255)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    px = img.load()
    for y in range(img.height):
        for x in range(img.width):
            px[x, y] = max(0, min(255, px[x, y] + rng.randint(-noise, noise)))
    return img


# The VGA text palette (the same one lhv/console/screen.c draws a framebuffer with).
VGA_PALETTE = [0x000000, 0x0000aa, 0x00aa00, 0x00aaaa, 0xaa0000, 0xaa00aa, 0xaa5500, 0xaaaaaa,
               0x555555, 0x5555ff, 0x55ff55, 0x55ffff, 0xff5555, 0xff55ff, 0xffff55, 0xffffff]
# Code page 437 block characters as VGA hardware draws them: (x0, y0, x1, y1) of the set part
# of an 8x16 cell. LHV draws its QR code and large letters with these.
CP437_BLOCKS = {0xdb: (0, 0, 8, 16), 0xdc: (0, 8, 8, 16), 0xdf: (0, 0, 8, 8), 0xdd: (0, 0, 4, 16),
                0xde: (4, 0, 8, 16)}


def render_vga(data, font=None, cols=80, rows=25):
    """A picture of a VGA text screen dump (character, attribute pairs), as a monitor shows it:
    block characters as CP437 draws them, other characters from the 8x16 font when given."""
    from PIL import Image
    img = Image.new("RGB", (cols * 8, rows * 16))
    px = img.load()
    for cell in range(min(len(data) // 2, cols * rows)):
        code, attr = data[2 * cell], data[2 * cell + 1]
        fg, bg = VGA_PALETTE[attr & 0xf], VGA_PALETTE[(attr >> 4) & 0xf]
        x0, y0 = (cell % cols) * 8, (cell // cols) * 16
        block = CP437_BLOCKS.get(code)
        for y in range(16):
            bits = font[code * 16 + y] if font and block is None else 0
            for x in range(8):
                on = (block[0] <= x < block[2] and block[1] <= y < block[3]) if block else bits & (0x80 >> x)
                rgb = fg if on else bg
                px[x0 + x, y0 + y] = (rgb >> 16, (rgb >> 8) & 0xff, rgb & 0xff)
    return img
