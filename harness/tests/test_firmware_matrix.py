"""What the firmware of real laptops hands over, imitated under QEMU TCG (issue 8, item 3).

Each case boots the image with one firmware difference and checks that it boots, reports
(every selected scenario SKIPs under TCG: no VMX) and that its screen, and where there is
one the QR code, says what serial says:

- UEFI without legacy VGA, a bochs-display GOP of 1280x800, 1920x1080 and 2560x1600 (the
  font drawn once, twice, twice larger: the screen decoder finds the scale); the run
  directory keeps screen.png of each;
- more than 4 GiB of RAM (-m 6G);
- no serial port at all (-serial none): the run ends on the screen's RESULT line and is
  judged from the final screen's QR code, as `judge --photo` judges a photo;
- no PIT and no HPET (-machine pit=off,hpet=off): the TSC and the LAPIC timer are measured
  with the ACPI PM timer (the LHV TSC line says clock=acpi_pm);
- 32 CPUs, and 64 CPUs with sparse APIC IDs (4 sockets of 20 cores: IDs 0-19, 32-51, 64-83,
  96-99, and 16 possible CPUs that are not present, listed disabled in the MADT).

x2APIC needs a CPU with one, which QEMU 7.2's TCG is not ("TCG doesn't support requested
feature: CPUID.01H:ECX.x2apic"): under TCG, apic=x2apic only says so (a NOTE, xAPIC used);
x2APIC mode at hand-off (apic=x2apic: every CPU in x2APIC mode before LHV's own start-up
touches the APIC) runs on Bochs (tigerlake has x2APIC), with VMX and the APs started through
the x2APIC ICR. MADT x2APIC (type 9) entries come from a firmware only for APIC IDs of 255
and more, which QEMU refuses under TCG; the MADT walk (lhv/arch/madt.c) is tested on the host
with such tables (harness/tests/host/madt_host.c).

A small tests= selection keeps each boot short: the firmware, not the scenarios, is tested.
"""

import struct
import subprocess
from pathlib import Path

import pytest

from harness import images, qrphoto
from harness import verdicts as V
from harness.logparse import parse_log
from harness.runner import RunSpec, run

from .conftest import need_images, show

FEW_TESTS = "vmx_lifecycle,ept_basic"


def bochs_display(w, h):
    return ("-vga", "none", "-device", "bochs-display,xres=%d,yres=%d" % (w, h))


NO_PIT = ("-machine", "pit=off,hpet=off")

# id: (arch, RunSpec fields)
CASES = {
    "gop-1280x800-amd64": ("amd64", dict(firmware="uefi", qemu_args=bochs_display(1280, 800))),
    "gop-1920x1080-amd64": ("amd64", dict(firmware="uefi", qemu_args=bochs_display(1920, 1080))),
    "gop-2560x1600-amd64": ("amd64", dict(firmware="uefi", qemu_args=bochs_display(2560, 1600))),
    "gop-2560x1600-i386": ("i386", dict(firmware="uefi", qemu_args=bochs_display(2560, 1600))),
    "mem6g-amd64": ("amd64", dict(memory="6G")),
    "mem6g-i386": ("i386", dict(memory="6G")),
    "mem6g-uefi-i386": ("i386", dict(firmware="uefi", memory="6G")),
    "noserial-vga-amd64": ("amd64", dict(serial=False)),
    "noserial-gop-1920x1080-i386": ("i386", dict(firmware="uefi", serial=False,
                                                 qemu_args=bochs_display(1920, 1080))),
    "nopit-amd64": ("amd64", dict(qemu_args=NO_PIT)),
    "nopit-i386": ("i386", dict(qemu_args=NO_PIT)),
    "nopit-uefi-amd64": ("amd64", dict(firmware="uefi", qemu_args=NO_PIT)),
    "cpus32-i386": ("i386", dict(cpus=32, memory="512")),
    "x2apic-requested-tcg-amd64": ("amd64", dict(extra="apic=x2apic")),
    "cpus64-sparse-amd64": ("amd64", dict(cpus=64, smp="64,sockets=4,cores=20,maxcpus=80", memory="512")),
}


def _serial_text(rec):
    return Path(rec["logs"]["serial"]).read_text(errors="replace")


