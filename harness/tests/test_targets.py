"""The target interface: every target in the table has it, and a new target needs nothing
but its class and its line in TARGETS."""

import pytest

from harness import targets
from harness import verdicts as V
from harness.runner import TARGETS, RunSpec, run
from harness.targets.base import Outcome, Target

from .test_judge import log


def test_table_and_interface():
    assert TARGETS == ("bochs", "qemu-tcg", "qemu-kvm", "vmware", "lava")
    for name, cls in targets.TARGETS.items():
        t = targets.get(name)
        assert t.name == name and isinstance(t, Target)
        ok, why = t.available()
        assert isinstance(ok, bool) and isinstance(why, str) and why
        assert t.models() is None or all(isinstance(m, str) for m in t.models())
        assert set(cls.firmwares) <= {"bios", "uefi"}
    with pytest.raises(ValueError):
        targets.get("nosuch")


class EchoTarget(Target):
    """A target that 'boots' by writing the log a good image prints (like a lab that hands
    back a serial log)."""
    name = "echo"
    has_screen = False

    def version(self):
        return "1.0"

    def run(self, spec, rundir):
        (rundir / "serial.log").write_text(log([("vmx_lifecycle", "GOOD", "")], "auto"))
        return Outcome(ended="result", version=self.version(),
                       logs={"serial": str(rundir / "serial.log")})


def test_a_new_target_is_one_class_and_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(targets.TARGETS, "echo", EchoTarget)
    rec = run(RunSpec(target="echo", arch="amd64", elf="/nonexistent.elf", out=str(tmp_path)))
    assert rec["verdict"] == V.GOOD and rec["target_version"] == "1.0", rec
    assert rec["name"] == "echo/amd64" and rec["cpus"] == 2
    assert rec["screen"] == {"checked": False, "ok": None, "kind": None,
                             "reason": "the target has no screen to read back"}
