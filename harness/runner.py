"""One run: build the command line, boot on a target, judge, check the screen,
and produce the run record (the dict that goes into the JSON report)."""

import datetime
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import images
from . import registry as regmod
from . import screen as scr
from . import targets as T
from . import verdicts as V
from .judge import QR_CUT_MARK, Context, cmdline_value, judge
from .logparse import parse_log

TARGETS = tuple(T.TARGETS)


@dataclass
class RunSpec:
    target: str
    program: str = None           # the target's binary where it can be chosen (bochs: --bochs)
    arch: str = "amd64"
    cpu_model: str = None
    cpus: int = None
    firmware: str = "bios"
    boot: str = "kernel"          # qemu: "kernel" (-kernel ELF, BIOS), "cdrom" (the ISO) or "disk" (the ISO as a USB stick)
    opt: str = None               # passed as given: lhv_opt=<opt>
    tests: str = None
    inject: str = None
    extra: str = None             # anything else for the command line, verbatim
    timeout: float = None
    out: str = None
    iso: str = None               # override image paths
    elf: str = None
    font: str = None
    mouse_on: str = None          # qemu: once serial.log shows this text, move the mouse by QMP until RESULT
    # QEMU only, for the firmware matrix (harness/tests/test_firmware_matrix.py):
    memory: str = None            # -m (default 256 MiB), e.g. "6G"
    smp: str = None               # -smp topology instead of the CPU count, e.g. "32,sockets=2,cores=16"
    serial: bool = True           # False: no serial port at all (-serial none); judged from the screen
    qemu_args: tuple = ()         # more QEMU arguments, verbatim (-machine pit=off, -device ...)

    @property
    def cmdline(self):
        parts = []
        if self.opt is not None:
            parts.append("lhv_opt=%s" % self.opt)
        if self.tests:
            parts.append("tests=%s" % self.tests)
        if self.inject:
            parts.append("inject=%s" % self.inject)
        if self.extra:
            parts.append(self.extra)
        return " ".join(parts)

    def boot_label(self):
        """bios-kernel, bios-cdrom, bios-disk, uefi (GRUB from the ISO as a CD), uefi-disk."""
        if self.firmware == "uefi":
            return "uefi-disk" if self.boot == "disk" else "uefi"
        return "bios-" + self.boot

    def target_obj(self):
        """The Target this spec runs on (None for a log judged offline)."""
        return T.get(self.target, self.program) if self.target in T.TARGETS else None

    def _bits(self):
        t = self.target_obj()
        return [t.display_name() if t else self.target, self.arch] + (t.describe(self) if t else [])

    def label(self):
        """The run directory's name: bochs-2.7-amd64-tigerlake-x2[-<command line>]."""
        bits = [b.replace(" ", "-") for b in self._bits()]
        if self.cmdline:
            bits.append(re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.cmdline)[:60])
        return "-".join(bits)

    def name(self):
        """Short human name for tables and JUnit suites: bochs-2.7/amd64/tigerlake x2."""
        n = "/".join(self._bits())
        if self.cmdline:
            n += " [%s]" % self.cmdline
        return n


def load_registry(arch, elf=None):
    path = Path(elf) if elf else images.elf_path(arch)
    if not path.exists():
        return None
    return regmod.load(path)


def default_timeout(spec, reg):
    """Boot overhead plus a generous multiple of the selected scenarios' budgets."""
    t = spec.target_obj()
    base = t.boot_overhead_s if t else 60
    if spec.firmware == "uefi":
        base += 30
    if reg is None:
        return base + 120
    opt = reg.default_opt()
    try:
        opt = int(cmdline_value(spec.cmdline, "lhv_opt") or "", 16)
    except ValueError:
        pass
    sel = set(reg.selected(spec.arch, opt, cmdline_value(spec.cmdline, "tests")))
    budget = sum(s.budget_ms for s in reg.scenarios if s.id in sel) / 1000.0
    return min(base + repeat_seconds(spec.cmdline, 3 * budget), 1800)


def repeat_seconds(cmdline, round_s):
    """Time for the rounds of repeat=/repeat_ms=/repeat_until= (lhv/repeat.c), given the time
    allowed for one round: N rounds; or T ms of the image's time, counted 30 times over (an
    emulator's second of image time takes several seconds of wall time under load) plus the
    round that is running when T ends; the whole limit when only repeat_until=fail bounds it."""
    try:
        rounds = int(cmdline_value(cmdline, "repeat") or "0", 0)
        ms = int(cmdline_value(cmdline, "repeat_ms") or "0", 0)
    except ValueError:
        return round_s
    if not rounds and not ms:
        return 1800 if cmdline_value(cmdline, "repeat_until") else round_s
    limits = []
    if rounds:
        limits.append(round_s * rounds)
    if ms:
        limits.append(round_s + 30 * ms / 1000.0)
    return min(limits)


