"""Boot the built images (`make` first) under Bochs and QEMU TCG.

Scenario lists come from the ELF registry, never from a list written here.
Each test is one bounded boot; pytest -n 2 spreads them over both cores.
"""

import re
from pathlib import Path

import pytest

from harness import images, registry
from harness import verdicts as V
from harness.runner import RunSpec, run

from .conftest import NO_IMAGE, need_images, registry_for, scenario_params, show

ARCHES = images.ARCHES
# Two Bochs CPU models, one of them with two CPUs, plus the 8 CPUs LHV promises to support and the
# model without VMFUNC.
BOCHS_FULL = [("corei7_skylake_x", 1), ("tigerlake", 2), ("corei7_icelake_u", 8), ("corei7_sandy_bridge_2600k", 1)]
# The negative controls run where every VMX feature LHV uses is offered.
NEG_MODEL = ("tigerlake", 2)


def _cpus_ok(req, cpus):
    m = re.match(r"(?:cpus|smp)\s*>=?\s*(\d+)$", req)
    return m and cpus < int(m.group(1))


def skip_allowed(rec, sid, reg):
    """A SKIP is acceptable only if a requirement of the scenario is missing
    according to the image's own CAPS line (or the CPU count)."""
    s = reg.get(sid)
    caps = rec.get("caps") or {}
    cpus = int((rec.get("banner") or {}).get("cpus", "0") or 0)
    # The runner adds "vpid" and "ept_2m" when LHV_OPT asks for VPID / large pages.
    words = list(s.requires) + ["vpid", "ept_2m"]
    return any(caps.get(r) == "0" or _cpus_ok(r, cpus) for r in words)


def assert_clean(rec):
    """No harness cross-check failed and the screen says what serial says."""
    assert not rec["problems"], show(rec)
    assert rec["screen"]["checked"] and rec["screen"]["ok"], show(rec)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("model,cpus", BOCHS_FULL)
def test_bochs_all_scenarios(arch, model, cpus):
    need_images()
    reg = registry_for(arch)
    assert reg.ids(arch), "registry of %s has no scenario" % arch
    rec = run(RunSpec(target="bochs", arch=arch, cpu_model=model, cpus=cpus))
    assert rec["verdict"] not in (V.TIMEOUT, V.CRASH, V.NO_OUTPUT, V.ERROR), show(rec)
    assert_clean(rec)
    assert (rec["banner"]["arch"], rec["banner"]["boot"], rec["banner"]["cpus"]) == \
        (arch, "bios", str(cpus)), show(rec)
    assert rec["caps"].get("vmx") == "1", show(rec)
    # Every CPU was brought up and entered VMX operation.
    # Bochs' BIOS hands over in xAPIC mode; its MADT lists APIC IDs 0..cpus-1 as xAPIC entries.
    assert rec["smp"] == {"cpus": str(cpus), "vmxon": str(cpus), "apic": "xapic", "handoff": "xapic",
                          "apic_ids": "0-%d" % (cpus - 1) if cpus > 1 else "0", "madt_x2apic": "0"}, show(rec)
    by = {s["id"]: s for s in rec["scenarios"]}
    selected = reg.selected(arch, int(rec["banner"]["opt"], 16))
    assert not rec["missing"], show(rec)
    for sid in selected:
        s = by[sid]
        if s["verdict"] == V.GOOD or s["known_bug"]:
            continue
        assert s["verdict"] == V.SKIP and skip_allowed(rec, sid, reg), \
            "%s: %s (%s)%s" % (sid, s["verdict"], s["reason"], show(rec))
    # Something ran GOOD on every model: skips do not make the run SKIP.
    assert rec["effective_verdict"] == V.GOOD, show(rec)
    assert rec["image_time"]["elapsed_ms"] is not None, show(rec)


