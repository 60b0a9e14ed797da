"""Race hunting (repeat=, noise=, seed=) and `python3 -m harness bundle`.

Unit tests of the harness side first; then boots: negative controls under repeat=, a seed that
replays byte for byte under Bochs with 2 CPUs, the scenarios' claims held under repeat= and
noise=, the refusals, and a bundle whose reproduce command gives the same verdicts.
"""

import json
import subprocess
import tarfile

import pytest

from harness import images
from harness import verdicts as V
from harness.bundle import _reproduce_command, sdm_references
from harness.cli import build_parser, repeat_words
from harness.runner import RunSpec, repeat_seconds, run

from .conftest import need_images, registry_for, show

ARCHES = images.ARCHES
MODEL, CPUS = "tigerlake", 2


# ---------------------------------------------------------------- harness side

def test_cli_repeat_words():
    args = build_parser().parse_args(["run", "--repeat", "5", "--repeat-ms", "2000", "--repeat-until-fail",
                                      "--noise", "nmi,ipi", "--seed", "0x2a"])
    assert repeat_words(args) == ["repeat=5", "repeat_ms=2000", "repeat_until=fail", "noise=nmi,ipi",
                                  "seed=0x2a"]
    assert repeat_words(build_parser().parse_args(["run"])) == []


def test_cli_repeat_timeout():
    assert repeat_seconds("", 10) == 10
    assert repeat_seconds("tests=x repeat=4", 10) == 40
    assert repeat_seconds("repeat_ms=2000", 10) == 70
    assert repeat_seconds("repeat=2 repeat_ms=60000", 10) == 20          # whichever ends first
    assert repeat_seconds("repeat_until=fail", 10) == 1800               # only the harness' limit


def test_bundle_sdm_references_from_a_scenario_header():
    refs, sentences = sdm_references((images.REPO / "tests" / "ept_basic.c").read_text())
    assert "29.3.3.2 EPT Violations" in refs
    assert "28.2.1 Table 28-7 Exit Qualification for EPT Violations" in refs
    assert sentences and all("SDM" in s or "Vol." in s for s in sentences)
    refs, _ = sdm_references("/*\n * x: y.\n * Intel SDM Vol. 3C 31.3 \"INVVPID\". Bochs 2.7 is fine.\n */\n")
    assert refs == ["31.3 INVVPID"]


def test_bundle_reproduce_command():
    rec = {"target": "bochs", "arch": "i386", "cpu_model": "tigerlake", "cpus": 2, "firmware": "bios",
           "options": {"tests": "ept_basic", "inject": "ept_basic", "extra": "repeat=3 noise=nmi"},
           "timeout_s": 90, "command": ["/work/bochs/3.0/bin/bochs", "-q"]}
    cmd = _reproduce_command(rec, {"iso": "lhv-i386.iso", "elf": "lhv-i386.elf"})
    assert cmd == ("python3 -m harness run --target bochs --arch i386 "
                   "--cpu-model tigerlake --cpus 2 --tests ept_basic --inject ept_basic "
                   "--cmdline 'repeat=3 noise=nmi' --timeout 90 --iso image/lhv-i386.iso "
                   "--elf image/lhv-i386.elf --bochs /work/bochs/3.0/bin/bochs --out runs/reproduced")


def test_bundle_reproduce_command_of_a_firmware_matrix_run():
    """Another QEMU and the firmware matrix's variations come back as --qemu, --memory, --smp,
    --no-serial and --qemu-args."""
    rec = {"target": "qemu-tcg", "arch": "amd64", "cpus": 4, "firmware": "uefi", "boot": "cdrom",
           "options": {"tests": "vmx_lifecycle"}, "command": ["/q/qemu-system-x86_64", "-name"],
           "qemu": {"memory": "512", "smp": "2,sockets=2,cores=256,maxcpus=512", "serial": False,
                    "args": ["-M", "q35", "-device", "max-x86_64-cpu,socket-id=1,core-id=0"]}}
    cmd = _reproduce_command(rec, {"iso": "lhv-amd64.iso"})
    assert cmd == ("python3 -m harness run --target qemu-tcg --arch amd64 --cpus 4 --firmware uefi "
                   "--boot cdrom --tests vmx_lifecycle --iso image/lhv-amd64.iso --qemu /q/qemu-system-x86_64 "
                   "--memory 512 --smp 2,sockets=2,cores=256,maxcpus=512 --no-serial --qemu-args "
                   "'-M q35 -device max-x86_64-cpu,socket-id=1,core-id=0' --out runs/reproduced")
    rec["command"][0], rec["qemu"] = "qemu-system-x86_64", {"serial": True}
    assert " --qemu " not in _reproduce_command(rec, {}) and "--no-serial" not in _reproduce_command(rec, {})


