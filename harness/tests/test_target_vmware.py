"""The vmware target: writes a bundle, runs nothing."""

from harness import verdicts as V
from harness.runner import RunSpec, run


def test_vmware_bundle(tmp_path):
    iso = tmp_path / "fake.iso"
    iso.write_bytes(b"\0" * 2048)
    out = tmp_path / "bundle"
    rec = run(RunSpec(target="vmware", arch="amd64", cpus=2, iso=str(iso),
                      elf="/nonexistent.elf", out=str(out)))
    assert rec["verdict"] == V.BUNDLE, rec
    vmx = (out / "lhv.vmx").read_text()
    assert 'vhv.enable = "TRUE"' in vmx
    assert 'serial0.fileType = "file"' in vmx and 'serial0.fileName = "serial.log"' in vmx
    assert 'ide1:0.fileName = "lhv.iso"' in vmx and 'guestOS = "other-64"' in vmx
    assert 'numvcpus = "2"' in vmx
    assert (out / "lhv.iso").read_bytes() == iso.read_bytes()
    assert "python3 -m harness judge serial.log" in (out / "README.txt").read_text()
    assert rec["name"] == "vmware/amd64" and rec["boot"] == "cdrom"
