"""The lava target: job definitions LAVA's own schema accepts, and lava-run (Debian's
lava-dispatcher, no server) running the qemu job with LAVA's results equal to the harness's
verdicts for the same image and command line.

Without lava-common / lava-dispatcher these tests skip with the reason (`make lava-deps`
installs them; CI does); under CI=true a missing lava-run fails, like missing images."""

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest

from harness import verdicts as V
from harness.runner import RunSpec, run
from harness.targets import lava as L

from .conftest import CI, need_images, show

# Without VMX (QEMU TCG) every scenario SKIPs; the self-tests give the other verdicts for real:
# selftest_nmi GOOD (pass), damage_cr0 ERROR (fail), l1_hang TIMEOUT (fail).
CMDLINE = "selftest=nmi,damage_cr0,l1_hang"
TESTS = "vmx_lifecycle,pae_cr3_unmapped"


def need(what):
    if what == "lava-common":
        try:
            importlib.import_module("lava_common.schemas")
            return
        except ImportError:
            msg = "lava-common is not installed (make lava-deps)"
    else:
        if shutil.which(L.LAVA_RUN):
            return
        msg = "lava-run is not installed (make lava-deps: Debian's lava-dispatcher)"
    if CI:
        pytest.fail(msg)
    pytest.skip(msg)


def spec(**kw):
    d = dict(target="lava", arch="amd64", cpus=2, tests=TESTS, extra=CMDLINE, timeout=120)
    d.update(kw)
    return RunSpec(**d)


def test_monitor_pattern_and_fixupdict():
    pat = re.compile(L.PATTERN)
    got = {}
    for line in ["TEST a_b: GOOD", "TEST c: BAD (want 1, got 2)", "TEST d: ERROR (x)",
                 "TEST e: TIMEOUT (budget)", "TEST f: SKIP (VMX not supported)",
                 "INFO a_b: seen", "LHV SUMMARY: 1 good, 1 bad, 1 skipped, 2 error"]:
        m = pat.search(line)
        if m:
            got[m.group("test_case_id")] = L.FIXUPDICT[m.group("result")]
    assert got == {"a_b": "pass", "c": "fail", "d": "fail", "e": "fail", "f": "skip"}
    for v in (V.GOOD, V.BAD, V.ERROR, V.TIMEOUT, V.SKIP):
        assert L.lava_verdict(v) in ("pass", "fail", "skip")
    assert re.search(L.END, "LHV RESULT: SKIP") and re.search(L.START, 'LHV 0.1.0 arch=i386 boot=bios')


@pytest.mark.parametrize("device_type,lab_boot", [("qemu", None), ("x86", "ipxe"), ("x86", "grub")])
def test_lava_job_passes_lavas_schema(device_type, lab_boot):
    need("lava-common")
    job = L.lava_job(spec(), device_type, lab_boot=lab_boot or "ipxe",
                     kernel_url=None if device_type == "qemu" else "https://lab.example/lhv.elf")
    assert L.validate_job(job) == ""
    mon = job["actions"][-1]["test"]["monitors"][0]
    assert mon["end"] == "LHV RESULT: " and mon["fixupdict"]["SKIP"] == "skip"
    boot = job["actions"][1]["boot"]
    if device_type == "qemu":
        arg = job["actions"][0]["deploy"]["images"]["kernel"]["image_arg"]
        assert arg == '-kernel {kernel} -append "tests=%s %s"' % (TESTS, CMDLINE)
        assert boot["method"] == "qemu"
    else:
        # The image refuses unknown words: the boot commands pass exactly its command line.
        assert boot["method"] == lab_boot
        assert any(c.endswith("{KERNEL} tests=%s %s" % (TESTS, CMDLINE)) for c in boot["commands"])
    # A broken job is refused by the same check (the validation is not a no-op).
    del job["actions"][-1]["test"]["monitors"][0]["end"]
    assert L.validate_job(job) != ""


