"""The bochs target with any Bochs build: version, flags, CPU models, known bugs by version.

Most tests use a fake `bochs` (fake_bochs.py) that answers like a real build of a given
version, so they run anywhere (CI has only Debian's Bochs 2.7 and fetches nothing).  One test
boots Debian's Bochs; the tests of real builds from source run only when LHV_BOCHS_BUILDS
names them (comma list of bochs binaries, e.g. /work/bochs/3.0/bin/bochs) and skip otherwise.
"""

import json
import os
import shutil

import pytest

from harness import known_bugs, report, targets
from harness import verdicts as V
from harness.runner import RunSpec, run
from harness.targets import bochs as B

from . import fake_bochs
from .conftest import need_images, show
from .test_cli_report import harness
from .test_judge import log
from .test_screen import vga_buffer

ONE_GOOD = [("vmx_lifecycle", "GOOD", "")]
MTF_BAD = ONE_GOOD + [("mtf", "BAD", "no MTF exit")]
MTF_GOOD = ONE_GOOD + [("mtf", "GOOD", "")]


def screen_for(tests):
    """The final screen an image with these TEST lines shows."""
    bad = [t for t in tests if t[1] in V.FAILED_VERDICTS]
    return vga_buffer(["LHV RESULT: %s" % V.image_result([t[1] for t in tests])] +
                      ["FAILED %s: %s" % (sid, v) for sid, v, _ in bad])


def fake(tmp_path, version, tests=ONE_GOOD, **kw):
    """A fake Bochs <version> whose image reports these TEST lines."""
    return fake_bochs.make(tmp_path / ("bochs-" + version), version, serial=log(tests, "auto"),
                           vga=screen_for(tests), **kw)


def fake_run(tmp_path, program, model="tigerlake", **kw):
    iso = tmp_path / "fake.iso"
    iso.write_bytes(b"\0" * 2048)
    out = tmp_path / ("run-%d" % len(list(tmp_path.glob("run-*"))))
    return run(RunSpec(target="bochs", program=program, arch="amd64", cpu_model=model, cpus=2,
                       iso=str(iso), elf="/nonexistent.elf", out=str(out), timeout=30, **kw))


def test_version_key_orders_snapshots_after_their_release():
    keys = [B.version_key(v) for v in ("2.6.11", "2.7", "2.8", "2.8.devel", "3.0", "3.0.devel", "3.1")]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert B.version_key("unknown") is None
    assert [B.takes_extfpuirq(v) for v in ("2.7", "2.8", "3.0", "3.0.devel", "3.1", None)] == \
        [True, True, True, False, False, True]


@pytest.mark.parametrize("version,dbg,extfpuirq,new_model", [
    ("2.7", False, True, None),
    ("2.8", False, True, "sapphire_rapids"),
    ("3.0", True, True, "arrow_lake"),
    ("3.0.devel", True, False, "wildcat_lake"),      # master: "snapshot after release 3.0"
])
def test_flags_and_models_follow_the_build(tmp_path, version, dbg, extfpuirq, new_model):
    """-dbg from 3.0 (the usage's -debugger line), no extfpuirq after 3.0, the models the build
    lists; the run is GOOD with the screen saved by the -rc script."""
    prog = fake(tmp_path, version)
    t = targets.get("bochs", prog)
    assert (t.version(), t.display_name(), t.build().needs_dbg) == (version, "bochs-" + version, dbg)
    assert set(t.models()) == set(fake_bochs.MODELS[version])
    rec = fake_run(tmp_path, prog, model=new_model or "tigerlake")
    assert rec["verdict"] == V.GOOD and rec["screen"]["ok"], show(rec)
    assert rec["target_version"] == version and rec["name"].startswith("bochs-%s/" % version)
    args = fake_bochs.argv(rec["run_dir"])
    assert ("-dbg" in args) == dbg and args[-4:] == ["-f", "bochsrc", "-rc", "bochs.rc"]
    bochsrc = (tmp_path / rec["run_dir"] / "bochsrc").read_text()
    assert ("extfpuirq=0" in bochsrc) == extfpuirq
    assert "cpu: model=%s, count=2," % (new_model or "tigerlake") in bochsrc


def test_a_model_the_build_lacks_is_unavailable_there(tmp_path):
    rec = fake_run(tmp_path, fake(tmp_path, "2.7"), model="arrow_lake")
    assert rec["verdict"] == V.UNAVAILABLE, show(rec)
    assert "Bochs 2.7" in rec["reason"] and "no CPU model arrow_lake" in rec["reason"]
    assert "tigerlake" in rec["reason"]


