"""QEMU with KVM: real VMX, where the host has it for an ordinary guest.

Only when the host CPU has vmx, /dev/kvm works and is not a paravirtual KVM (kvm_pvm), and
kvm_intel allows nesting; otherwise UNAVAILABLE with every reason found.
"""

import fcntl
import os
from pathlib import Path

from .base import Unavailable
from .qemu_tcg import QemuTcg, run_qemu

KVM_GET_API_VERSION = 0xAE00


def kvm_probe():
    """(available, reason).  Static checks; the run itself confirms VMX in CAPS."""
    reasons = []
    cpu = ""
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError as e:
        reasons.append("cannot read /proc/cpuinfo: %s" % e)
    if "vmx" not in flags:
        reasons.append("host CPU (%s) has no vmx flag in /proc/cpuinfo%s" % (
            cpu or "unknown", " (it has svm)" if "svm" in flags else ""))
    if not os.path.exists("/dev/kvm"):
        reasons.append("/dev/kvm does not exist")
    else:
        try:
            fd = os.open("/dev/kvm", os.O_RDWR)
            try:
                api = fcntl.ioctl(fd, KVM_GET_API_VERSION)
                if api != 12:
                    reasons.append("/dev/kvm API version %d (want 12)" % api)
            finally:
                os.close(fd)
        except OSError as e:
            reasons.append("/dev/kvm cannot be used: %s" % e)
    mods = set(os.listdir("/sys/module")) if os.path.isdir("/sys/module") else set()
    pv = sorted(m for m in mods if m.startswith("kvm_pvm"))
    if pv:
        reasons.append("/dev/kvm is provided by %s (paravirtual KVM, no hardware VMX "
                       "for an ordinary guest)" % ", ".join(pv))
    elif "vmx" in flags and "kvm_intel" not in mods:
        reasons.append("kvm_intel is not loaded")
    nested = Path("/sys/module/kvm_intel/parameters/nested")
    if "kvm_intel" in mods and nested.exists() and nested.read_text().strip() not in ("Y", "1"):
        reasons.append("kvm_intel nested=%s (nested VMX off)" % nested.read_text().strip())
    if reasons:
        return False, "; ".join(reasons)
    return True, "/dev/kvm with VMX (%s)" % cpu


class QemuKvm(QemuTcg):
    name = "qemu-kvm"
    accel = "kvm"
    boot_overhead_s = 30

    def available(self):
        return kvm_probe()

    def run(self, spec, rundir):
        ok, reason = kvm_probe()
        if not ok:
            raise Unavailable(reason)
        if not spec.cpu_model:
            spec.cpu_model = "host,+vmx"
        return run_qemu(spec, rundir, accel=self.accel, program=self.program)
