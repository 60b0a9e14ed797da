"""The qemu-tcg target's command lines (its boots are in test_integration.py)."""

from pathlib import Path

from harness import targets
from harness.runner import RunSpec
from harness.targets import qemu_tcg as Q


def _cmd(tmp_path, **kw):
    spec = RunSpec(target="qemu-tcg", arch="amd64", elf="/x/lhv.elf", iso="/x/lhv.iso", **kw)
    targets.get("qemu-tcg").prepare(spec)
    return spec, Q.qemu_command(spec, tmp_path, "/tmp/m", "tcg")


def test_bios_kernel_default(tmp_path):
    spec, cmd = _cmd(tmp_path, extra="tests=ept*")
    assert cmd[cmd.index("-accel") + 1] == "tcg" and cmd[cmd.index("-cpu") + 1] == "max"
    assert cmd[cmd.index("-kernel") + 1] == "/x/lhv.elf"
    assert cmd[cmd.index("-append") + 1] == "tests=ept*"
    assert spec.cpus == 2 and spec.name() == "qemu-tcg/amd64/bios-kernel [tests=ept*]"


def test_uefi_boots_the_iso(tmp_path):
    spec, cmd = _cmd(tmp_path, firmware="uefi")
    assert spec.boot == "cdrom" and "-kernel" not in cmd
    assert cmd[cmd.index("-bios") + 1] == Q.OVMF and cmd[cmd.index("-cdrom") + 1] == "/x/lhv.iso"
    assert spec.name() == "qemu-tcg/amd64/uefi"


def test_disk_is_the_iso_as_a_usb_stick(tmp_path):
    spec, cmd = _cmd(tmp_path, boot="disk", cpus=4)
    drive = cmd[cmd.index("-drive") + 1]
    assert drive.startswith("file=/x/lhv.iso,format=raw") and "media=disk" in drive
    assert cmd[cmd.index("-smp") + 1] == "4"
    assert spec.label() == "qemu-tcg-amd64-bios-disk-x4" and Path(spec.iso).name == "lhv.iso"
