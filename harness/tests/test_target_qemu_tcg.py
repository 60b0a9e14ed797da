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


# ---- Which QEMU: --qemu / LHV_QEMU, and finding one whose TCG has x2APIC ----

def _fake_qemu(tmp_path, version, x2apic):
    """A stand-in QEMU: answers --version, and the x2APIC probe as a QEMU with or without it."""
    path = tmp_path / ("qemu-%s" % version)
    warn = "" if x2apic else "echo \"qemu: warning: %s [bit 21]\" >&2" % Q.TCG_NO_X2APIC
    path.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "QEMU emulator version %s"; exit 0; fi\n'
                    '%s\ncat >/dev/null\n' % (version, warn))
    path.chmod(0o755)
    return str(path)


def test_chosen_qemu_runs_by_its_absolute_path_and_names_the_runs(tmp_path, monkeypatch):
    fake = _fake_qemu(tmp_path, "9.9.1", x2apic=True)
    monkeypatch.chdir(tmp_path)
    spec = RunSpec(target="qemu-tcg", program=Path(fake).name, arch="amd64", elf="/x/lhv.elf")
    t = spec.target_obj()
    assert t.program == "qemu-9.9.1"            # a bare name stays a name (looked up on PATH)
    spec = RunSpec(target="qemu-tcg", program="./" + Path(fake).name, arch="amd64", elf="/x/lhv.elf")
    t = spec.target_obj()
    t.prepare(spec)
    assert t.program == fake and t.version() == "9.9.1"
    assert spec.name() == "qemu-tcg-9.9.1/amd64/bios-kernel"
    assert Q.qemu_command(spec, tmp_path, "/tmp/m", "tcg", t.program)[0] == fake
    # LHV_QEMU is the default when --qemu is not given.
    monkeypatch.setenv("LHV_QEMU", fake)
    assert targets.get("qemu-tcg").program == fake


def test_x2apic_probe_asks_qemu_itself(tmp_path, monkeypatch):
    with_it, without = _fake_qemu(tmp_path, "10.0.2", True), _fake_qemu(tmp_path, "7.2.9", False)
    assert Q.tcg_has_x2apic(with_it) == (True, "10.0.2")
    ok, why = Q.tcg_has_x2apic(without)
    assert not ok and "QEMU 7.2.9" in why and "no x2APIC under TCG" in why
    # The chosen QEMU first, then the unpacked backports one; every reason when neither has it.
    monkeypatch.setenv("LHV_QEMU", without)
    monkeypatch.setattr(Q, "BACKPORTS_QEMU", tmp_path / "none" / "qemu-system-x86_64")
    program, why = Q.qemu_with_x2apic()
    assert program is None and "7.2.9" in why and "fetch_qemu_backports.py" in why, why
    monkeypatch.setattr(Q, "BACKPORTS_QEMU", Path(with_it))
    assert Q.qemu_with_x2apic() == (with_it, "")


def test_debian_qemu_probe_matches_its_version():
    """The real probe on the machine's QEMU: x2APIC under TCG exactly from 8.1 on."""
    version = Q.qemu_version()
    if version is None:
        import pytest
        pytest.skip("qemu-system-x86_64 is not installed")
    major, minor = (int(v) for v in version.split(".")[:2])
    assert Q.tcg_has_x2apic(Q.QEMU)[0] == ((major, minor) >= (8, 1)), version
