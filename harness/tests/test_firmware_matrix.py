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

- x2APIC enabled by the firmware at hand-off, with CPUs of APIC IDs 256 and more that the
  firmware's MADT lists as x2APIC entries (type 9): SeaBIOS and OVMF both switch every CPU to
  x2APIC mode when one has an ID above 254, as laptop firmware does. QEMU emulates x2APIC under
  TCG from 8.1 on, Debian 12's is 7.2: these cases run on the QEMU that
  tools/fetch_qemu_backports.py unpacks from bookworm-backports (tools/setup.sh runs it), or on
  --qemu/LHV_QEMU where that one has x2APIC, and are skipped with the reason otherwise. LHV's SMP
  line says what it found: "apic=x2apic handoff=x2apic madt_x2apic=2 apic_ids=0-1,256-257".

Under Debian's QEMU 7.2, apic=x2apic only says that the CPU has none (a NOTE, xAPIC used); the
apic=x2apic word (LHV switches every CPU itself) runs on Bochs, whose tigerlake has x2APIC, with
VMX and the APs started through the x2APIC ICR. The MADT walk (lhv/arch/madt.c) is also tested
on the host with tables no emulator here writes (harness/tests/host/madt_host.c).

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
from harness.targets.qemu_tcg import qemu_with_x2apic

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
    assert rec_smp(rec)[:2] == ("xapic", "xapic"), serial
    if fields.get("extra") == "apic=x2apic":
        assert "LHV NOTE: apic=x2apic: this CPU has no x2APIC" in serial, serial


def rec_smp(rec):
    """(apic, handoff, apic_ids, madt_x2apic) from the run's LHV SMP line."""
    smp = parse_log(Path(rec["logs"]["serial"]).read_bytes()).smp
    return smp.get("apic"), smp.get("handoff"), smp.get("apic_ids"), smp.get("madt_x2apic")


def x2apic_machine(low_cpus, high_cpus):
    """A q35 machine with low_cpus CPUs of APIC IDs 0.. and high_cpus more of IDs 256.. (socket 1
    of two 256-core sockets: QEMU numbers socket s, core c as s * 256 + c)."""
    args = ["-M", "q35"] + [a for core in range(high_cpus) for a in
                            ("-device", "max-x86_64-cpu,socket-id=1,core-id=%d,thread-id=0" % core)]
    return dict(cpus=low_cpus + high_cpus, smp="%d,sockets=2,cores=256,maxcpus=512" % low_cpus,
                qemu_args=tuple(args), memory="512")


def ids_text(low_cpus, high_cpus):
    return ",".join("%d-%d" % (base, base + n - 1) if n > 1 else str(base)
                    for base, n in ((0, low_cpus), (256, high_cpus)))


# id: (arch, firmware, CPUs with IDs 0.., CPUs with IDs 256..)
X2APIC_CASES = {
    "x2apic-handoff-bios-amd64": ("amd64", "bios", 2, 2),
    "x2apic-handoff-uefi-amd64": ("amd64", "uefi", 1, 1),
    "x2apic-handoff-uefi-i386": ("i386", "uefi", 2, 2),
    "x2apic-handoff-cpus32-bios-i386": ("i386", "bios", 16, 16),
    "x2apic-handoff-cpus64-uefi-amd64": ("amd64", "uefi", 32, 32),
}


