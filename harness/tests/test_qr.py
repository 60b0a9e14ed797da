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



@pytest.fixture(scope="module")
def qr_host(tmp_path_factory):
    from .conftest import build_host_tool
    return build_host_tool(tmp_path_factory, "qr_host", "lhv/console/qr.c")


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


# ---- The QR code on the real final screen, read back and judged like serial ----

def _serial_verdicts(rec):
    return {s["id"]: s["verdict"] for s in rec["scenarios"]}


def test_judge_photo_of_uefi_screenshot_equals_serial(tmp_path):
    """QEMU UEFI (framebuffer): the QR carries the complete result, and `judge --photo` on the
    screenshot gives exactly the serial log's verdicts; a degraded copy (phone photo) too."""
    from harness.runner import RunSpec, judge_photo, run
    from .conftest import need_images
    need_images()
    need_zbar()
    rec = run(RunSpec(target="qemu-tcg", arch="amd64", firmware="uefi"))
    shot = Path(rec["logs"]["screen"])
    photo = judge_photo(shot, arch="amd64")
    assert photo["verdict"] == rec["verdict"] and not photo["problems"], photo
    assert _serial_verdicts(photo) == _serial_verdicts(rec)
    serial_lines = Path(rec["logs"]["serial"]).read_text(errors="replace").replace("\r", "").splitlines()
    banner = next(line for line in serial_lines if line.startswith("LHV ") and " arch=" in line)
    assert photo["qr_text"].splitlines()[0] == banner
    for line in photo["qr_text"].splitlines():  # the complete result: serial's own lines
        assert line in serial_lines, line
    from PIL import Image
    degraded = tmp_path / "phone.png"
    # A phone photo has more pixels than the screen: 3x, then rotated, blurred and noisy.
    qrphoto.degrade(Image.open(shot), seed=3, angle=2.0, shrink=3.0, noise=30).save(degraded)
    assert qrphoto.decode(degraded) == photo["qr_text"].encode()


def test_judge_photo_of_bochs_vga_dump(tmp_path):
    """Bochs (VGA text): the dump rendered as a monitor shows it; the QR (cut to fit 80x25) gives
    the serial RESULT, and every TEST line it keeps has the serial verdict."""
    from harness import images
    from harness.runner import RunSpec, judge_photo, run
    from .conftest import need_images
    need_images()
    need_zbar()
    rec = run(RunSpec(target="bochs", arch="i386", cpu_model="tigerlake", cpus=2))
    picture = tmp_path / "vga.png"
    qrphoto.render_vga(Path(rec["logs"]["screen"]).read_bytes(),
                       images.font_path().read_bytes()).save(picture)
    photo = judge_photo(picture, arch="i386")
    assert not photo["problems"], photo
    assert photo["verdict"] == rec["image_result"], (photo, rec["image_result"])
    serial = _serial_verdicts(rec)
    assert photo["scenarios"] and all(serial[s["id"]] == s["verdict"] for s in photo["scenarios"]), photo


def test_judge_photo_catches_a_changed_verdict_or_id(tmp_path):
    """The QR text is judged like serial: a verdict or id changed in it is caught."""
    from harness.runner import judge_file
    from .test_judge import GOOD3, log
    text = log(GOOD3 + [("mtf", "SKIP", "no MTF")], "auto")
    elf = "/nonexistent.elf"  # no registry: the text alone must add up
    good = tmp_path / "qr.txt"
    good.write_text(text)
    assert judge_file(good, elf=elf)["verdict"] == "GOOD"
    changed = tmp_path / "changed.txt"
    changed.write_text(text.replace("TEST vmx_lifecycle: GOOD", "TEST vmx_lifecycle: BAD (x, y)"))
    assert judge_file(changed, elf=elf)["verdict"] == "ERROR"
    # With the image's registry, an id changed to one the image does not have is caught.
    from .conftest import need_images
    need_images()
    renamed = tmp_path / "renamed.txt"
    renamed.write_text(text.replace("TEST mtf: SKIP", "TEST mtf2: SKIP"))
    assert "not a scenario" in judge_file(renamed)["reason"]
    cut = "LHV QR CUT\nTEST ept_basic: BAD (...)\nLHV SUMMARY: 3 good, 1 bad, 0 skipped, 0 error\nLHV RESULT: BAD\n"
    p = tmp_path / "cut.txt"
    p.write_text(cut)
    assert judge_file(p, qr_cut=True)["verdict"] == "BAD"
    p.write_text(cut.replace("RESULT: BAD", "RESULT: GOOD"))
    assert judge_file(p, qr_cut=True)["verdict"] == "ERROR"
    p.write_text(cut.replace("1 bad", "0 bad").replace("3 good", "4 good"))
    assert judge_file(p, qr_cut=True)["verdict"] == "ERROR"
