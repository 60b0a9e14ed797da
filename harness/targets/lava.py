"""LAVA: the lab engine Linaro and KernelCI run on real x86 machines.

Two job definitions come out of one RunSpec (`python3 -m harness lava` writes both):

- `device_type: qemu` (lava_job(spec, "qemu")): deploy the multiboot ELF `to: tmpfs` as `kernel`
  with `image_arg: -kernel {kernel} -append "<command line>"`, `boot: method: qemu`.  This is the
  one the `lava` target runs here, without a server: `lava-run` from Debian's lava-dispatcher
  against a hand-written, rendered qemu device dictionary (device_yaml()), QEMU TCG (no VMX:
  every scenario SKIPs).
- `device_type: x86` (lava_job(spec, "x86")): the lab template for a real machine: the ELF
  deployed `to: tftp` and booted by iPXE (`boot: method: ipxe`) with explicit commands: iPXE
  loads a multiboot kernel itself and passes the command line (`kernel <url> <words>`), so no
  `console=`/`lava_mac=` words reach the image (it refuses unknown words).  `--lab-boot grub`
  writes the same for a GRUB-booted machine (`boot: method: grub`, `multiboot` command).

Both share one `monitors` test action: the image prints nothing a shell could answer, so
LAVA only watches COM1.  It starts at the banner, ends at `LHV RESULT: `, and each
`TEST <id>: <VERDICT>` line becomes a LAVA test case through `fixupdict` (GOOD -> pass,
BAD/ERROR/TIMEOUT -> fail, SKIP -> skip) in the test suite `lhv`.
"""

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

from .. import images
from .base import Outcome, Target, Unavailable, kill

LAVA_RUN = "lava-run"
SUITE = "lhv"
START = r"LHV \S+ arch="
END = "LHV RESULT: "
PATTERN = r"TEST (?P<test_case_id>[A-Za-z0-9_.-]+): (?P<result>GOOD|BAD|ERROR|TIMEOUT|SKIP)"
FIXUPDICT = {"GOOD": "pass", "BAD": "fail", "ERROR": "fail", "TIMEOUT": "fail", "SKIP": "skip"}
LAB_BOOTS = ("ipxe", "grub")
RE_BANNER = re.compile(START)
QEMU_OPTIONS = ["-nographic", "-nic none", "-no-reboot", "-machine pc", "-m 256",
                "-device isa-debug-exit,iobase=0xf4,iosize=0x04"]


def lava_verdict(verdict):
    """What LAVA records for a scenario verdict of the image (the fixupdict)."""
    return FIXUPDICT.get(verdict)


