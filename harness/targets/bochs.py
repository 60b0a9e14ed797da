"""Bochs: any build, Debian's 2.7 or one built from source (tools/build-bochs.sh).

The binary is --bochs PATH (python3 -m harness run), else $LHV_BOCHS, else `bochs` on PATH.
What the harness needs to know about a build it reads from the build itself, once:
`bochs --help` gives the version ("Bochs x86 Emulator 3.0") and the usage, whose
"-debugger" line says the internal debugger must be asked for with -dbg (from 3.0; 2.7 and
2.8 reject the flag; without it 3.0 ignores -rc, never stops at the magic breakpoint and
leaves no screen dump), and `bochs --help cpu` lists the CPU models it was built with.
Versions the rest depends on:

  2.7, 2.8, 3.0     plugin_ctrl takes extfpuirq=0
  3.0.devel         (a snapshot after 3.0, "Built from GitHub snapshot after release 3.0")
                    from commit 3dba2e83d (2026-08-18) extfpuirq is a standard plugin and
                    `extfpuirq=0` panics "Plugin 'extfpuirq' not found" (9f3ac50dd turned
                    only extfpuirq=1 into a warning); the item is left out for every version
                    after 3.0, so an older 3.0.devel just loads the plugin by its default.
"""

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import images
from .. import screen as scr
from .base import Outcome, Target, Unavailable, kill, remove, serial_has_result

DEFAULT_MODEL = "corei7_skylake_x"
IPS = 60000000
# After RESULT: how long the image may take to stop (drain, magic break).
STOP_GRACE_S = 15.0
PROBE_TIMEOUT_S = 20

# Debugger commands run from -rc: continue; at the image's magic breakpoint
# (after RESULT and the UART drain) save VGA text memory and quit.
BOCHS_RC = 'c\nwritemem "vga.bin" 0xb8000 4000\nquit\n'

_BENIGN_PANIC = ("Shutdown port: shutdown requested",)


def default_program():
    """The Bochs to run when --bochs is not given: $LHV_BOCHS or Debian's."""
    return os.environ.get("LHV_BOCHS") or "bochs"


def version_key(version):
    """Orderable form of a Bochs version: "2.7" -> (2, 7, 0, 0); "3.0.devel", a snapshot
    after release 3.0, -> (3, 0, 0, 1), after 3.0 and before the next release.
    None when the string is not a version."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(.*)$", version or "")
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), 1 if m.group(4) else 0)


def takes_extfpuirq(version):
    """Whether plugin_ctrl may name extfpuirq (see the module text): every release up to 3.0."""
    key = version_key(version)
    return key is None or key <= (3, 0, 0, 0)


@dataclass(frozen=True)
class Build:
    """What one Bochs binary says about itself."""
    path: str
    version: str = None           # "2.7", "3.0", "3.0.devel"; None if --help did not say
    models: tuple = ()            # from --help cpu; () if it listed none
    has_debugger: bool = False    # the usage lists -rc (built with --enable-debugger)
    needs_dbg: bool = False       # the usage lists -debugger: -rc works only with -dbg


def _ask(path, *args):
    try:
        return subprocess.run([path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S, text=True,
                              errors="replace").stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def parse_models(text):
    """The model names `bochs --help cpu` prints between its heading and the blank line."""
    models, inside = [], False
    for line in text.splitlines():
        if line.startswith("Supported CPU models:"):
            inside = True
        elif inside and re.fullmatch(r"[a-z0-9_]+", line.strip()):
            models.append(line.strip())
        elif inside and models and not line.strip():
            break
    return tuple(models)


def parse_help(path, usage, cpu_help):
    m = re.search(r"Bochs x86 Emulator (\S+)", usage + cpu_help)
    version = m.group(1) if m else None
    return Build(path=path, version=version, models=parse_models(cpu_help),
                 has_debugger=re.search(r"(?m)^\s+-rc\b", usage) is not None,
                 needs_dbg=re.search(r"(?m)^\s+-debugger\b", usage) is not None)


_builds = {}


def probe(program):
    """The Build of program (a path or a name on PATH), cached while the file is unchanged;
    None if it is not an executable."""
    path = shutil.which(program)
    if path is None:
        return None
    path = os.path.realpath(path)
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _builds:
        _builds[key] = parse_help(path, _ask(path, "--help"), _ask(path, "--help", "cpu"))
    return _builds[key]


def bochsrc_text(iso, model, cpus, memory_mb=256, ips=IPS, version=None):
    """The generated Bochs configuration.

    Display: Debian's Bochs 2.7 has no `nogui`; the rfb library with
    timeout=0 starts at once without a client, needs no X server, and takes
    the first free TCP port from 5900 up, so parallel runs do not clash.
    """
    extfpuirq = "extfpuirq=0, " if takes_extfpuirq(version) else ""
    return "\n".join([
        "# generated by python3 -m harness",
        "plugin_ctrl: unmapped=1, biosdev=1, speaker=0, %sparallel=0, "
        "serial=1, iodebug=1" % extfpuirq,
        "config_interface: textconfig",
        'display_library: rfb, options="timeout=0"',
        "cpu: model=%s, count=%d, ips=%d, reset_on_triple_fault=0" % (model, cpus, ips),
        "memory: guest=%d, host=%d" % (memory_mb, memory_mb),
        "romimage: file=$BXSHARE/BIOS-bochs-latest, options=fastboot",
        "vgaromimage: file=$BXSHARE/VGABIOS-lgpl-latest",
        "ata0-master: type=cdrom, path=%s, status=inserted" % iso,
        "boot: cdrom",
        "com1: enabled=1, mode=file, dev=serial.log",
        "log: bochs.log",
        "panic: action=fatal",
        "error: action=report",
        "info: action=report",
        "debug: action=ignore",
        "magic_break: enabled=1",
        "port_e9_hack: enabled=1",
        "",
    ])


def command(build):
    """The Bochs command line for a build (-dbg where the build needs it for -rc)."""
    return [build.path, "-q"] + (["-dbg"] if build.needs_dbg else []) + \
        ["-f", "bochsrc", "-rc", "bochs.rc"]


def bochs_crash(log_text, out_text):
    """A reason string if Bochs' log shows a crash (panic, triple fault, reset)."""
    for line in log_text.splitlines():
        if ">>PANIC<<" in line and not any(b in line for b in _BENIGN_PANIC):
            return "bochs: " + line.split(">>PANIC<<", 1)[1].strip()
    resets = log_text.count("bx_pc_system_c::Reset(")
    if resets > 1:
        return "bochs: the machine was reset %d times" % (resets - 1)
    m = re.search(r"Bochs is exiting with the following message:\n(.*)\n", out_text)
    if m and not any(b in m.group(1) for b in _BENIGN_PANIC):
        return "bochs: " + m.group(1).strip()
    return None