@pytest.mark.parametrize("case", list(CASES))
def test_firmware_variant_boots_and_reports(case):
    arch, fields = CASES[case]
    need_images()
    fields = dict(fields)
    rec = run(RunSpec(target="qemu-tcg", arch=arch, tests=FEW_TESTS, **fields))
    assert rec["verdict"] == V.SKIP and rec["image_result"] == V.SKIP, show(rec)
    assert not rec["problems"], show(rec)
    assert rec["screen"]["checked"] and rec["screen"]["ok"], show(rec)
    assert [s["verdict"] for s in rec["scenarios"]] == [V.SKIP] * len(rec["scenarios"]) and rec["scenarios"]
    rundir = Path(rec["run_dir"])
    serial = _serial_text(rec)
    if fields.get("firmware") == "uefi":
        picture = rundir / "screen.png"
        assert picture.exists(), "no picture of the screen kept in %s" % rundir
        if "qemu_args" in fields and "bochs-display" in fields["qemu_args"][-1]:
            want = tuple(int(v.split("=")[1]) for v in fields["qemu_args"][-1].split(",")[1:])
            assert struct.unpack(">II", picture.read_bytes()[16:24]) == want
        if fields.get("serial", True):
            # The QR code on the picture says what serial says.
            missing = qrphoto.missing_tools()
            assert not missing, "QR tools missing: %s (tools/setup.sh installs them)" % missing
            qr = parse_log(qrphoto.decode(picture))
            assert qr.result == rec["image_result"], show(rec)
            assert [(t.id, t.verdict) for t in qr.tests] == \
                [(s["id"], s["verdict"]) for s in rec["scenarios"]], show(rec)
    if not fields.get("serial", True):
        # Judged from the QR code: the log judged is what the screen's QR code holds.
        assert rec["logs"]["serial"].endswith("screen-qr.txt") and "LHV RESULT: SKIP" in serial, show(rec)
        assert not (rundir / "serial.log").exists()
        return
    assert (rec["banner"]["arch"], rec["banner"]["boot"]) == (arch, fields.get("firmware", "bios")), show(rec)
    assert "did not start" not in serial, serial
    if "cpus" in fields:
        assert rec["banner"]["cpus"] == str(fields["cpus"]), show(rec)
        assert "LHV SMP cpus=%d " % fields["cpus"] in serial
    clock = "acpi_pm" if fields.get("qemu_args") == NO_PIT else "pit"
    assert " clock=%s" % clock in serial, serial
    assert " apic=xapic" in serial, serial
    if fields.get("extra") == "apic=x2apic":
        assert "LHV NOTE: apic=x2apic: this CPU has no x2APIC" in serial, serial


@pytest.mark.parametrize("arch", images.ARCHES)
def test_x2apic_at_hand_off_on_bochs(arch):
    """Every CPU's local APIC in x2APIC mode from the start: the timer, EOIs and the INIT/SIPI
    that start the APs all go through the MSRs, and VMX scenarios run as with xAPIC."""
    need_images(iso=False)
    rec = run(RunSpec(target="bochs", arch=arch, cpu_model="tigerlake", cpus=2,
                      tests="vmx_lifecycle,preempt_timer,apic_virt,event_injection",
                      extra="apic=x2apic"))
    if rec["verdict"] == V.UNAVAILABLE:
        pytest.skip(rec["reason"])
    assert rec["verdict"] == V.GOOD and not rec["problems"], show(rec)
    serial = _serial_text(rec)
    assert "LHV SMP cpus=2 vmxon=2 apic=x2apic" in serial, serial
    # With L1 in x2APIC mode, apic_virt compares L2's pass-through x2APIC MSR reads with L1's own
    # (the Xen 7b2b93d30c check): that branch ran, and a mismatch would have made it BAD.
    assert "x2APIC MSRs passed through, L1 in x2APIC mode: L2 read" in serial, serial


# ---- The MADT walk (lhv/arch/madt.c) on the host: x2APIC entries, flags, the 64-CPU cap ----

@pytest.fixture(scope="module")
def madt_host(tmp_path_factory):
    from .conftest import build_host_tool
    return build_host_tool(tmp_path_factory, "madt_host", "lhv/arch/madt.c")


def local_apic(apic_id, flags=1, uid=0):
    return struct.pack("<BBBBI", 0, 8, uid, apic_id, flags)


def local_x2apic(apic_id, flags=1, uid=0):
    return struct.pack("<BBHIII", 9, 16, 0, apic_id, flags, uid)


def io_apic():
    return struct.pack("<BBBBII", 1, 12, 0, 0, 0xfec00000, 0)


def madt(*entries):
    body = struct.pack("<II", 0xfee00000, 1) + b"".join(entries)
    header = b"APIC" + struct.pack("<I", 36 + len(body)) + bytes(28)
    return header + body


def walk(madt_host, table, max_ids=64):
    out = subprocess.run([str(madt_host), str(max_ids)], input=table, capture_output=True, check=True)
    listed, *ids = (int(v) for v in out.stdout.split())
    return listed, ids


def test_madt_xapic_and_x2apic_entries(madt_host):
    """Type 0 for IDs below 255, type 9 above (as firmware lists them), in MADT order; a
    disabled entry is not a CPU, an online-capable one is."""
    table = madt(local_apic(0), io_apic(), local_apic(2), local_apic(4, flags=0), local_x2apic(255),
                 local_x2apic(0x100), local_x2apic(0x12345, flags=2), local_x2apic(7, flags=0))
    assert walk(madt_host, table) == (5, [0, 2, 255, 0x100, 0x12345])


def test_madt_only_x2apic_entries_sparse(madt_host):
    """Firmware that lists every CPU as x2APIC, with sparse IDs (2 sockets, 16 cores each)."""
    want = [s * 32 + c for s in range(2) for c in range(16)]
    assert walk(madt_host, madt(*[local_x2apic(i) for i in want])) == (32, want)


def test_madt_more_cpus_than_lhv_starts(madt_host):
    """96 CPUs listed, 64 stored (MAX_CPUS); the count of all of them goes to the NOTE."""
    ids = list(range(200, 296))
    entries = [local_apic(i) if i < 255 else local_x2apic(i) for i in ids]
    assert walk(madt_host, madt(*entries)) == (96, ids[:64])


def test_madt_cut_entry_is_not_read(madt_host):
    """An entry running past the table's length ends the walk."""
    table = madt(local_apic(1), local_x2apic(300))
    assert walk(madt_host, table[:-4]) == (1, [1])