def _minutes(seconds):
    return {"minutes": max(1, int(-(-seconds // 60)))}


def _sha256(path):
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def monitor_test(timeout_s):
    return {"test": {"timeout": _minutes(timeout_s), "monitors": [
        {"name": SUITE, "start": START, "end": END, "pattern": PATTERN,
         "fixupdict": dict(FIXUPDICT)}]}}


def _timeouts(timeout_s):
    return {"job": _minutes(timeout_s + 300), "action": _minutes(timeout_s + 60),
            # The monitor waits for the next TEST line with the connection timeout, and with
            # repeat= none comes before the last round ends: no shorter limit than the test's.
            "connection": _minutes(timeout_s + 60)}


def lava_job(spec, device_type="qemu", kernel_url=None, lab_boot="ipxe"):
    """The job definition (a dict, dumped as YAML) that boots spec's image under LAVA.
    kernel_url: where LAVA fetches the multiboot ELF (default: file:// of the local ELF)."""
    elf = Path(spec.elf) if spec.elf else images.elf_path(spec.arch)
    url = kernel_url or elf.resolve().as_uri()
    timeout = spec.timeout or 600
    cmdline = spec.cmdline
    job = {"job_name": "LHV %s%s (%s)" % (spec.arch, (" [%s]" % cmdline) if cmdline else "",
                                          "qemu TCG" if device_type == "qemu" else device_type),
           "device_type": device_type, "timeouts": _timeouts(timeout),
           "priority": "medium", "visibility": "public", "actions": []}
    kernel = {"url": url}
    digest = _sha256(elf)
    if digest and kernel_url is None:
        kernel["sha256sum"] = digest
    if device_type == "qemu":
        append = (' -append "%s"' % cmdline) if cmdline else ""
        kernel["image_arg"] = "-kernel {kernel}" + append
        job["context"] = {"arch": "x86_64", "no_kvm": True, "cpu": spec.cpu_model or "max",
                          "memory": 256, "machine": "pc",
                          "extra_options": ["-smp %d" % (spec.cpus or 2), "-nic none", "-no-reboot",
                                            "-device isa-debug-exit,iobase=0xf4,iosize=0x04"]}
        job["actions"].append({"deploy": {"to": "tmpfs", "timeout": {"minutes": 2},
                                          "images": {"kernel": kernel}}})
        job["actions"].append({"boot": {"method": "qemu", "media": "tmpfs",
                                        "timeout": {"minutes": 2}}})
    else:
        if lab_boot not in LAB_BOOTS:
            raise ValueError("lab boot %r: one of %s" % (lab_boot, ", ".join(LAB_BOOTS)))
        kernel["type"] = "image"
        job["actions"].append({"deploy": {"to": "tftp", "timeout": {"minutes": 5},
                                          "kernel": kernel}})
        words = (" " + cmdline) if cmdline else ""
        if lab_boot == "ipxe":
            commands = ["dhcp net0", "kernel tftp://{SERVER_IP}/{KERNEL}" + words, "boot"]
        else:
            commands = ["insmod multiboot", "net_bootp",
                        "multiboot (tftp,{SERVER_IP})/{KERNEL}" + words, "boot"]
        job["actions"].append({"boot": {"method": lab_boot, "commands": commands,
                                        "timeout": {"minutes": 5}}})
    job["actions"].append(monitor_test(timeout))
    return job


def device_yaml(spec):
    """A rendered qemu device dictionary (what lava-server renders from qemu.jinja2 with the
    job's context) for lava-run without a server: QEMU TCG, serial on stdio."""
    options = QEMU_OPTIONS + ["-cpu %s" % (spec.cpu_model or "max"), "-smp %d" % (spec.cpus or 2)]
    return {
        "device_type": "qemu",
        "available_architectures": ["x86_64", "i386"],
        "constants": {
            "posix": {"lava_test_sh_cmd": "/bin/sh", "lava_test_results_dir": "/lava-%s",
                      "lava_test_shell_file": "~/.bashrc"},
            "kernel-start-message": "Linux version [0-9]",
            "default-shell-prompt": "lava-test: # ",
            "shutdown-message": "The system is going down for reboot NOW",
            "boot-message": "Booting Linux",
            "cpu-reset-messages": ["Resetting CPU", "Must RESET board to recover"],
            "default-login-prompt-timeout": 90,
            "failure_retry": 1,
            "boot_retry": 1,
            "spawn_maxread": "4092",
        },
        "commands": {},
        "actions": {
            "deploy": {"methods": {"tmpfs": None, "image": {"parameters": {
                "guest": {"size": 512, "interface": "ide", "driveid": "lavatest"}}}}},
            "boot": {"connections": {"serial": None},
                     "methods": {"qemu": {"parameters": {
                         "command": "qemu-system-x86_64", "options": options}}}},
        },
        "timeouts": {"actions": {}, "connections": {}},
    }


def dump_yaml(data):
    """YAML (PyYAML comes with LAVA); without it JSON, which is YAML too and LAVA reads it."""
    try:
        import yaml
    except ImportError:
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)


def validate_job(job):
    """LAVA's own schema check (lava_common.schemas.validate, strict, with its extra checks);
    returns '' when valid, the error otherwise; raises ImportError without lava-common."""
    from lava_common.schemas import validate   # Debian: python3 package of lava-common
    from voluptuous import Invalid
    try:
        validate(job, strict=True)
    except Invalid as e:
        return "%s (at %s)" % (e.msg, "/".join(str(p) for p in e.path))
    return ""


# --- results from lava-run's log --------------------------------------------------------------

def _log_entries(log_text, lvl):
    """The entries (dicts) of one level ("results", "target"...) of a lava-run log, whose lines
    are one-element YAML lists on stderr."""
    import yaml
    for line in log_text.splitlines():
        if '"lvl": "%s"' % lvl not in line and "lvl: %s" % lvl not in line:
            continue
        try:
            entry = yaml.safe_load(line)
        except yaml.YAMLError:
            continue
        entry = entry[0] if isinstance(entry, list) and entry else entry
        if isinstance(entry, dict):
            yield entry


def parse_results(log_text):
    """The test cases of suite `lhv` in a lava-run log (YAML lines on stderr): {case: result}
    in order, and the lava job result (the `job` case of suite `lava`: pass/fail) or None."""
    cases, job = {}, None
    for entry in _log_entries(log_text, "results"):
        msg = entry.get("msg") or {}
        if not isinstance(msg, dict):
            continue
        if msg.get("definition") == SUITE:
            cases[msg.get("case")] = msg.get("result")
        elif msg.get("definition") == "lava" and msg.get("case") == "job":
            job = msg.get("result")
    return cases, job


def serial_from_log(log_text):
    """The target's output (the image's COM1) out of a lava-run log: the `target` lines."""
    sent = set(str(e.get("msg", "")).strip() for e in _log_entries(log_text, "input"))
    out = [e["msg"].replace('\\"', '"')                 # LAVA escapes quotes for its YAML
           for e in _log_entries(log_text, "target") if isinstance(e.get("msg"), str)]
    # With -nographic SeaBIOS writes to COM1 too ("Booting from ROM.." has no newline before
    # the banner): the image's output starts at its banner.
    for i, line in enumerate(out):
        m = RE_BANNER.search(line)
        if m:
            out = out[:i] + [line[m.start():]] + out[i + 1:]
            break
    # LAVA's finalize types `poweroff` at the console; its echo is LAVA's, not the image's.
    return "".join(m + "\n" for m in out if not (sent and m.strip() in sent))


def lava_disagrees(cases, job_result, serial_path):
    """What LAVA recorded that does not follow from the TEST lines it logged: the monitors
    test must turn every TEST line into its case, through the fixupdict, and nothing else."""
    from ..logparse import parse_log
    p = parse_log(Path(serial_path).read_bytes())
    if p.result is None:
        return []                 # the run ended early: the judge says why
    want = {t.id: lava_verdict(t.verdict) for t in p.tests}
    problems = []
    if cases != want:
        problems.append("LAVA's test cases %s differ from the TEST lines %s" % (cases, want))
    if job_result != "pass":
        problems.append("the LAVA job itself did not pass (%s): see lava.log" % job_result)
    return problems


def lava_version():
    try:
        from lava_common.version import __version__
        return __version__
    except ImportError:
        return None


class Lava(Target):
    """Run the qemu job locally with lava-run (no server); the serial log is what LAVA logged
    as the target's output, so the harness judges exactly what LAVA saw."""

    name = "lava"
    uses_cpu_model = True         # QEMU's -cpu, through the device dictionary
    has_screen = False
    boot_overhead_s = 120

    def available(self):
        if shutil.which(LAVA_RUN) is None:
            return False, "lava-run is not installed (make lava-deps: Debian's lava-dispatcher)"
        return True, "lava-run %s" % (lava_version() or "?")

    def version(self):
        return lava_version()

    def describe(self, spec):
        return ["qemu"] + (["x%d" % spec.cpus] if spec.cpus != 2 else [])

    def medium(self, spec):
        return "kernel"

    def run(self, spec, rundir):
        ok, why = self.available()
        if not ok:
            raise Unavailable(why)
        if spec.firmware != "bios" or spec.boot != "kernel":
            raise Unavailable("the lava target boots the ELF by -kernel (BIOS) only")
        images.require(Path(spec.elf) if spec.elf else images.elf_path(spec.arch))
        job, device = lava_job(spec, "qemu"), device_yaml(spec)
        (rundir / "job.yaml").write_text(dump_yaml(job))
        (rundir / "device.yaml").write_text(dump_yaml(device))
        outdir = rundir / "lava-out"
        shutil.rmtree(outdir, ignore_errors=True)
        o = Outcome(version=lava_version())
        o.command = [LAVA_RUN, "--device", "device.yaml", "--job-id", "1",
                     "--output-dir", "lava-out", "job.yaml"]
        log = rundir / "lava.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(o.command, cwd=rundir, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(spec.timeout + 60)
            except subprocess.TimeoutExpired:
                o.ended, o.end_detail = "timeout", "lava-run killed after %.0f s" % (spec.timeout + 60)
            finally:
                kill(proc)
        o.exit_status = proc.returncode
        text = log.read_text(errors="replace")
        (rundir / "serial.log").write_text(serial_from_log(text))
        cases, job_result = parse_results(text)
        (rundir / "lava-results.json").write_text(json.dumps(
            {"cases": cases, "job": job_result}, indent=1) + "\n")
        o.logs = {"serial": str(rundir / "serial.log"), "emulator": str(log),
                  "lava_job": str(rundir / "job.yaml"), "lava_device": str(rundir / "device.yaml"),
                  "lava_results": str(rundir / "lava-results.json")}
        o.end_state = "lava job %s" % (job_result or "?")
        o.problems += lava_disagrees(cases, job_result, rundir / "serial.log")
        if o.ended is None:
            from .base import serial_has_result
            o.ended = "result" if serial_has_result(rundir / "serial.log") else "exited"
            if o.ended == "exited":
                o.end_detail = "lava-run exited (status %s) before RESULT; see lava.log" % proc.returncode
        return o