RFB_START_LOCK = Path(tempfile.gettempdir()) / "lhv-bochs-rfb.lock"


@contextlib.contextmanager
def _start_lock():
    """One Bochs at a time through its RFB start-up. Two Bochs starting together can both bind
    port 5900 (the socket has SO_REUSEADDR), one then fails listen(), and Bochs 2.7 goes on
    trying bind() on that already-bound socket for every other port and gives up ("could not
    bind any port between 5900 and 5949"). Seen in about 1 run in 100 under pytest -n 2."""
    with open(RFB_START_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _wait_rfb_listening(proc, log_path, limit_s=10.0):
    """Until this Bochs listens (or failed, or exited): then the next one may start."""
    end = time.monotonic() + limit_s
    while proc.poll() is None and time.monotonic() < end:
        try:
            text = log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if "listening for connections" in text or "could not bind any port" in text.lower():
            return
        time.sleep(0.02)


class Bochs(Target):
    name = "bochs"
    default_cpus = 1

    def __init__(self, program=None):
        super().__init__(program or default_program())

    def build(self):
        return probe(self.program)

    def available(self):
        b = self.build()
        if b is None:
            if self.program == "bochs":
                return False, "bochs is not installed (apt-get install bochs bochsbios vgabios)"
            return False, "%s is not an executable (--bochs or LHV_BOCHS)" % self.program
        if b.version is None:
            return False, "`%s --help` does not say \"Bochs x86 Emulator <version>\"" % b.path
        if not b.has_debugger:
            return False, ("Bochs %s (%s) has no internal debugger (configure --enable-debugger; "
                           "tools/build-bochs.sh): the harness stops it at the image's magic "
                           "breakpoint with -rc to save the screen" % (b.version, b.path))
        return True, "Bochs %s (%s)" % (b.version, b.path)

    def version(self):
        b = self.build()
        return b.version if b else None

    def models(self):
        b = self.build()
        return b.models if b and b.models else None

    def default_model(self):
        return DEFAULT_MODEL

    def program_path(self):
        b = self.build()
        return b.path if b else self.program

    def display_name(self):
        v = self.version()
        return "bochs-%s" % v if v else "bochs"

    def describe(self, spec):
        return ["%s x%d" % (spec.cpu_model or DEFAULT_MODEL, spec.cpus)]

    def check_model(self, model):
        """Unavailable unless this build has the model."""
        models = self.models()
        if models and model not in models:
            raise Unavailable("Bochs %s (%s) has no CPU model %s; it has: %s" % (
                self.version(), self.build().path, model, ", ".join(models)))

    def run(self, spec, rundir):
        ok, why = self.available()
        if not ok:
            raise Unavailable(why)
        build = self.build()
        model = spec.cpu_model or DEFAULT_MODEL
        self.check_model(model)
        if not 1 <= spec.cpus <= 8:
            raise ValueError("bochs CPU count must be 1..8")
        if spec.firmware != "bios":
            raise Unavailable("bochs boots the image by BIOS only")
        iso = spec.iso or images.custom_iso(spec.arch, spec.cmdline)
        return _boot(spec, rundir, build, model, iso)


def _boot(spec, rundir, build, model, iso):
    o = Outcome(version=build.version)
    (rundir / "bochsrc").write_text(bochsrc_text(Path(iso).resolve(), model, spec.cpus,
                                                 version=build.version))
    (rundir / "bochs.rc").write_text(BOCHS_RC)
    remove(rundir, "serial.log", "vga.bin")
    env = dict(os.environ)
    env.setdefault("BXSHARE", "/usr/share/bochs")
    o.command = command(build)
    o.logs = {"serial": str(rundir / "serial.log"), "emulator": str(rundir / "bochs.log"),
              "emulator_stdout": str(rundir / "bochs.out"), "config": str(rundir / "bochsrc")}
    with open(rundir / "bochs.out", "w") as out, _start_lock():
        proc = subprocess.Popen(o.command, cwd=rundir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            _wait_rfb_listening(proc, rundir / "bochs.log")
        except BaseException:
            kill(proc)
            raise
    try:
        _watch(proc, spec, rundir, o)
    finally:
        kill(proc)
    o.exit_status = proc.returncode
    _conclude(o, rundir, proc.returncode)
    return o


def _watch(proc, spec, rundir, o):
    """Until Bochs stops by itself, overstays RESULT, or runs past the timeout."""
    deadline = time.monotonic() + spec.timeout
    result_at = None
    while proc.poll() is None:
        now = time.monotonic()
        if result_at is None and serial_has_result(rundir / "serial.log"):
            result_at = now
        if result_at is not None and now - result_at > STOP_GRACE_S:
            o.problems.append("image did not stop within %.0f s after RESULT "
                              "(no magic breakpoint)" % STOP_GRACE_S)
            o.end_state = "killed_after_result"
            return
        if now > deadline:
            o.ended, o.end_detail = "timeout", "killed after %.0f s" % spec.timeout
            o.end_state = "killed_timeout"
            # SIGINT drops Bochs into its debugger, which goes on with the
            # rc file: the screen is saved and Bochs quits by itself.
            try:
                os.kill(proc.pid, signal.SIGINT)
                proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            return
        time.sleep(0.1)


def _conclude(o, rundir, returncode):
    """How the run ended, from Bochs' stdout and log, and the screen it saved."""
    out_text = (rundir / "bochs.out").read_text(errors="replace")
    try:
        log_text = (rundir / "bochs.log").read_text(errors="replace")
    except FileNotFoundError:
        log_text = ""
    crash = bochs_crash(log_text, out_text)
    # Where CPU0 was when Bochs stopped (its debugger prints it on exit/interrupt).
    where = re.findall(r"^\(0\)\.?\[?\d*\]? ?\[0x[0-9a-f]+\] (\S+) \(unk\. ctxt\): (.*?)\s*;",
                       out_text, re.M)
    where = "; CPU0 at %s: %s" % where[-1] if where else ""
    if o.ended == "timeout":
        o.end_detail += where
    elif crash:
        crash += where
    if not o.end_state:
        if "Magic breakpoint" in out_text:
            o.end_state = "magic_break"
        elif "Shutdown port: shutdown requested" in log_text + out_text:
            o.end_state = "shutdown_port"
        else:
            o.end_state = "exited"
    if o.ended is None:
        if crash:
            o.ended, o.end_detail = "crash", crash
        elif serial_has_result(rundir / "serial.log"):
            o.ended = "result"
        else:
            o.ended, o.end_detail = "exited", "bochs exited (%s) before RESULT" % returncode
    if (rundir / "vga.bin").exists():
        o.screen_kind = "vga"
        o.logs["screen"] = str(rundir / "vga.bin")
        o.screen_rows = scr.decode_vga_text((rundir / "vga.bin").read_bytes())
    else:
        o.screen_error = "no screen dump (Bochs never reached the magic breakpoint)"
