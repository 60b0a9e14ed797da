"""What every target is: the interface the runner calls, and the record of one run.

A target is one place the image can boot (an emulator, a hypervisor, a lab of machines).
It says whether it can run here and why not, which version it is, which CPU models it
takes, and boots one RunSpec into a run directory, returning an Outcome: how the run
ended, where the logs are and what the screen said.  Judging the serial log is the
runner's job, never the target's.

Adding a target: a module in this package with a Target subclass, and a line in TARGETS
(harness/targets/__init__.py).  A target that cannot watch the run itself (VMware) returns
an Outcome with ended="bundle"; one that runs remotely (a LAVA lab) submits, waits up to
spec.timeout and copies the serial log into the run directory before returning.
"""

import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

RE_RESULT_LINE = re.compile(rb"(?m)^LHV RESULT: ")


class Unavailable(Exception):
    """The target cannot run here (or not this spec); the message says why."""


@dataclass
class Outcome:
    ended: str = None             # "result", "timeout", "crash", "exited", "bundle"
    end_detail: str = ""
    end_state: str = ""           # how the emulator stopped (magic_break, debug_exit, ...)
    problems: list = field(default_factory=list)   # contract violations seen by the target
    logs: dict = field(default_factory=dict)        # name -> path; "serial" is judged
    screen_rows: list = None
    screen_kind: str = None
    screen_error: str = ""
    version: str = None
    exit_status: int = None
    command: list = None
    qr_cut: bool = False          # logs["serial"] is a QR code's text cut to fit (no serial port)


class Target:
    """One target.  Subclasses set `name` and override what differs."""

    name = None                   # --target word, known_bugs.py's target, reports
    firmwares = ("bios",)         # --firmware values it boots; others are not run there
    default_cpus = 2
    boot_overhead_s = 60          # default timeout = this + 3 x the selected scenarios' budgets
    uses_cpu_model = True         # --cpu-model values are given to it
    has_screen = True             # False: no screen comes back (serial only), none is checked

    def __init__(self, program=None):
        self.program = program    # the binary to run, where the user may choose it

    def available(self):
        """(True, what runs) or (False, why not): cheap checks, no boot."""
        return True, self.name

    def version(self):
        """The target's version string (for reports and known_bugs.py), or None."""
        return None

    def models(self):
        """The CPU models this target takes, or None when any --cpu-model goes through as given."""
        return None

    def default_model(self):
        return None

    def program_path(self):
        """The binary that runs, for reports (None: the target's fixed one)."""
        return self.program

    def display_name(self):
        """The target as reports name it (a Bochs build adds its version: bochs-3.0)."""
        return self.name

    def prepare(self, spec):
        """Fill in this target's defaults before the run (CPU count, boot path)."""
        if spec.cpus is None:
            spec.cpus = self.default_cpus

    def describe(self, spec):
        """What tells this spec's runs apart on this target, e.g. ["tigerlake x2"]."""
        return []

    def medium(self, spec):
        """What the image boots from: "kernel", "cdrom", "disk" or None."""
        return "cdrom"

    def run(self, spec, rundir):
        """Boot spec with rundir as working directory; return an Outcome or raise Unavailable."""
        raise NotImplementedError


def serial_has_result(path):
    try:
        with open(path, "rb") as f:
            return RE_RESULT_LINE.search(f.read()) is not None
    except FileNotFoundError:
        return False


def kill(proc):
    """Stop an emulator started with start_new_session=True, with its children."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def remove(rundir, *names):
    """Delete stale outputs of an earlier run in the same directory."""
    for n in names:
        try:
            (rundir / n).unlink()
        except FileNotFoundError:
            pass
