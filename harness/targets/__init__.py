"""The targets the image boots on, one module each, behind base.Target.

Adding a target: a module here with a Target subclass (see base.py), and a line in TARGETS.
"""

from .base import Outcome, Target, Unavailable
from .bochs import Bochs
from .lava import Lava
from .qemu_kvm import QemuKvm, kvm_probe
from .qemu_tcg import QemuTcg
from .vmware import Vmware

# --target word -> class.  The order is the order of --help and of the usage message.
TARGETS = {cls.name: cls for cls in (Bochs, QemuTcg, QemuKvm, Vmware, Lava)}


def get(name, program=None):
    """The target called name; program picks the binary where the target lets the user
    choose it (bochs: --bochs, else LHV_BOCHS).  Cheap: what a target asks its binary is
    cached by the target module."""
    if name not in TARGETS:
        raise ValueError("unknown target %r (one of %s)" % (name, ", ".join(TARGETS)))
    return TARGETS[name](program)


__all__ = ["Outcome", "Target", "Unavailable", "TARGETS", "get", "kvm_probe",
           "Bochs", "QemuTcg", "QemuKvm", "Vmware", "Lava"]