@pytest.mark.parametrize("case", list(X2APIC_CASES))
def test_x2apic_enabled_by_firmware_at_hand_off(case):
    """The firmware (SeaBIOS, OVMF) hands every CPU over in x2APIC mode and lists those of IDs
    256 and more as MADT x2APIC entries: LHV keeps that mode, starts all of them through the
    x2APIC ICR, and its screen and QR code say what serial says."""
    arch, firmware, low, high = X2APIC_CASES[case]
    need_images()
    qemu, why = qemu_with_x2apic()
    if qemu is None:
        pytest.skip(why)
    rec = run(RunSpec(target="qemu-tcg", program=qemu, arch=arch, firmware=firmware, tests=FEW_TESTS,
                      **x2apic_machine(low, high)))
    assert rec["verdict"] == V.SKIP and not rec["problems"], show(rec)
    assert rec["screen"]["checked"] and rec["screen"]["ok"], show(rec)
    serial = _serial_text(rec)
    assert rec["banner"]["cpus"] == str(low + high) and "did not start" not in serial, serial
    # No apic= word was given: x2APIC mode is the firmware's, on every CPU.
    assert rec_smp(rec) == ("x2apic", "x2apic", ids_text(low, high), str(high)), serial
    if firmware == "uefi":
        qr = parse_log(qrphoto.decode(Path(rec["run_dir"]) / "screen.png"))
        assert [(t.id, t.verdict) for t in qr.tests] == [(s["id"], s["verdict"]) for s in rec["scenarios"]]


GUARD_SELFTESTS = {"damage_cr3": V.ERROR, "damage_if": V.ERROR, "damage_timer": V.ERROR,
                   "l1_fault": V.ERROR, "nmi": V.GOOD, "l1_hang": V.TIMEOUT}


@pytest.mark.parametrize("arch", images.ARCHES)
def test_guard_and_watchdog_under_firmware_x2apic(arch):
    """With the firmware's x2APIC mode (and CPUs at 256 and up), the L1 guard's LAPIC-timer check,
    the self-NMI and the watchdog's one-shot deadline all go through the x2APIC MSRs: each
    selftest word still gets its own verdict."""
    need_images()
    qemu, why = qemu_with_x2apic()
    if qemu is None:
        pytest.skip(why)
    rec = run(RunSpec(target="qemu-tcg", program=qemu, arch=arch, tests="vmx_lifecycle",
                      extra="selftest=" + ",".join(GUARD_SELFTESTS), **x2apic_machine(2, 2)))
    assert rec_smp(rec)[:2] == ("x2apic", "x2apic"), show(rec)
    got = {s["id"].replace("selftest_", ""): s["verdict"] for s in rec["scenarios"] if s["id"].startswith("selftest_")}
    assert got == GUARD_SELFTESTS, show(rec)
    assert "LAPIC timer" in next(s["reason"] for s in rec["scenarios"] if s["id"] == "selftest_damage_timer")


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
    assert "LHV SMP cpus=2 vmxon=2 apic=x2apic handoff=xapic" in serial, serial
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
    listed, x2apic_entries, *ids = (int(v) for v in out.stdout.split())
    return listed, x2apic_entries, ids


def test_madt_xapic_and_x2apic_entries(madt_host):
    """Type 0 for IDs below 255, type 9 above (as firmware lists them), in MADT order; a
    disabled entry is not a CPU, an online-capable one is."""
    table = madt(local_apic(0), io_apic(), local_apic(2), local_apic(4, flags=0), local_x2apic(255),
                 local_x2apic(0x100), local_x2apic(0x12345, flags=2), local_x2apic(7, flags=0))
    assert walk(madt_host, table) == (5, 3, [0, 2, 255, 0x100, 0x12345])


def test_madt_only_x2apic_entries_sparse(madt_host):
    """Firmware that lists every CPU as x2APIC, with sparse IDs (2 sockets, 16 cores each)."""
    want = [s * 32 + c for s in range(2) for c in range(16)]
    assert walk(madt_host, madt(*[local_x2apic(i) for i in want])) == (32, 32, want)


def test_madt_more_cpus_than_lhv_starts(madt_host):
    """96 CPUs listed, 64 stored (MAX_CPUS); the count of all of them goes to the NOTE."""
    ids = list(range(200, 296))
    entries = [local_apic(i) if i < 255 else local_x2apic(i) for i in ids]
    assert walk(madt_host, madt(*entries)) == (96, 41, ids[:64])


def test_madt_cut_entry_is_not_read(madt_host):
    """An entry running past the table's length ends the walk."""
    table = madt(local_apic(1), local_x2apic(300))
    assert walk(madt_host, table[:-4]) == (1, 0, [1])
