"""A UEFI framebuffer above 4 GiB (a 64-bit graphics BAR on recent laptops) must still be
drawn. selftest=highmap writes a marker at physical 4 GiB + 16 MiB through the same mapping
function the screen uses (identity map on amd64, a window below 4 GiB on i386); QEMU with 5 GiB
of RAM then shows the marker in physical memory."""

import pytest

from harness import images

from .conftest import DirectQemu, need_images


@pytest.mark.parametrize("arch", images.ARCHES)
def test_memory_above_4g_is_reachable(tmp_path, arch):
    need_images(iso=False)
    qemu = DirectQemu(tmp_path, arch, "selftest=highmap tests=vmx_lifecycle", memory="5G")
    dump = tmp_path / "high.bin"
    try:
        assert qemu.wait_serial("TEST selftest_highmap: GOOD"), qemu.serial.read_text()
        qemu.hmp('pmemsave 0x101000000 16 "%s"' % dump)
    finally:
        qemu.close()
    assert dump.read_bytes().startswith(b"LHV-HIGHMAP-OK"), dump.read_bytes()