def new_rundir(spec):
    if spec.out:
        d = Path(spec.out)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        d = images.images_dir() / "runs" / ("%s-%s" % (stamp, spec.label()))
    d.mkdir(parents=True, exist_ok=True)
    return d.resolve()


def run(spec):
    """Boot spec on its target and return the run record (a dict)."""
    target = T.get(spec.target, spec.program)
    target.prepare(spec)
    reg = None
    try:
        reg = load_registry(spec.arch, spec.elf)
    except regmod.ElfError:
        reg = None
    if spec.timeout is None:
        spec.timeout = default_timeout(spec, reg)
    rundir = new_rundir(spec)
    t0 = time.monotonic()
    try:
        ok, why = target.available()
        if not ok:
            raise T.Unavailable(why)
        o = target.run(spec, rundir)
    except T.Unavailable as e:
        return base_record(spec, rundir, V.UNAVAILABLE, str(e), time.monotonic() - t0)
    except images.ImageError as e:
        return base_record(spec, rundir, V.ERROR, "image: %s" % e, time.monotonic() - t0)
    wall = time.monotonic() - t0
    if o.ended == "bundle":
        rec = base_record(spec, rundir, V.BUNDLE, o.end_detail or "bundle written to %s" % rundir,
                          wall)
        rec["logs"] = o.logs
        return rec
    # Known bugs match on the model that ran: Bochs' default when none was asked for.
    model = spec.cpu_model or spec.target_obj().default_model()
    ctx = Context(target=spec.target, arch=spec.arch, cpu_model=model, cpus=spec.cpus,
                  firmware=spec.firmware, target_version=o.version, tests=cmdline_value(spec.cmdline, "tests"),
                  opt=spec.opt, inject=spec.inject, cmdline=spec.cmdline, ended=o.ended,
                  end_detail=o.end_detail, registry=reg, qr_cut=o.qr_cut)
    serial_path = Path(o.logs["serial"])
    text = serial_path.read_bytes() if serial_path.exists() else b""
    rec = record(spec, ctx, judge(parse_log(text), ctx), o, wall, rundir)
    rec["images"] = {"elf": str(Path(spec.elf).resolve() if spec.elf else images.elf_path(spec.arch)),
                     "iso": str(spec.iso) if spec.iso else None}
    from .bundle import image_facts       # what booted, hashed now: a later `make` replaces it
    rec["image_facts"] = image_facts(rec, rundir)
    save_record(rec, rundir)
    return rec


RUN_RECORD = "run.json"


def save_record(rec, rundir):
    """The run record next to the logs: what `python3 -m harness bundle` reads back."""
    try:
        (Path(rundir) / RUN_RECORD).write_text(json.dumps(rec, indent=1, default=str) + "\n")
    except OSError:
        pass


def base_record(spec, rundir, verdict, reason, wall):
    t = spec.target_obj()
    return {
        "name": spec.name(),
        "target": spec.target,
        "target_program": t.program_path() if t else None,
        "arch": spec.arch,
        "cpu_model": spec.cpu_model,
        "cpus": spec.cpus,
        "firmware": spec.firmware,
        "boot": t.medium(spec) if t else None,
        "options": {"opt": spec.opt, "tests": spec.tests, "inject": spec.inject,
                    "extra": spec.extra, "cmdline": spec.cmdline},
        # The firmware matrix's QEMU variations, for the bundle's reproduce.sh.
        "qemu": {"memory": spec.memory, "smp": spec.smp, "serial": spec.serial,
                 "args": list(spec.qemu_args)},
        "timeout_s": spec.timeout,
        "wall_s": round(wall, 3),
        "verdict": verdict,
        "effective_verdict": verdict,
        "reason": reason,
        "run_dir": str(rundir) if rundir else None,
        "logs": {},
        "scenarios": [],
        "missing": [],
        "problems": [],
        "screen": {"checked": False, "ok": None, "reason": "", "kind": None},
    }


NO_VGA_ART = 0x2000       # LHV_OPT bit: the image draws nothing on the screen


def screen_off_reason(j, reg):
    """Why the screen is not expected to show anything (NO_VGA_ART), or ''."""
    bit = NO_VGA_ART
    if reg is not None:
        bit = next((o.value for o in reg.options if o.name == "NO_VGA_ART"), bit)
    try:
        opt = int((j.banner or {}).get("opt", ""), 16)
    except ValueError:
        return ""
    return "NO_VGA_ART (0x%x) set: the image draws nothing" % bit if opt & bit else ""