# ---------------------------------------------------------------- boots

def _all_claiming(arch, *claims):
    """tests= for every scenario that makes these claims, written as the exclusion of the others
    (the full list would not fit the image's tests= value)."""
    reg = registry_for(arch)
    others = [s.id for s in reg.scenarios if not all(getattr(s, c) for c in claims)]
    assert len(others) < len(reg.scenarios)
    return ",".join("-" + sid for sid in others) or "*"


def bochs(arch, tests, extra, inject=None, out=None, opt=None):
    return run(RunSpec(target="bochs", arch=arch, cpu_model=MODEL, cpus=CPUS, tests=tests, inject=inject,
                       extra=extra, out=str(out) if out else None, opt=opt))


# The default options plus USER_MODE (0x40) and NESTED_USER_MODE (0x800), which select the two
# user-mode scenarios.
OPT_WITH_USER_MODES = "0xced"


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("sid", ["ept_basic", "ept_switch", "vpid_invvpid"])
def test_bochs_negative_control_under_repeat(arch, sid):
    """inject=<id> repeat=3: BAD in every round, so the first failing round is 1."""
    need_images()
    rec = bochs(arch, sid, "repeat=3", inject=sid)
    assert rec["verdict"] == V.BAD and not rec["problems"], show(rec)
    s = {x["id"]: x for x in rec["scenarios"]}[sid]
    assert s["verdict"] == V.BAD, show(rec)
    assert s["repeat"]["first_fail"] == 1 and s["repeat"]["rounds"] == 3 and s["repeat"]["bad"] == 3, show(rec)
    assert rec["repeat"]["rounds"] == 3 and rec["repeat"]["failing_rounds"] == {sid: [1, 2, 3]}, show(rec)


@pytest.mark.parametrize("arch", ARCHES)
def test_bochs_noise_seed_replays_byte_for_byte(arch, tmp_path):
    """The same seed, image and configuration twice: identical serial logs, nothing removed
    (Bochs is deterministic and so is LHV's noise schedule); another seed changes the schedule."""
    need_images()
    tests = "ept_basic,ept_on_demand,ept_switch,vpid_invvpid"
    first = bochs(arch, tests, "repeat=2 noise=nmi,ipi seed=0x5eed", out=tmp_path / "a")
    second = bochs(arch, tests, "repeat=2 noise=nmi,ipi seed=0x5eed", out=tmp_path / "b")
    for rec in (first, second):
        assert rec["verdict"] == V.GOOD and not rec["problems"], show(rec)
        assert rec["repeat"]["seed"] == 0x5eed and "sent" in rec["repeat"]["noise"], show(rec)
    a = (tmp_path / "a" / "serial.log").read_bytes()
    b = (tmp_path / "b" / "serial.log").read_bytes()
    assert a == b, "same seed, different serial logs:\n%s\n---\n%s" % (a.decode(errors="replace"),
                                                                       b.decode(errors="replace"))
    sent = [int(w) for w in first["repeat"]["noise"].split() if w.isdigit()]
    assert sent[0] > 0 and sent[1] > 0, first["repeat"]["noise"]        # cpu1 sent NMIs and IPIs
    other = bochs(arch, tests, "repeat=2 noise=nmi,ipi seed=0x5eee", out=tmp_path / "c")
    assert other["verdict"] == V.GOOD, show(other)
    assert other["repeat"]["noise"] != first["repeat"]["noise"], "another seed, the same noise"


@pytest.mark.parametrize("arch", ARCHES)
def test_bochs_noise_safe_scenarios_hold_under_noise(arch):
    """Every scenario that claims noise safety (and repeats), two rounds with NMIs and IPIs fired
    at the BSP: GOOD, or a known Bochs bug that shows without noise as well."""
    need_images()
    rec = bochs(arch, _all_claiming(arch, "noise_safe", "repeatable"), "repeat=2 noise=nmi,ipi seed=7",
                opt=OPT_WITH_USER_MODES)
    assert rec["effective_verdict"] == V.GOOD and not rec["problems"], show(rec)
    claimed = {s.id for s in registry_for(arch).scenarios if s.noise_safe and s.repeatable and arch in s.arches()}
    assert {s["id"] for s in rec["scenarios"]} == claimed, show(rec)