@pytest.mark.parametrize("arch", ARCHES)
def test_bochs_modifier_bits(arch):
    """The implemented bits that change how L1 runs the guests rather than what runs
    (0x2 guest IF=0, 0x10 VPID, 0x100 2 MiB EPT pages), all at once: still all GOOD."""
    need_images()
    reg = registry_for(arch)
    rec = run(RunSpec(target="bochs", arch=arch, cpu_model="tigerlake", cpus=2, opt="0x5bf"))
    assert_clean(rec)
    assert rec["banner"]["opt"] == "0x5bf", show(rec)
    # GOOD, or the verdict of a known target bug (harness/known_bugs.py), for every selected id.
    by = {s["id"]: (V.GOOD if s["known_bug"] else s["verdict"]) for s in rec["scenarios"]}
    assert {sid: by.get(sid) for sid in reg.selected(arch, 0x5bf)} == \
        {sid: V.GOOD for sid in reg.selected(arch, 0x5bf)}, show(rec)


def negative_control_run(arch):
    """One boot per arch with every selected scenario's negative control armed (inject=*),
    shared by all the test_bochs_negative_control cases of that arch, also across pytest-xdist
    workers (a lock file; the first worker boots, the others read its JSON record)."""
    import fcntl
    import json
    import os
    import tempfile
    stamp = images.elf_path(arch).stat().st_mtime_ns
    # One pytest session (xdist workers share their parent), one image build: never an older run.
    cache = Path(tempfile.gettempdir()) / ("lhv-negative-%s-%d-%d.json" % (arch, stamp, os.getppid()))
    with open(str(cache) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cache.exists():
            return json.loads(cache.read_text())
        # Every scenario selected: the default bits plus those of scenarios outside the default
        # (0x40 l1_user_mode, 0x800 nested_user_mode...).
        reg = registry_for(arch)
        opt = reg.default_opt()
        for sid in reg.ids(arch):
            opt |= reg.get(sid).opt_mask
        rec = run(RunSpec(target="bochs", arch=arch, cpu_model=NEG_MODEL[0], cpus=NEG_MODEL[1],
                          opt=hex(opt), inject="*"))
        cache.write_text(json.dumps(rec, default=str))
        return rec


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("sid", sorted(set(scenario_params("i386") + scenario_params("amd64"))))
def test_bochs_negative_control(arch, sid):
    """inject=<id> makes L1 deliberately wrong for that scenario: it must say BAD. All of an
    arch's negative controls run in one boot (inject=*); the runner's L1 guard keeps one
    scenario's damage from reaching the next."""
    need_images()
    reg = registry_for(arch)
    if sid == NO_IMAGE:
        pytest.fail("the ELF registries have no scenarios")
    if sid not in reg.ids(arch):
        pytest.skip("%s is not built for %s" % (sid, arch))
    rec = negative_control_run(arch)
    assert_clean(rec)
    by = {s["id"]: s for s in rec["scenarios"]}
    assert sid in by, show(rec)
    assert by[sid]["verdict"] == V.BAD and by[sid]["reason"], show(rec)
    assert rec["image_result"] == V.BAD, show(rec)


def test_inject_takes_one_id_or_globs():
    """inject= with one id arms only that scenario: the others in the same run stay GOOD."""
    need_images()
    rec = run(RunSpec(target="bochs", arch="amd64", cpu_model=NEG_MODEL[0], cpus=NEG_MODEL[1],
                      tests="ept_basic,vpid_invvpid,msr_bitmap", inject="vpid_*"))
    by = {s["id"]: s["verdict"] for s in rec["scenarios"]}
    assert by == {"ept_basic": V.GOOD, "vpid_invvpid": V.BAD, "msr_bitmap": V.GOOD}, show(rec)


@pytest.mark.parametrize("arch", ARCHES)
def test_no_interrupt_watchdog(arch):
    """LHV_OPT 0x200 NO_INTERRUPT: no periodic timer, yet a hang in L1 and one in L2 still end as
    TIMEOUT (one LAPIC one-shot per scenario at its budget), the scenario after them runs GOOD, and
    L1 took exactly one timer interrupt per hang: with a periodic timer it would be hundreds.
    With 0x2000 (serial only): the result screen cuts a FAILED row of a long id at the QR code
    (report.c), which the screen check would take for a missing failure."""
    need_images()
    rec = run(RunSpec(target="bochs", arch=arch, cpu_model=NEG_MODEL[0], cpus=NEG_MODEL[1], opt="0x26ad",
                      tests="vmx_lifecycle", extra="selftest=l1_hang,l2_hang"))
    assert not rec["problems"], show(rec)
    by = {s["id"]: s["verdict"] for s in rec["scenarios"]}
    assert by == {"selftest_l1_hang": V.TIMEOUT, "selftest_l2_hang": V.TIMEOUT, "vmx_lifecycle": V.GOOD}, show(rec)
    serial = Path(rec["logs"]["serial"]).read_text()
    assert "NO_INTERRUPT: no periodic timer; 2 watchdog one-shot interrupts" in serial, show(rec)


# "disk": the hybrid ISO as a raw hard disk, the way it boots from a USB stick.
QEMU_MODES = [("bios", "kernel"), ("bios", "cdrom"), ("uefi", "cdrom"), ("bios", "disk"), ("uefi", "disk")]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("firmware,boot", QEMU_MODES)
def test_qemu_tcg_boots_and_skips_vmx(arch, firmware, boot):
    """QEMU TCG has no VMX: it boots, every VMX scenario SKIPs with a reason,
    RESULT SKIP, and the screen (VGA text or framebuffer) agrees with serial."""
    need_images()
    reg = registry_for(arch)
    rec = run(RunSpec(target="qemu-tcg", arch=arch, firmware=firmware, boot=boot))
    assert rec["verdict"] == V.SKIP and rec["image_result"] == V.SKIP, show(rec)
    assert_clean(rec)
    assert rec["screen"]["kind"] == ("ppm" if firmware == "uefi" else "vga")
    assert (rec["banner"]["arch"], rec["banner"]["boot"]) == (arch, firmware), show(rec)
    assert rec["caps"].get("vmx") == "0", show(rec)
    by = {s["id"]: s for s in rec["scenarios"]}
    assert not rec["missing"], show(rec)
    for sid in reg.selected(arch, int(rec["banner"]["opt"], 16)):
        assert by[sid]["verdict"] == V.SKIP and by[sid]["reason"], show(rec)


BAD_OPTIONS = [
    pytest.param("lhv_opt=0xzz", id="malformed-opt"),
    pytest.param("lhv_opt=0x100000000", id="unknown-bit"),
    pytest.param("tests=no_such_scenario", id="unknown-test"),
    pytest.param("lhv_opt=0x42", id="user-mode-with-guest-if0"),
    pytest.param("lhv_opt=0x802", id="nested-user-mode-with-guest-if0"),
    pytest.param("lhv_opt=0x8", id="switch-ept-without-ept"),
    pytest.param("lhv_opt=0x100", id="large-pages-without-ept"),
    pytest.param("lhv_opt=", id="empty-opt"),
    pytest.param("colour=blue", id="unknown-word"),
    pytest.param("inject=no_such_scenario", id="inject-unknown"),
    pytest.param("inject=-ept_basic", id="inject-exclusion"),
    pytest.param("tests=ept_basic inject=vmx_lifecycle", id="inject-not-selected"),
    pytest.param("selftest=nothing", id="selftest-unknown"),
]


SELECTIONS = [
    # (lhv_opt or None for the default, tests=): the image must run exactly what the harness's own
    # reading of the ELF registry selects (registry.selected), in registry order.
    pytest.param(None, "ept*,vmx*", id="globs"),
    pytest.param(None, "-ept_basic,-msr*", id="excludes"),
    pytest.param("4", None, id="decimal-opt"),
    pytest.param("0x24", "pae_cr3_unmapped", id="216212-preset"),
]


@pytest.mark.parametrize("opt,tests", SELECTIONS)
def test_selection_words(opt, tests):
    """tests= globs and exclusions, and lhv_opt= bits, select exactly these scenarios."""
    need_images(iso=False)
    reg = registry_for("amd64")
    rec = run(RunSpec(target="qemu-tcg", arch="amd64", opt=opt, tests=tests))
    expected = reg.selected("amd64", int(opt, 0) if opt else reg.default_opt(), tests)
    assert expected and [s["id"] for s in rec["scenarios"]] == expected, show(rec)
    assert len(expected) < len(reg.ids("amd64")), "the selection must leave something out"
    assert rec["verdict"] == V.SKIP and not rec["problems"], show(rec)


def test_other_subarch_only_selection_is_skip():
    """A scenario built for amd64 only is not part of the i386 run: asking the i386 image for it
    alone runs nothing, says so, and the run is SKIP (not a usage ERROR, no TEST line)."""
    need_images(iso=False)
    reg = registry_for("i386")
    only_amd64 = [sid for sid in reg.ids("amd64") if sid not in reg.ids("i386")]
    assert only_amd64, "no amd64-only scenario in the registry"
    rec = run(RunSpec(target="qemu-tcg", arch="i386", tests=only_amd64[0]))
    assert rec["verdict"] == V.SKIP and rec["image_result"] == V.SKIP, show(rec)
    assert rec["scenarios"] == [] and not rec["problems"], show(rec)
    serial = Path(rec["logs"]["serial"]).read_text(errors="replace")
    assert "selects only scenarios of the other subarch: nothing runs on i386" in serial, serial


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("cmdline", BAD_OPTIONS)
def test_bad_options_give_error(arch, cmdline):
    need_images()
    rec = run(RunSpec(target="qemu-tcg", arch=arch, extra=cmdline))
    assert rec["verdict"] == V.ERROR and rec["image_result"] == V.ERROR, show(rec)
    assert rec["lhv_errors"], show(rec)
    assert_clean(rec)


def test_lhv_opt_md_matches_registry():
    need_images(iso=False)
    md_path = images.REPO / "LHV_OPT.md"
    assert md_path.exists(), "LHV_OPT.md is missing"
    text = md_path.read_text()
    table = registry.parse_lhv_opt_md(text)
    assert table, "LHV_OPT.md has no '| 0x.. | NAME |' rows"
    for arch in ARCHES:
        reg = registry_for(arch)
        elf = {o.value: o.name for o in reg.options}
        assert elf, "%s: .lhv_options is empty" % arch
        for value, name in sorted(elf.items()):
            assert table.get(value) == name, \
                "%s: option 0x%x %s is %s in LHV_OPT.md" % (arch, value, name,
                                                            table.get(value, "absent"))
        for value, name in sorted(table.items()):
            assert elf.get(value) == name, \
                "LHV_OPT.md row 0x%x %s is not in %s's .lhv_options" % (value, name, arch)
        for sid in reg.ids():
            assert re.search(r"\b%s\b" % re.escape(sid), text), \
                "scenario %s is not described in LHV_OPT.md" % sid


def test_list_command_reads_registry():
    need_images(iso=False)
    from .test_cli_report import harness
    r = harness("run", "--list")
    assert r.returncode == 0, r.stderr
    for arch in ARCHES:
        for sid in registry_for(arch).ids(arch):
            assert sid in r.stdout


def test_judge_reproduces_a_real_run_and_catches_a_doctored_screen(tmp_path):
    """`judge` on the kept logs gives the run's verdict; a screen that says
    something else than serial is caught."""
    need_images()
    rec = run(RunSpec(target="qemu-tcg", arch="amd64", out=str(tmp_path / "run")))
    assert rec["screen"]["ok"], show(rec)
    from harness.runner import judge_file
    again = judge_file(rec["logs"]["serial"], screen=rec["logs"]["screen"])
    assert (again["verdict"], again["screen"]["ok"]) == (rec["verdict"], True), show(again)
    vga = bytearray(Path(rec["logs"]["screen"]).read_bytes())
    text = bytes(vga[0::2])
    pos = text.find(b"LHV RESULT: " + rec["image_result"].encode())
    assert pos >= 0
    vga[(pos + 12) * 2:(pos + 16) * 2] = b"G\x07O\x07O\x07D\x07"
    doctored = tmp_path / "vga.bin"
    doctored.write_bytes(bytes(vga))
    bad = judge_file(rec["logs"]["serial"], screen=str(doctored))
    assert bad["screen"]["ok"] is False and bad["verdict"] == V.ERROR, show(bad)
    assert "screen says RESULT GOOD" in bad["screen"]["reason"]


SELFTESTS = [
    # selftest=<name>: the image's own proof that a failure mode gets its verdict.
    pytest.param("qemu-tcg", "l1_hang", V.BAD, V.TIMEOUT, id="qemu-l1_hang-TIMEOUT"),
    pytest.param("qemu-tcg", "l1_fault", V.ERROR, V.ERROR, id="qemu-l1_fault-ERROR"),
    pytest.param("qemu-tcg", "crash", V.CRASH, None, id="qemu-crash-CRASH"),
    pytest.param("bochs", "l2_hang", V.BAD, V.TIMEOUT, id="bochs-l2_hang-TIMEOUT"),
]

# L1 broken outside any scenario, so that only the harness can give the verdict.
HARNESS_VERDICTS = [
    pytest.param("qemu-tcg", "triple_fault", V.CRASH, id="qemu-triple_fault-CRASH"),
    pytest.param("bochs", "triple_fault", V.CRASH, id="bochs-triple_fault-CRASH"),
    pytest.param("qemu-tcg", "stall", V.TIMEOUT, id="qemu-stall-TIMEOUT"),
]


@pytest.mark.parametrize("target,selftest,verdict", HARNESS_VERDICTS)
def test_harness_verdicts_for_a_lost_l1(target, selftest, verdict):
    """A triple fault is CRASH and an image that never ends is TIMEOUT, with the log kept."""
    need_images()
    rec = run(RunSpec(target=target, arch="amd64", extra="selftest=" + selftest, timeout=10))
    assert rec["verdict"] == verdict and rec["reason"], show(rec)
    assert rec["image_result"] is None, show(rec)
    assert Path(rec["logs"]["serial"]).read_text().startswith("LHV "), show(rec)


@pytest.mark.parametrize("target,selftest,run_verdict,scenario_verdict", SELFTESTS)
def test_image_selftests_get_their_verdicts(target, selftest, run_verdict, scenario_verdict):
    need_images()
    rec = run(RunSpec(target=target, arch="amd64", extra="selftest=" + selftest))
    assert rec["verdict"] == run_verdict and not rec["problems"], show(rec)
    if scenario_verdict:
        by = {s["id"]: s for s in rec["scenarios"]}
        s = by.get("selftest_" + selftest)
        assert s and s["verdict"] == scenario_verdict and s["reason"], show(rec)
        assert_clean(rec)
    else:
        assert rec["exceptions"], show(rec)


# The runner's guard of L1's state (lhv/guard.c): each damage_* self-test changes one piece of
# L1's state and returns as if all were well; the guard must name it in the self-test's ERROR and
# put it back, so that the next self-test, and the scenario after them all, get their own
# verdicts. Under QEMU TCG there is no VMX: the VMX damage (VMXOFF, a stray current VMCS) cannot
# be shown there, and the scenario after them SKIPs instead of being GOOD.
L1_DAMAGE = {
    "damage_cr0": "CR0 0x", "damage_cr3": "CR3 0x", "damage_cr3_abort": "CR3 0x", "damage_cr4": "CR4 0x",
    "damage_efer": "EFER 0x", "damage_gdtr": "GDTR 0x", "damage_idtr": "IDTR 0x", "damage_tr": "TR 0x",
    "damage_if": "RFLAGS.IF 1 -> 0", "damage_timer": "LAPIC timer", "damage_stack": "cpu0 stack canary",
}
VMX_DAMAGE = {
    "damage_vmxoff": "VMX operation on -> off", "damage_ap_vmxoff": "cpu1: VMX operation on -> off",
    "damage_vmcs": "current VMCS 0xffffffffffffffff -> 0x",
}
AFTER_DAMAGE = "vmx_lifecycle"


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("target", ["bochs", "qemu-tcg"])
def test_l1_damage_is_restored_and_blamed(target, arch):
    need_images()
    damage = dict(L1_DAMAGE, **(VMX_DAMAGE if target == "bochs" else {}))
    words = ",".join(list(damage) + ["nmi"])
    spec = RunSpec(target=target, arch=arch, tests=AFTER_DAMAGE, extra="selftest=" + words)
    if target == "bochs":
        spec.cpu_model, spec.cpus = NEG_MODEL
    rec = run(spec)
    assert rec["verdict"] == V.ERROR and not rec["problems"], show(rec)
    by = {s["id"]: s for s in rec["scenarios"]}
    for name, what in damage.items():
        s = by.get("selftest_" + name)
        assert s and s["verdict"] == V.ERROR, "%s: %s%s" % (name, s, show(rec))
        assert "L1 state damaged: " in s["reason"] and what in s["reason"] and s["reason"].endswith("restored"), \
            "%s: %s%s" % (name, s["reason"], show(rec))
    assert by["selftest_nmi"]["verdict"] == V.GOOD, show(rec)
    serial = Path(rec["logs"]["serial"]).read_text()
    assert "LHV NOTE: 1 NMI that no scenario expected reached L1 during selftest_nmi" in serial, show(rec)
    assert by[AFTER_DAMAGE]["verdict"] == (V.GOOD if target == "bochs" else V.SKIP), show(rec)
    assert_clean(rec)


PS2_WAITING = "INFO ps2_mouse: waiting for mouse packets"


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("mouse,inject,verdict,reason", [
    pytest.param(True, None, V.GOOD, None, id="moved-GOOD"),
    pytest.param(False, None, V.SKIP, "no mouse movement within 3000 ms", id="still-SKIP"),
    pytest.param(True, "ps2_mouse", V.BAD, "but no interrupt came at vector 0x2c", id="inject-BAD"),
])
def test_qemu_ps2_mouse(arch, mouse, inject, verdict, reason):
    """LHV_OPT 0x1000: under QEMU TCG the PS/2 mouse's packets arrive by IRQ 12 through the I/O
    APIC once the harness moves the mouse (QMP input-send-event after the waiting line); without
    movement the scenario cannot be GOOD (SKIP); with its negative control (IRQ 12 left off in
    the i8042's configuration byte) it is BAD even while the mouse moves."""
    need_images(iso=False)
    rec = run(RunSpec(target="qemu-tcg", arch=arch, opt="0x1000", tests="ps2_mouse", inject=inject,
                      mouse_on=PS2_WAITING if mouse else None))
    assert not rec["problems"], show(rec)
    assert [(s["id"], s["verdict"]) for s in rec["scenarios"]] == [("ps2_mouse", verdict)], show(rec)
    serial = Path(rec["logs"]["serial"]).read_text(errors="replace")
    if verdict == V.GOOD:
        assert re.search(r"INFO ps2_mouse: packets=[1-9]\d* ", serial), serial
        assert re.search(r"^\d+ moves", Path(rec["logs"]["mouse"]).read_text()), show(rec)
    else:
        assert reason in rec["scenarios"][0]["reason"], show(rec)
    assert (PS2_WAITING in serial) == (verdict != V.BAD), serial
