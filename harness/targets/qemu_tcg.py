"""QEMU with TCG: boots everything, has no VMX (every VMX scenario must SKIP).

The QEMU machinery (command line, QMP monitor, screen read-back) lives here; qemu_kvm.py
runs the same with -accel kvm. The binary is --qemu PATH (python3 -m harness run), else
$LHV_QEMU, else Debian's qemu-system-x86_64.

x2APIC under TCG came with QEMU 8.1; Debian 12's 7.2 has none. qemu_with_x2apic() finds a QEMU
that has it for the firmware matrix's x2APIC hand-off cases: the chosen one, else the one that
tools/fetch_qemu_backports.py unpacks from bookworm-backports into .cache/qemu-backports.
"""

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .. import images
from .. import screen as scr
from ..logparse import parse_log
from .base import Outcome, Target, Unavailable, kill, remove, serial_has_result

OVMF = "/usr/share/ovmf/OVMF.fd"
QEMU = "qemu-system-x86_64"
BACKPORTS_QEMU = Path(__file__).resolve().parents[2] / ".cache" / "qemu-backports" / QEMU
TCG_NO_X2APIC = "TCG doesn't support requested feature: CPUID.01H:ECX.x2apic"
# QEMU: the image waits ~5 s after RESULT before isa-debug-exit; read the
# screen within that window.
QEMU_SCREEN_DELAY_S = 0.5
QEMU_SCREEN_TRIES = 5
QEMU_DEBUG_EXIT = {0x10: "GOOD", 0x11: "SKIP", 0x12: "ERROR", 0x13: "BAD", 0x14: "CRASH"}


