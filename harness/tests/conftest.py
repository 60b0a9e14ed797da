"""Shared helpers for the harness test suite.

Integration tests need the built images (`make`).  When they are missing the
tests FAIL under CI=true (a CI that silently skips its boots proves nothing)
and are skipped with a hint otherwise.
"""

import os

import pytest

from harness import images, registry, report

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_IMAGE = "<images-missing>"


def need_images(iso=True):
    missing = images.missing_images(iso=iso)
    if missing:
        msg = "built images missing (%s): run `make` first" % ", ".join(missing)
        if CI:
            pytest.fail(msg)
        pytest.skip(msg)


def registry_for(arch):
    """The arch's registry, or None when the ELF is not built."""
    path = images.elf_path(arch)
    if not path.exists():
        return None
    return registry.load(path)


def scenario_params(arch):
    """Scenario ids for parametrizing, read from the ELF registry.  Collection
    must not crash on a missing or broken image: the placeholder id makes the
    test itself fail (CI) or skip with the reason."""
    try:
        reg = registry_for(arch)
    except registry.ElfError:
        return [NO_IMAGE]
    if reg is None or not reg.ids(arch):
        return [NO_IMAGE]
    return reg.ids(arch)


def build_host_tool(tmp_path_factory, name, *sources):
    """A piece of the image's freestanding C (lhv/...) built for the host with a test driver
    (harness/tests/host/<name>.c), with the image's warning flags: returns the executable."""
    import subprocess
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    exe = tmp_path_factory.mktemp(name) / name
    subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(repo / "lhv"),
                    "-o", str(exe), str(repo / "harness/tests/host" / (name + ".c"))]
                   + [str(repo / src) for src in sources], check=True)
    return exe


def show(rec):
    """Readable run report for assertion messages."""
    return "\n" + report.table(rec)


class DirectQemu:
    """QEMU TCG started by a test itself, with an HMP monitor, for checks the harness's runner
    does not make: reading memory or the screen while the image runs."""

    def __init__(self, tmp_path, arch, cmdline, memory="256"):
        import subprocess
        self.serial, self.monitor = tmp_path / "serial.log", tmp_path / "mon.sock"
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", memory,
             "-kernel", str(images.elf_path(arch)), "-append", cmdline,
             "-serial", "file:%s" % self.serial, "-display", "none", "-no-reboot",
             "-monitor", "unix:%s,server=on,wait=off" % self.monitor],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sock = None

    def wait_serial(self, text, limit_s=20):
        import time
        end = time.time() + limit_s
        while time.time() < end:
            if self.serial.exists() and text.encode() in self.serial.read_bytes():
                return True
            time.sleep(0.05)
        return False

    def hmp(self, command):
        import socket
        import time
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(self.monitor))
        self.sock.sendall(command.encode() + b"\n")
        time.sleep(0.3)

    def close(self):
        try:
            self.hmp("quit")
        except OSError:
            pass
        self.proc.kill()
        self.proc.wait()
