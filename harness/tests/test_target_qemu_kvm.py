"""The qemu-kvm target: available only with real VMX for an ordinary guest, else UNAVAILABLE
with the reason."""

import pytest

from harness import targets
from harness import verdicts as V
from harness.runner import RunSpec, run

from .conftest import need_images, show
from .test_cli_report import harness
from .test_integration import assert_clean


def test_kvm_probe_command():
    r = harness("kvm-probe")
    assert r.returncode in (0, V.EXIT_STATUS[V.UNAVAILABLE])
    assert "qemu-kvm:" in r.stdout


def test_availability_is_the_probe():
    assert targets.get("qemu-kvm").available() == targets.kvm_probe()


def test_qemu_kvm_needs_real_vmx():
    ok, reason = targets.kvm_probe()
    if not ok:
        rec = run(RunSpec(target="qemu-kvm", arch="amd64", elf="/nonexistent.elf"))
        assert rec["verdict"] == V.UNAVAILABLE and rec["reason"] == reason
        pytest.skip("qemu-kvm unavailable: " + reason)
    need_images()
    rec = run(RunSpec(target="qemu-kvm", arch="amd64"))
    assert_clean(rec)
    assert rec["caps"].get("vmx") == "1", show(rec)
    assert rec["verdict"] not in (V.TIMEOUT, V.CRASH, V.NO_OUTPUT), show(rec)