def apply_screen(rec, j, rows, kind, error="", reg=None, has_screen=True, qr_cut=False):
    """Check the decoded screen against the judged serial log; may turn the
    run into a harness ERROR (the screen must say what serial says).  qr_cut: the
    log is a cut QR code's text (no serial port), whose reasons are left out."""
    scrn = {"checked": False, "ok": None, "reason": error, "kind": kind}
    off = screen_off_reason(j, reg)
    if not has_screen:
        scrn["reason"] = error or "the target has no screen to read back"
    elif off:
        scrn["reason"] = off
    elif j.image_result is not None and j.verdict not in (V.NO_OUTPUT, V.CRASH, V.TIMEOUT):
        if rows is None:
            scrn.update(checked=True, ok=False, reason=error or "no screen read back")
        else:
            ok, why, facts = scr.check(rows, j.image_result,
                                       {s.id: s.verdict for s in j.scenarios},
                                       None if qr_cut else {s.id: s.reason for s in j.scenarios})
            scrn.update(checked=True, ok=ok, reason=why, **facts)
    if rows is not None:
        scrn["text"] = rows
    rec["screen"] = scrn
    if scrn["checked"] and not scrn["ok"]:
        rec["problems"].append("screen: " + scrn["reason"])
        if rec["verdict"] in (V.GOOD, V.SKIP, V.BAD):
            rec["verdict"] = V.ERROR
            rec["effective_verdict"] = V.ERROR
            rec["reason"] = "screen disagrees with serial: " + scrn["reason"]


def record(spec, ctx, j, o, wall, rundir):
    rec = base_record(spec, rundir, j.verdict, j.reason, wall)
    rec.update(j.to_dict())
    rec["target_version"] = o.version
    rec["ended"] = o.ended
    rec["end_detail"] = o.end_detail
    rec["end_state"] = o.end_state
    rec["emulator_exit_status"] = o.exit_status
    rec["command"] = o.command
    rec["logs"] = dict(o.logs)
    if o.problems:
        rec["problems"] += o.problems
        if rec["verdict"] in (V.GOOD, V.SKIP, V.BAD):
            rec["verdict"] = rec["effective_verdict"] = V.ERROR
            rec["reason"] = "; ".join(o.problems)
    t = spec.target_obj()
    apply_screen(rec, j, o.screen_rows, o.screen_kind, o.screen_error, ctx.registry,
                 has_screen=t.has_screen if t else True, qr_cut=ctx.qr_cut)
    return rec


def judge_photo(photo, **kw):
    """Decode the final screen's QR code from a picture (a phone photo, a screenshot, a rendered
    VGA dump) and judge its text exactly as a serial log is judged; returns a run record."""
    import tempfile
    from . import qrphoto
    text = qrphoto.decode(photo)
    qr_text = Path(tempfile.mkdtemp(prefix="lhv-photo-")) / "qr.txt"
    qr_text.write_bytes(text)
    rec = judge_file(qr_text, qr_cut=QR_CUT_MARK in text, **kw)
    rec["name"] = "photo: %s" % photo
    rec["logs"]["photo"] = str(photo)
    rec["qr_text"] = text.decode("utf-8", "replace")
    return rec


def judge_file(serial, arch=None, elf=None, target="judge", cpu_model=None, tests=None,
               screen=None, screen_kind=None, font=None, target_version=None, qr_cut=False):
    """Judge a serial log captured elsewhere; returns a run record."""
    text = Path(serial).read_bytes()
    p = parse_log(text)
    arch = arch or (p.banner or {}).get("arch")
    reg = None
    if elf or arch in images.ARCHES:
        try:
            reg = load_registry(arch, elf)
        except regmod.ElfError:
            reg = None
    ctx = Context(target=target, arch=arch, cpu_model=cpu_model, tests=tests, registry=reg,
                  target_version=target_version, qr_cut=qr_cut)
    j = judge(p, ctx)
    spec = RunSpec(target=target, arch=arch or "?", cpu_model=cpu_model, tests=tests, cpus=0)
    rec = base_record(spec, None, j.verdict, j.reason, 0.0)
    rec["name"] = "%s: %s" % (target, serial)
    rec["target_program"] = None          # judged here, run elsewhere
    rec["boot"] = (p.banner or {}).get("boot")
    rec["firmware"] = (p.banner or {}).get("boot")
    rec.update(j.to_dict())
    rec["registry"] = reg.path if reg else None
    rec["logs"] = {"serial": str(serial)}
    rows, err = None, ""
    if screen:
        kind = screen_kind or ("ppm" if str(screen).endswith(".ppm") else "vga")
        try:
            f = None
            if kind == "ppm":
                f = scr.load_font(font or images.require(images.font_path()))
            rows = scr.read_rows(screen, kind, f)
        except (OSError, ValueError, images.ImageError) as e:
            err = "cannot read screen: %s" % e
        rec["logs"]["screen"] = str(screen)
        apply_screen(rec, j, rows, kind, err, reg)
    return rec