@pytest.mark.parametrize("arch", ARCHES)
def test_bochs_repeatable_scenarios_repeat(arch):
    need_images()
    rec = bochs(arch, _all_claiming(arch, "repeatable"), "repeat=2")
    assert rec["effective_verdict"] == V.GOOD and not rec["problems"], show(rec)
    assert all(s["repeat"]["rounds"] == 2 or s["verdict"] == V.SKIP for s in rec["scenarios"]), show(rec)


@pytest.mark.parametrize("words,tests,cpus,message", [
    ("repeat=2", "vpid_switch", 2, "repeat=: vpid_switch is not safe to repeat"),
    ("repeat_until=fail repeat_ms=100", "ept_basic,vpid_switch", 2, "repeat_ms=: vpid_switch is not safe to repeat"),
    ("noise=nmi,ipi", "ept_basic,msr_lists", 2, "noise=: msr_lists is not safe under noise"),
    ("noise=nmi", "ept_basic,idt_vectoring", 2, "noise=: idt_vectoring is not safe under noise"),
    ("noise=ipi", "ept_basic", 1, "noise=: needs a second CPU to send from (cpus=1)"),
    ("repeat=0", "ept_basic", 2, "malformed repeat= value '0'"),
    ("noise=nmi,smi", "ept_basic", 2, "noise=nmi,smi: unknown kind 'smi'"),
    ("repeat_until=pass", "ept_basic", 2, "only repeat_until=fail is known"),
])
def test_qemu_refusals(words, tests, cpus, message):
    """Checked before anything runs, so QEMU without VMX is enough."""
    need_images()
    rec = run(RunSpec(target="qemu-tcg", arch="amd64", cpus=cpus, tests=tests, extra=words))
    assert rec["verdict"] == V.ERROR and rec["image_result"] == V.ERROR, show(rec)
    assert any(message in e for e in rec["lhv_errors"]), show(rec)
    assert not rec["scenarios"], show(rec)


def test_bochs_bundle_reproduces(tmp_path):
    """A BAD run (a negative control, under repeat=) bundled, unpacked elsewhere, and its one-line
    reproduce command run from there: the same verdicts, the same serial log."""
    need_images()
    rundir = tmp_path / "run"
    rec = bochs("amd64", "ept_basic,ept_switch", "repeat=2", inject="ept_switch", out=rundir)
    assert rec["verdict"] == V.BAD, show(rec)
    out = subprocess.run(["/usr/bin/python3", "-m", "harness", "bundle", str(rundir)], cwd=images.REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    archive = rundir.with_name("run.tar.gz")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked)
    (top,) = list(unpacked.iterdir())
    names = {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()}
    for want in ("README.txt", "reproduce.sh", "run.json", "command.txt", "image/lhv-amd64.iso",
                 "image/lhv-amd64.elf", "image/SHA256SUMS", "image/REBUILD.txt", "logs/serial.log",
                 "logs/bochs.log", "logs/bochsrc", "logs/vga.bin", "logs/screen.txt", "scenarios/ept_switch.c",
                 "scenarios/SDM.txt", "harness/cli.py"):
        assert want in names, sorted(names)
    readme = (top / "README.txt").read_text()
    assert "ept_switch: BAD" in readme and "tigerlake" in readme and "CPUs: 2" in readme
    assert "SDM 31.3 INVEPT" in readme and "git checkout " in readme
    again = subprocess.run(["sh", "reproduce.sh"], cwd=top, capture_output=True, text=True, timeout=600)
    assert again.returncode == V.EXIT_STATUS[V.BAD], again.stdout + again.stderr
    rec2 = json.loads((top / "runs" / "reproduced" / "run.json").read_text())
    assert [(s["id"], s["verdict"], s["reason"]) for s in rec2["scenarios"]] == \
        [(s["id"], s["verdict"], s["reason"]) for s in rec["scenarios"]]
    assert (top / "runs" / "reproduced" / "serial.log").read_bytes() == (rundir / "serial.log").read_bytes()
