"""The image's QR encoder (lhv/console/qr.c), built for the host and read back with zbar.

Every version from 1 to 40 and both error-correction levels the encoder uses are decoded by
an independent reader (zbarimg, Debian's zbar-tools) from a rendered picture, also after the
picture was degraded the way a phone photo of a laptop screen is (scaled, rotated, noisy).
"""

import random
import subprocess
from pathlib import Path

import pytest

from harness import qrphoto

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def qr_host(tmp_path_factory):
    exe = tmp_path_factory.mktemp("qr") / "qr_host"
    subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(REPO / "lhv"),
                    "-o", str(exe), str(REPO / "harness/tests/host/qr_host.c"),
                    str(REPO / "lhv/console/qr.c")], check=True)
    return exe


def encode(qr_host, text, max_version=40):
    r = subprocess.run([str(qr_host), str(max_version)], input=text, capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().split()


def need_zbar():
    missing = qrphoto.missing_tools()
    if missing:
        pytest.fail("QR tools missing: %s (tools/setup.sh installs them)" % missing)


# Sizes chosen to land on version boundaries: 1 (v1), 17/18 (v1-M/v2), 100, 300, 1000, the
# largest level-M symbol, the largest level-L symbol (2953 bytes, version 40).
SIZES = [1, 14, 15, 100, 300, 1000, 2331, 2332, 2953]


@pytest.mark.parametrize("size", SIZES)
def test_encoder_round_trip(qr_host, size, tmp_path):
    need_zbar()
    rng = random.Random(size)
    text = "".join(rng.choice("TEST abc: GOOD(BAD)=0x1f,\n") for _ in range(size)).encode()
    rows = encode(qr_host, text)
    assert len(rows) == len(rows[0]) and (len(rows) - 17) % 4 == 0
    picture = tmp_path / "qr.png"
    qrphoto.render_modules(rows, scale=4).save(picture)
    assert qrphoto.decode(picture) == text


def test_too_long_text_is_refused(qr_host):
    r = subprocess.run([str(qr_host), "40"], input=b"x" * 2954, capture_output=True)
    assert r.returncode == 1 and b"does not fit" in r.stderr
    r = subprocess.run([str(qr_host), "7"], input=b"x" * 155, capture_output=True)
    assert r.returncode == 1


def test_degraded_photo_still_decodes(qr_host, tmp_path):
    """Scaled down, rotated a few degrees, blurred and with noise, as a phone photo would be."""
    need_zbar()
    text = ("LHV RESULT: BAD\n" + "TEST scenario_%02d: GOOD\n" * 40 % tuple(range(40))).encode()
    rows = encode(qr_host, text)
    picture = tmp_path / "photo.png"
    qrphoto.degrade(qrphoto.render_modules(rows, scale=5), seed=1).save(picture)
    assert qrphoto.decode(picture) == text