def test_a_bochs_without_debugger_is_unavailable(tmp_path):
    rec = fake_run(tmp_path, fake(tmp_path, "2.8", debugger=False))
    assert rec["verdict"] == V.UNAVAILABLE and "--enable-debugger" in rec["reason"], show(rec)


def test_missing_binary_is_unavailable(tmp_path):
    rec = fake_run(tmp_path, str(tmp_path / "no-such-bochs"))
    assert rec["verdict"] == V.UNAVAILABLE and "not an executable" in rec["reason"], show(rec)


def test_known_bugs_match_the_version():
    """The mtf entry is for 2.7: a 3.0 BAD is a finding, a GOOD is never marked."""
    assert known_bugs.find("mtf", V.BAD, "bochs", "tigerlake", "2.7")
    assert known_bugs.find("mtf", V.BAD, "bochs", "tigerlake", "3.0") is None
    assert known_bugs.find("mtf", V.BAD, "bochs", "tigerlake", "3.0.devel") is None
    assert known_bugs.find("mtf", V.GOOD, "bochs", "tigerlake", "2.7") is None


def test_runner_passes_the_version_to_known_bugs(tmp_path):
    """The same BAD is known on 2.7 (exit status unaffected) and a plain BAD on 3.0; a 3.0
    GOOD carries no mark."""
    on27 = fake_run(tmp_path, fake(tmp_path, "2.7", MTF_BAD))
    on30 = fake_run(tmp_path, fake(tmp_path, "3.0", MTF_BAD))
    good30 = fake_run(tmp_path, fake(tmp_path / "good", "3.0", MTF_GOOD))
    mtf = {n: next(s for s in r["scenarios"] if s["id"] == "mtf")
           for n, r in (("2.7", on27), ("3.0", on30), ("good", good30))}
    assert mtf["2.7"]["known_bug"] and on27["effective_verdict"] == V.GOOD, show(on27)
    assert mtf["3.0"]["known_bug"] is None and on30["effective_verdict"] == V.BAD, show(on30)
    assert mtf["good"] == dict(mtf["good"], verdict=V.GOOD, known_bug=None), show(good30)
    assert good30["verdict"] == good30["effective_verdict"] == V.GOOD
    assert report.exit_code([on27, good30]) == 0 and report.exit_code([on30]) == 1


def test_lhv_bochs_still_picks_the_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("LHV_BOCHS", fake(tmp_path, "3.0"))
    rec = fake_run(tmp_path, None)
    assert rec["target_version"] == "3.0" and rec["verdict"] == V.GOOD, show(rec)
    assert "-dbg" in fake_bochs.argv(rec["run_dir"])


def test_cli_several_bochs_side_by_side(tmp_path):
    """--bochs a,b runs the same selection under each; the comparison names the versions."""
    b27, b30 = fake(tmp_path, "2.7", MTF_BAD), fake(tmp_path, "3.0", MTF_GOOD)
    iso = tmp_path / "fake.iso"
    iso.write_bytes(b"\0" * 2048)
    r = harness("run", "--bochs", "%s,%s" % (b27, b30), "--cpu-model", "tigerlake,corei7_icelake_u",
                "--cpus", "2", "--iso", str(iso), "--elf", "/nonexistent.elf",
                "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"),
                env={"LHV_BOCHS": ""})
    recs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert r.returncode == 0, r.stdout + r.stderr      # the 2.7 BAD is a known bug
    assert [(x["target"], x["target_version"], x["cpu_model"]) for x in recs] == [
        ("bochs", "2.7", "tigerlake"), ("bochs", "3.0", "tigerlake"),
        ("bochs", "2.7", "corei7_icelake_u"), ("bochs", "3.0", "corei7_icelake_u")], r.stdout
    table = r.stdout.split("Runs:", 1)[1]
    head = next(ln for ln in table.splitlines() if ln.strip().startswith("scenario"))
    assert head.split()[1:] == ["bochs-2.7/tigerlake", "x2", "bochs-3.0/tigerlake", "x2",
                                "bochs-2.7/corei7_icelake_u", "x2", "bochs-3.0/corei7_icelake_u",
                                "x2"], table
    mtf = next(ln for ln in table.splitlines() if ln.strip().startswith("mtf"))
    assert mtf.split()[1:4] == ["BAD", "(known)", "GOOD"], table
    assert "(%s)" % b30 in table


