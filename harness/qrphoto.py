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