def test_cli_writes_valid_jobs(tmp_path):
    need("lava-common")
    from harness.cli import main
    assert main(["lava", "--arch", "i386", "--tests", TESTS, "--timeout", "60",
                 "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["device-qemu.yaml", "lhv-i386-qemu.yaml", "lhv-i386-x86-ipxe.yaml"]
    import yaml
    job = yaml.safe_load((tmp_path / "lhv-i386-qemu.yaml").read_text())
    assert job["device_type"] == "qemu" and L.validate_job(job) == ""


def test_serial_and_results_from_lava_log():
    log = "\n".join([
        '{"dt": "t", "lvl": "target", "msg": "Booting from ROM..LHV 0.1.0 arch=amd64 cpu=\\\\\\"X\\\\\\""}',
        '{"dt": "t", "lvl": "target", "msg": "TEST a: BAD (1, 2)"}',
        '{"dt": "t", "lvl": "target", "msg": "LHV RESULT: BAD"}',
        '{"dt": "t", "lvl": "results", "msg": {"case": "a", "definition": "lhv", "result": "fail"}}',
        '{"dt": "t", "lvl": "input", "msg": "poweroff\\n"}',
        '{"dt": "t", "lvl": "target", "msg": "poweroff"}',
        '{"dt": "t", "lvl": "results", "msg": {"case": "job", "definition": "lava", "result": "pass"}}',
    ])
    assert L.serial_from_log(log) == 'LHV 0.1.0 arch=amd64 cpu="X"\nTEST a: BAD (1, 2)\nLHV RESULT: BAD\n'
    assert L.parse_results(log) == ({"a": "fail"}, "pass")


@pytest.mark.parametrize("arch", ["amd64", "i386"])
def test_lava_run_results_equal_harness_verdicts(tmp_path, arch):
    need("lava-run")
    need_images(iso=False)
    rec = run(spec(arch=arch, out=str(tmp_path / "lava")))
    assert rec["target"] == "lava" and rec["verdict"] != V.UNAVAILABLE, show(rec)
    res = json.loads(Path(rec["logs"]["lava_results"]).read_text())
    assert res["job"] == "pass", show(rec)
    verdicts = {s["id"]: s["verdict"] for s in rec["scenarios"]}
    assert res["cases"] == {i: L.lava_verdict(v) for i, v in verdicts.items()}, show(rec)
    assert verdicts["selftest_nmi"] == V.GOOD and verdicts["selftest_damage_cr0"] == V.ERROR
    assert verdicts["selftest_l1_hang"] == V.TIMEOUT and verdicts["vmx_lifecycle"] == V.SKIP
    assert not rec["problems"], show(rec)
    # The harness's own run of the same image and command line (QEMU TCG, -kernel) agrees.
    ref = run(RunSpec(target="qemu-tcg", arch=arch, cpus=2, tests=TESTS, extra=CMDLINE,
                      timeout=120, out=str(tmp_path / "qemu")))
    assert {s["id"]: s["verdict"] for s in ref["scenarios"]} == verdicts, show(ref)
    assert ref["verdict"] == rec["verdict"], show(ref) + show(rec)


# A rendered x86 device dictionary of the kind lava-server makes from x86.jinja2 (iPXE and GRUB
# boot methods, serial console through `connect`). A lab's has `connect: telnet <ser2net> <port>`
# and real power commands; here `cat /dev/null` and /bin/true, since nothing is run.
X86_DEVICE = {
    "device_type": "x86",
    "constants": dict(L.device_yaml(RunSpec(target="lava"))["constants"],
                      ipxe={"interrupt-prompt": "Press Ctrl-B", "interrupt-character": "b"},
                      grub={"interrupt-prompt": "Press enter to boot the selected OS",
                            "interrupt-character": "c"}),
    "commands": {"connect": "cat /dev/null", "hard_reset": "/bin/true", "power_off": "/bin/true",
                 "power_on": "/bin/true"},
    "parameters": {},
    "actions": {"deploy": {"parameters": {}, "methods": {"tftp": None}},
                "boot": {"connections": {"serial": None}, "methods": {
                    "ipxe": {"parameters": {"bootloader_prompt": "iPXE>", "boot_message": "LHV ",
                                            "interrupt_char": "b", "interrupt_ctrl_list": ["b"]}},
                    "grub": {"parameters": {"bootloader_prompt": "grub>", "boot_message": "LHV "}}}}},
    "timeouts": {"actions": {}, "connections": {}},
}


@pytest.mark.parametrize("lab_boot", L.LAB_BOOTS)
def test_lab_job_passes_the_dispatchers_validation(tmp_path, monkeypatch, lab_boot):
    """More than the schema: lava-dispatcher builds the lab job's whole pipeline (tftp deploy,
    iPXE/GRUB boot with the job's own commands, monitors test) against an x86 device and
    validates it, as a worker would before running it. A worker's TFTP server (tftpd-hpa:
    /etc/default/tftpd-hpa and in.tftpd) is the one thing this machine lacks: stubbed."""
    need("lava-run")
    need_images(iso=False)
    import logging
    from lava_common.log import YAMLLogger
    import lava_dispatcher.actions.deploy.tftp as tftp
    import lava_dispatcher.utils.filesystem as fs
    from lava_dispatcher.device import NewDevice
    from lava_dispatcher.parser import JobParser
    monkeypatch.setattr(fs, "tftpd_dir", lambda: str(tmp_path))
    monkeypatch.setattr(tftp, "which", lambda name, *a, **k: "/usr/sbin/" + name)
    logging.setLoggerClass(YAMLLogger)
    logger = logging.getLogger("dispatcher")
    job = L.lava_job(spec(), "x86", lab_boot=lab_boot,
                     kernel_url=images_elf_uri("amd64"))
    lava_job = JobParser().parse(L.dump_yaml(job), NewDevice(X86_DEVICE), "4", logger=logger,
                                 dispatcher_config=None, env_dut=None)
    lava_job.validate()           # raises with the dispatcher's reason when the job is refused
    names = [a.name for a in lava_job.pipeline.actions]
    assert names[0] == "tftp-deploy" and names[2] == "lava-test-monitor-retry", names


def images_elf_uri(arch):
    from harness import images
    return images.elf_path(arch).resolve().as_uri()