def test_cli_unknown_model_names_the_models(tmp_path):
    b27, b30 = fake(tmp_path, "2.7"), fake(tmp_path, "3.0")
    r = harness("run", "--bochs", b27, "--cpu-model", "nosuch_lake", env={"LHV_BOCHS": ""})
    assert r.returncode == V.EXIT_USAGE and "no Bochs given has CPU model nosuch_lake" in r.stderr
    assert "bochs-2.7" in r.stderr and "tigerlake" in r.stderr, r.stderr
    # A model only the newer build has: it runs there; the older one says why not.
    iso = tmp_path / "fake.iso"
    iso.write_bytes(b"\0" * 2048)
    r = harness("run", "--bochs", "%s,%s" % (b27, b30), "--cpu-model", "arrow_lake", "--iso",
                str(iso), "--elf", "/nonexistent.elf", "--out", str(tmp_path / "o"),
                "--json", str(tmp_path / "r.json"))
    recs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [x["verdict"] for x in recs] == [V.UNAVAILABLE, V.GOOD], r.stdout
    assert "has no CPU model arrow_lake" in recs[0]["reason"]


# ---------------------------------------------------------------- real builds

def test_debian_bochs():
    """Debian's Bochs 2.7 as the harness reads it, and one boot with its flags."""
    if shutil.which("bochs") is None:
        pytest.skip("bochs is not installed")
    t = targets.get("bochs", "bochs")
    b = t.build()
    assert b.version.startswith("2.7") and b.has_debugger and not b.needs_dbg, b
    assert {"corei7_skylake_x", "tigerlake", "corei7_icelake_u",
            "corei7_sandy_bridge_2600k"} <= set(b.models), b
    need_images()
    rec = run(RunSpec(target="bochs", program="bochs", arch="amd64", cpu_model="tigerlake",
                      cpus=2, tests="vmx_lifecycle"))
    assert rec["verdict"] == V.GOOD and rec["screen"]["ok"], show(rec)
    assert "-dbg" not in rec["command"] and rec["target_version"] == b.version
    assert "extfpuirq=0" in open(rec["logs"]["config"]).read()


def _builds():
    env = os.environ.get("LHV_BOCHS_BUILDS", "")
    progs = [p for p in env.replace(":", ",").split(",") if p.strip()]
    return progs or [pytest.param(None, marks=pytest.mark.skip(
        reason="LHV_BOCHS_BUILDS is not set (comma list of Bochs builds, e.g. "
               "/work/bochs/3.0/bin/bochs; tools/build-bochs.sh makes one)"))]


@pytest.mark.parametrize("program", _builds())
def test_built_bochs(program):
    """A Bochs built from source boots the image with the flags its version needs, and the
    2.7 known bug (MTF) is GOOD there without a known-bug mark."""
    t = targets.get("bochs", program)
    ok, why = t.available()
    assert ok, why
    b = t.build()
    need_images()
    rec = run(RunSpec(target="bochs", program=program, arch="amd64", cpu_model="tigerlake",
                      cpus=2, tests="vmx_lifecycle,mtf"))
    assert rec["target_version"] == b.version and rec["screen"]["ok"], show(rec)
    assert ("-dbg" in rec["command"]) == (B.version_key(b.version) >= (3, 0, 0, 0)), show(rec)
    assert ("extfpuirq=0" in open(rec["logs"]["config"]).read()) == B.takes_extfpuirq(b.version)
    if B.version_key(b.version) >= (2, 8, 0, 0):
        assert rec["verdict"] == V.GOOD, show(rec)
        assert not any(s["known_bug"] for s in rec["scenarios"]), show(rec)


@pytest.mark.parametrize("program", _builds())
@pytest.mark.parametrize("arch", ["i386", "amd64"])
def test_built_bochs_every_scenario_and_its_negative_control(program, arch):
    """On a Bochs built from source, every scenario is GOOD, a SKIP with a reason, or a BAD that
    known_bugs.py traces to that Bochs; and with every negative control armed (inject=*) every
    scenario that ran says BAD. On such a build (3.0, master, one with fixes applied) the
    negative controls of the scenarios that Debian's 2.7 gets wrong anyway are really proven."""
    from .conftest import registry_for
    need_images()
    reg = registry_for(arch)
    opt = reg.default_opt()
    for sid in reg.ids(arch):
        opt |= reg.get(sid).opt_mask
    common = dict(target="bochs", program=program, arch=arch, cpu_model="tigerlake", cpus=2, opt=hex(opt))
    rec = run(RunSpec(**common))
    for s in rec["scenarios"]:
        assert s["verdict"] == V.GOOD or s["known_bug"] or (s["verdict"] == V.SKIP and s["reason"]), show(rec)
    ran = [s["id"] for s in rec["scenarios"] if s["verdict"] != V.SKIP]
    neg = run(RunSpec(inject="*", **common))
    by = {s["id"]: s["verdict"] for s in neg["scenarios"]}
    assert all(by.get(sid) == V.BAD for sid in ran), show(neg)