class Monitor:
    """Minimal QMP client over a unix socket (synchronous commands, events skipped)."""

    def __init__(self, path, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._buf = b""
        self._read()                               # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP socket closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError("QMP %s: %s" % (name, r["error"].get("desc", r["error"])))

    def quit(self):
        try:
            self.sock.sendall(b'{"execute": "quit"}\n')
        except OSError:
            pass

    def close(self):
        self.sock.close()


class MouseMover:
    """Scripted PS/2 mouse input (RunSpec.mouse_on): once the serial log shows the trigger text,
    a relative move of (+4, +4) through QMP input-send-event every MOVE_EVERY_S (QEMU turns each
    into a 3-byte PS/2 packet while the guest has data reporting on)."""

    MOVE_EVERY_S = 0.05

    def __init__(self, trigger, serial_path):
        self.trigger = trigger.encode() if trigger else None
        self.serial_path = serial_path
        self.triggered = False
        self.moves = 0
        self.error = ""
        self._last = 0.0

    def _seen(self):
        try:
            return self.trigger in self.serial_path.read_bytes()
        except FileNotFoundError:
            return False

    def poll(self, mon):
        if self.trigger is None or mon is None or self.error:
            return
        if not self.triggered:
            self.triggered = self._seen()
            if not self.triggered:
                return
        now = time.monotonic()
        if now - self._last < self.MOVE_EVERY_S:
            return
        self._last = now
        try:
            mon.cmd("input-send-event", events=[{"type": "rel", "data": {"axis": "x", "value": 4}},
                                                {"type": "rel", "data": {"axis": "y", "value": 4}}])
            self.moves += 1
        except (OSError, RuntimeError, ConnectionError) as e:
            self.error = "mouse input through QMP failed: %s" % e


def default_program():
    """The QEMU to run when --qemu is not given: $LHV_QEMU or Debian's."""
    return os.environ.get("LHV_QEMU") or QEMU


def qemu_version(program=QEMU):
    try:
        out = subprocess.run([program, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, timeout=20, text=True).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else None


@functools.lru_cache(maxsize=None)
def tcg_has_x2apic(program):
    """(True, version) when this QEMU's TCG offers x2APIC, else (False, why): asked of QEMU itself,
    a CPU with +x2apic that it either takes or warns about, no guest run (cached per binary)."""
    version = qemu_version(program)
    if version is None:
        return False, "%s does not run" % program
    try:
        out = subprocess.run([program, "-accel", "tcg", "-cpu", "qemu64,+x2apic", "-M", "pc", "-nodefaults",
                              "-display", "none", "-S", "-monitor", "stdio"], input="quit\n",
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, text=True).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, "QEMU %s (%s): the x2APIC probe failed: %s" % (version, program, e)
    if TCG_NO_X2APIC in out:
        return False, "QEMU %s (%s) has no x2APIC under TCG" % (version, program)
    return True, version


def qemu_with_x2apic():
    """(program, "") for a QEMU whose TCG has x2APIC, else (None, every reason found)."""
    reasons = []
    for program in dict.fromkeys([default_program(), str(BACKPORTS_QEMU)]):
        if program == str(BACKPORTS_QEMU) and not BACKPORTS_QEMU.exists():
            reasons.append("%s is not there (tools/setup.sh runs tools/fetch_qemu_backports.py)"
                           % BACKPORTS_QEMU)
            continue
        ok, why = tcg_has_x2apic(program)
        if ok:
            return program, ""
        reasons.append(why)
    return None, "; ".join(reasons)


def qemu_command(spec, rundir, monitor_path, accel, program=QEMU):
    cmd = [program, "-name", "lhv", "-accel", accel,
           "-cpu", spec.cpu_model or ("max" if accel == "tcg" else "host"),
           "-smp", spec.smp or str(spec.cpus), "-m", spec.memory or "256", "-display", "none",
           "-no-reboot",
           "-serial", ("file:" + str(rundir / "serial.log")) if spec.serial else "none",
           "-qmp", "unix:%s,server=on,wait=off" % monitor_path,
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
           "-d", "cpu_reset", "-D", str(rundir / "qemu.log")]
    cmd += list(spec.qemu_args)
    if spec.firmware == "uefi":
        cmd += ["-bios", OVMF]
    if spec.boot == "disk":
        # The hybrid ISO written to a USB stick: a raw hard disk, BIOS (MBR) or UEFI (GPT/ESP).
        iso = spec.iso or images.custom_iso(spec.arch, spec.cmdline)
        cmd += ["-drive", "file=%s,format=raw,if=ide,media=disk,snapshot=on" % iso]
    elif spec.boot == "cdrom" or spec.firmware == "uefi":
        cmd += ["-cdrom", str(spec.iso or images.custom_iso(spec.arch, spec.cmdline))]
        if spec.firmware != "uefi":
            cmd += ["-boot", "d"]
    else:
        cmd += ["-kernel", str(spec.elf or images.require(images.elf_path(spec.arch)))]
        if spec.cmdline:
            cmd += ["-append", spec.cmdline]
    return cmd


def _qemu_screen(mon, spec, rundir, font):
    """Dump the screen through the monitor; returns (kind, rows) or raises."""
    if spec.firmware == "uefi":
        path = rundir / "screen.ppm"
        mon.cmd("screendump", filename=str(path))
        for _ in range(50):
            try:
                img = scr.parse_ppm(path.read_bytes())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
                continue
            (rundir / "screen.png").write_bytes(scr.write_png(*img))
            return "ppm", scr.decode_framebuffer(*img, font)
        raise RuntimeError("screendump produced no readable file")
    path = rundir / "vga.bin"
    mon.cmd("pmemsave", val=0xb8000, size=4000, filename=str(path))
    return "vga", scr.decode_vga_text(path.read_bytes())


def _screen_has_result(mon, spec, rundir, font):
    """No serial port: the run has ended when the screen shows its RESULT line."""
    try:
        kind, rows = _qemu_screen(mon, spec, rundir, font)
    except (OSError, RuntimeError, ValueError, ConnectionError):
        return False
    return scr.screen_facts(rows)["result"] is not None


def _qr_as_serial(o, rundir):
    """No serial port: what the final screen's QR code holds becomes the log that is judged
    (as `judge --photo` does with a photo of a laptop's screen)."""
    from .. import qrphoto
    from ..judge import QR_CUT_MARK
    picture = rundir / "screen.png"
    if o.screen_kind == "vga":
        font = images.font_path()
        qrphoto.render_vga((rundir / "vga.bin").read_bytes(),
                           font.read_bytes() if font.exists() else None).save(picture)
    try:
        text = qrphoto.decode(picture)
    except qrphoto.DecodeError as e:
        o.problems.append("no serial port and no QR code read from the screen: %s" % e)
        return
    (rundir / "screen-qr.txt").write_bytes(text)
    o.logs["serial"] = str(rundir / "screen-qr.txt")
    o.logs["photo"] = str(picture)
    o.qr_cut = QR_CUT_MARK in text


def _screen_agrees(rows, serial_path):
    p = parse_log(serial_path.read_bytes())
    if p.result is None:
        return scr.screen_facts(rows)["result"] is not None
    return scr.check(rows, p.result, {t.id: t.verdict for t in p.tests})[0]


def run_qemu(spec, rundir, accel="tcg", program=QEMU):
    if shutil.which(program) is None:
        raise Unavailable("%s is not installed (apt-get install qemu-system-x86)" % program
                          if program == QEMU else "%s is not an executable (--qemu or LHV_QEMU)" % program)
    if spec.firmware == "uefi" and not os.path.exists(OVMF):
        raise Unavailable("%s is missing (apt-get install ovmf)" % OVMF)
    font = None
    if spec.firmware == "uefi":
        font = scr.load_font(spec.font or images.require(images.font_path()))
    o = Outcome(version=qemu_version(program))
    remove(rundir, "serial.log", "vga.bin", "screen.ppm", "qemu.log", "mouse.txt", "screen-qr.txt")
    mondir = tempfile.mkdtemp(prefix="lhvmon")      # unix socket paths must be short
    monpath = os.path.join(mondir, "m")
    o.command = qemu_command(spec, rundir, monpath, accel, program)
    o.logs = {"serial": str(rundir / "serial.log"), "emulator": str(rundir / "qemu.log"),
              "emulator_stdout": str(rundir / "qemu.out")}
    mon = None
    try:
        with open(rundir / "qemu.out", "w") as out:
            proc = subprocess.Popen(o.command, cwd=rundir, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + spec.timeout
            try:
                try:
                    mon = Monitor(monpath)
                except OSError as e:
                    o.problems.append("cannot reach the QEMU monitor: %s" % e)
                mouse = MouseMover(spec.mouse_on, rundir / "serial.log")
                next_look = time.monotonic() + 1.0
                while proc.poll() is None:
                    mouse.poll(mon)
                    now = time.monotonic()
                    if serial_has_result(rundir / "serial.log"):
                        o.ended = "result"
                        break
                    if not spec.serial and mon is not None and now > next_look:
                        # No serial port: look at the screen about once a second.
                        if _screen_has_result(mon, spec, rundir, font):
                            o.ended = "result"
                            break
                        next_look = time.monotonic() + 1.0
                    if now > deadline:
                        o.ended, o.end_detail = "timeout", "killed after %.0f s" % spec.timeout
                        break
                    time.sleep(0.05)
                if mouse.error:
                    o.problems.append(mouse.error)
                elif spec.mouse_on:
                    (rundir / "mouse.txt").write_text("%d moves after %r\n" % (mouse.moves, spec.mouse_on))
                    o.logs["mouse"] = str(rundir / "mouse.txt")
                if proc.poll() is None and mon is not None:
                    tries = QEMU_SCREEN_TRIES if o.ended == "result" else 1
                    for i in range(tries):
                        time.sleep(QEMU_SCREEN_DELAY_S)
                        if proc.poll() is not None:
                            break
                        try:
                            o.screen_kind, o.screen_rows = _qemu_screen(mon, spec, rundir, font)
                            o.screen_error = ""
                        except (OSError, RuntimeError, ValueError, ConnectionError) as e:
                            o.screen_error = "screen read-back failed: %s" % e
                            continue
                        # The serial RESULT can be ahead of the screen: retry until the
                        # screen agrees (or the tries run out; the judge reports it then).
                        if not spec.serial or _screen_agrees(o.screen_rows, rundir / "serial.log"):
                            break
                    o.end_state = "quit_by_harness" if o.ended == "result" else "killed_timeout"
                    mon.quit()
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
            finally:
                kill(proc)
    finally:
        if mon is not None:
            mon.close()
        shutil.rmtree(mondir, ignore_errors=True)
    o.exit_status = proc.returncode
    if not spec.serial and o.screen_kind:
        _qr_as_serial(o, rundir)
    if o.screen_kind:
        o.logs["screen"] = str(rundir / ("screen.ppm" if o.screen_kind == "ppm" else "vga.bin"))
    elif not o.screen_error:
        o.screen_error = "no screen dump (QEMU ended before the harness could read it)"
    try:
        qlog = (rundir / "qemu.log").read_text(errors="replace")
    except FileNotFoundError:
        qlog = ""
    if o.end_state == "" and proc.returncode is not None and proc.returncode & 1 \
            and (proc.returncode >> 1) in QEMU_DEBUG_EXIT:
        o.end_state = "debug_exit %s" % QEMU_DEBUG_EXIT[proc.returncode >> 1]
    if "Triple fault" in qlog:
        o.ended, o.end_detail = "crash", "qemu: triple fault (see qemu.log)"
    elif o.ended is None:
        if serial_has_result(o.logs["serial"]):
            o.ended = "result"
        else:
            qout = (rundir / "qemu.out").read_text(errors="replace").strip()
            o.ended = "exited"
            o.end_detail = "qemu exited (status %s) before RESULT%s" % (
                proc.returncode, (": " + qout.splitlines()[-1]) if qout else "")
            if not o.end_state:
                o.end_state = "exited"
    return o


class QemuTcg(Target):
    name = "qemu-tcg"
    accel = "tcg"
    firmwares = ("bios", "uefi")

    def __init__(self, program=None):
        program = program or default_program()
        # A path is made absolute: QEMU runs with the run directory as its working directory.
        super().__init__(os.path.abspath(program) if os.sep in program else program)

    def version(self):
        return qemu_version(self.program)

    def display_name(self):
        """qemu-tcg for Debian's QEMU; another one adds its version: qemu-tcg-10.0.2."""
        if self.program == QEMU:
            return self.name
        return "%s-%s" % (self.name, self.version() or "unknown")

    def prepare(self, spec):
        super().prepare(spec)
        if spec.firmware == "uefi" and spec.boot == "kernel":
            spec.boot = "cdrom"               # UEFI has no -kernel path: GRUB from the ISO

    def describe(self, spec):
        bits = [spec.boot_label()] + (["x%d" % spec.cpus] if spec.cpus != 2 else [])
        # The firmware matrix's variations (harness/tests/test_firmware_matrix.py).
        bits += (["smp=" + spec.smp] if spec.smp else []) + (["m" + spec.memory] if spec.memory else [])
        bits += [] if spec.serial else ["noserial"]
        if spec.qemu_args:
            bits.append(re.sub(r"[^A-Za-z0-9_.=,-]+", "_", "".join(
                a.lstrip("-") + "_" for a in spec.qemu_args).strip("_"))[:64])
        return bits

    def medium(self, spec):
        return spec.boot

    def run(self, spec, rundir):
        return run_qemu(spec, rundir, accel=self.accel, program=self.program)
