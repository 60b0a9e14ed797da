"""VMware: nothing runs here; a bundle to boot under VMware with nested VT-x.

The bundle (ISO copy, lhv.vmx with vhv.enable = "TRUE", serial port to serial.log,
README.txt) is the run's outcome (ended="bundle"); its log is judged later with
`python3 -m harness judge serial.log --target vmware`.
"""

import shutil
from pathlib import Path

from .. import images
from .base import Outcome, Target

VMX_TEMPLATE = """\
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "14"
displayName = "LHV {arch}{label}"
guestOS = "{guestos}"
firmware = "{firmware}"
memsize = "256"
numvcpus = "{cpus}"
vhv.enable = "TRUE"
vpmc.enable = "FALSE"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "lhv.iso"
ide1:0.startConnected = "TRUE"
bios.bootOrder = "cdrom"
serial0.present = "TRUE"
serial0.fileType = "file"
serial0.fileName = "serial.log"
serial0.yieldOnMsrRead = "TRUE"
floppy0.present = "FALSE"
"""

VMWARE_README = """\
LHV bundle for VMware ({arch}, {firmware}, {cpus} vCPU, command line: {cmdline})

1. Copy this folder to the VMware host and open lhv.vmx
   (Workstation/Fusion: File > Open; ESXi: upload the folder, register lhv.vmx).
   Nested virtualization is on (vhv.enable = "TRUE"); the host CPU must have VT-x.
2. Power it on.  The image runs every selected scenario and shows the verdict on
   screen; serial port 1 is written to serial.log next to lhv.vmx.
3. Power it off when the screen says "LHV RESULT: ...", then judge the log:

     python3 -m harness judge serial.log --arch {arch} --target vmware --cpu-model "<host CPU>"

   (run from the LHV tree the image was built from, so the scenario registry
   in images/lhv-{arch}.elf matches; or pass --elf lhv-{arch}.elf from here).
"""


class Vmware(Target):
    name = "vmware"
    firmwares = ("bios", "uefi")
    uses_cpu_model = False        # the VM gets the host's CPU

    def run(self, spec, rundir):
        return write_bundle(spec, rundir)


def write_bundle(spec, rundir):
    iso = spec.iso or images.custom_iso(spec.arch, spec.cmdline)
    shutil.copyfile(iso, rundir / "lhv.iso")
    elf = spec.elf or images.elf_path(spec.arch)
    if Path(elf).exists():
        shutil.copyfile(elf, rundir / ("lhv-%s.elf" % spec.arch))
    fw = "efi" if spec.firmware == "uefi" else "bios"
    (rundir / "lhv.vmx").write_text(VMX_TEMPLATE.format(
        arch=spec.arch, label=(" " + spec.cmdline) if spec.cmdline else "",
        guestos="other-64" if spec.arch == "amd64" else "other", firmware=fw, cpus=spec.cpus))
    (rundir / "README.txt").write_text(VMWARE_README.format(
        arch=spec.arch, firmware=fw, cpus=spec.cpus, cmdline=spec.cmdline or "(default)"))
    o = Outcome(ended="bundle", end_state="bundle",
                end_detail="bundle written to %s; boot it under VMware, then judge serial.log" % rundir)
    o.logs = {"bundle": str(rundir), "vmx": str(rundir / "lhv.vmx"), "iso": str(rundir / "lhv.iso"),
              "readme": str(rundir / "README.txt")}
    return o
