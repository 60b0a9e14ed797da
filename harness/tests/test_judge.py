"""The log parser and the judge, on synthetic serial logs."""

import pytest

from harness import verdicts as V
from harness.judge import Context, judge_text
from harness.registry import Registry, Scenario

BANNER = 'LHV 0.1 arch=amd64 boot=bios cpus=2 opt=0x3e cpu="GenuineIntel Fake CPU"'
CAPS = "LHV CAPS vmx=1 ept=1 vpid=1 ug=1 vmfunc=1 eptp_switch=1 mtf=0 preempt_timer=1"


def log(tests, result=None, summary="auto", extra_before=(), extra_after=(), banner=BANNER,
        nl="\n"):
    """A serial log with these (id, verdict, reason) TEST lines."""
    lines = [banner, CAPS, "LHV TSC start=1000 hz=2000000000"] if banner else []
    lines += list(extra_before)
    for sid, v, why in tests:
        lines.append("TEST %s: %s%s" % (sid, v, " (%s)" % why if why else ""))
    vs = [t[1] for t in tests]
    if summary == "auto":
        summary = (vs.count("GOOD"), vs.count("BAD") + vs.count("TIMEOUT"),
                   vs.count("SKIP"), vs.count("ERROR"))
    if result is not None:
        lines.append("LHV TSC end=5000 elapsed_ms=12")
        if summary:
            lines.append("LHV SUMMARY: %d good, %d bad, %d skipped, %d error" % summary)
        if result == "auto":
            result = V.image_result(vs) or "ERROR"
        lines.append("LHV RESULT: %s" % result)
    lines += list(extra_after)
    return nl.join(lines) + nl


def reg(*ids, opt_mask=0, subarch=3):
    return Registry([Scenario(i, ["vmx"], opt_mask, 1000, subarch) for i in ids], [])


GOOD3 = [("vmx_lifecycle", "GOOD", ""), ("msr_lists", "GOOD", ""), ("ept_basic", "GOOD", "")]


def test_good_run():
    j = judge_text(log(GOOD3, "auto"))
    assert j.verdict == V.GOOD, j.reason
    assert not j.problems
    assert [s.id for s in j.scenarios] == ["vmx_lifecycle", "msr_lists", "ept_basic"]
    assert j.banner["arch"] == "amd64" and j.banner["cpu"] == "GenuineIntel Fake CPU"
    assert j.banner["opt"] == "0x3e" and j.banner["cpus"] == "2"
    assert j.caps["mtf"] == "0" and j.caps["vmx"] == "1"
    d = j.to_dict()
    assert d["image_time"] == {"tsc_start": 1000, "tsc_end": 5000, "tsc_hz": 2000000000,
                               "elapsed_ms": 12}


def test_crlf_ansi_and_firmware_noise():
    text = log(GOOD3, "auto", nl="\r\n")
    text = "\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001\r\nWelcome to GRUB!" + text
    j = judge_text(text.encode())
    assert j.verdict == V.GOOD, j.reason


def test_bad_run_reason_kept():
    tests = GOOD3[:2] + [("pae_cr3_unmapped", "BAD", "EPT violation at CR3 page, #GP in L2")]
    j = judge_text(log(tests, "auto"))
    assert j.verdict == V.BAD and not j.problems
    s = j.by_id()["pae_cr3_unmapped"]
    assert s.reason == "EPT violation at CR3 page, #GP in L2"
    assert "pae_cr3_unmapped BAD" in j.reason


def test_run_result_rule():
    """GOOD when something ran GOOD and nothing is worse than SKIP; SKIP when nothing ran;
    otherwise BAD (TIMEOUT included) before ERROR."""
    assert V.image_result(["GOOD", "SKIP"]) == "GOOD"
    assert V.image_result(["SKIP", "SKIP"]) == "SKIP"
    assert V.image_result(["GOOD", "SKIP", "ERROR"]) == "ERROR"
    assert V.image_result(["ERROR", "BAD", "SKIP"]) == "BAD"
    assert V.image_result(["GOOD", "TIMEOUT"]) == "BAD"
    assert V.image_result([]) is None


def test_all_skipped_is_skip_and_mixed_good_skip_is_good():
    skips = [(i, "SKIP", "VMX not supported (CPUID.1:ECX[5]=0)") for i in ("a", "b")]
    assert judge_text(log(skips, "auto")).verdict == V.SKIP
    j = judge_text(log(GOOD3 + skips, "GOOD"))
    assert j.verdict == V.GOOD and not j.problems
    # An image still on the old "worst wins" rule is caught.
    j = judge_text(log(GOOD3 + skips, "SKIP"))
    assert j.verdict == V.ERROR and "give GOOD" in j.reason
    j = judge_text(log(skips, "GOOD"))
    assert j.verdict == V.ERROR and "give SKIP" in j.reason


def test_timeout_scenario_counts_as_bad():
    tests = GOOD3 + [("ept_on_demand", "TIMEOUT", "L2 at rip 0x401000, 200000 exits")]
    j = judge_text(log(tests, "BAD"))
    assert j.verdict == V.BAD and not j.problems, j.problems
    assert j.summary == {"good": 3, "bad": 1, "skipped": 0, "error": 0}


def test_summary_lies_is_caught():
    text = log([("vmx_lifecycle", "GOOD", ""), ("ept_basic", "BAD", "x, y")], "BAD",
               summary=(2, 0, 0, 0))
    j = judge_text(text)
    assert j.verdict == V.ERROR
    assert any("SUMMARY says 2 good, 0 bad" in p for p in j.problems), j.problems


def test_result_lies_is_caught():
    j = judge_text(log([("vmx_lifecycle", "GOOD", ""), ("ept_basic", "BAD", "x, y")], "GOOD",
                       summary=(1, 1, 0, 0)))
    assert j.verdict == V.ERROR
    assert any("RESULT GOOD but its TEST lines give BAD" in p for p in j.problems)


def test_missing_summary_is_error():
    j = judge_text(log(GOOD3, "GOOD", summary=None))
    assert j.verdict == V.ERROR and "no LHV SUMMARY" in j.reason


def test_result_crash():
    j = judge_text(log(GOOD3[:1], "CRASH", extra_before=["LHV EXCEPTION #PF cr2=0x0 rip=0x1234"]))
    assert j.verdict == V.CRASH
    assert "#PF" in j.reason


def test_no_output():
    assert judge_text("").verdict == V.NO_OUTPUT
    assert judge_text("SeaBIOS (version 1.16)\nBooting from ROM...\n").verdict == V.NO_OUTPUT
    j = judge_text("", Context(ended="timeout", end_detail="killed after 60 s"))
    assert j.verdict == V.NO_OUTPUT and "killed after 60 s" in j.reason
    j = judge_text("", Context(ended="crash", end_detail="bochs: triple fault"))
    assert j.verdict == V.CRASH


def test_no_banner_but_crash_or_lines():
    j = judge_text("LHV EXCEPTION cpu=0 double fault vector=8\nLHV SUMMARY: 0 good, 0 bad, "
                   "0 skipped, 0 error\nLHV RESULT: CRASH\n")
    assert j.verdict == V.CRASH and "double fault" in j.reason
    j = judge_text(log(GOOD3, "auto", banner=None))
    assert j.verdict == V.ERROR and "without its banner" in j.reason


def test_truncated_offline_log_is_incomplete():
    text = log(GOOD3[:2])            # no RESULT
    j = judge_text(text[:-5])        # and cut mid-line
    assert j.verdict == V.INCOMPLETE


def test_timeout_with_missing_scenarios():
    r = reg("vmx_lifecycle", "msr_lists", "ept_basic", "pae_cr3_unmapped")
    ctx = Context(target="bochs", ended="timeout", end_detail="killed after 60 s", registry=r)
    j = judge_text(log(GOOD3[:2]), ctx)
    assert j.verdict == V.TIMEOUT
    assert j.missing == ["ept_basic", "pae_cr3_unmapped"]
    assert "missing: ept_basic, pae_cr3_unmapped" in j.reason


def test_missing_respects_tests_glob_and_opt_mask():
    r = Registry([Scenario("vmx_lifecycle", [], 0, 1, 3), Scenario("pae_cr3_unmapped", [], 0x4, 1, 3),
                  Scenario("pae_pdpte_reload", [], 0x4, 1, 1), Scenario("msr_lists", [], 0x1, 1, 3)],
                 [])
    ctx = Context(ended="exited", registry=r, tests="pae*,-pae_pdpte*")
    j = judge_text(log([]), ctx)
    assert j.verdict == V.CRASH
    assert j.missing == ["pae_cr3_unmapped"]
    # msr_lists needs bit 0x1, which opt=0x3e lacks; pae_pdpte_reload is i386 only.
    assert judge_text(log([]), Context(ended="exited", registry=r)).missing == \
        ["vmx_lifecycle", "pae_cr3_unmapped"]


def test_selected_but_never_reported_with_result_is_error():
    r = reg("vmx_lifecycle", "msr_lists", "ept_basic", "pae_cr3_unmapped")
    j = judge_text(log(GOOD3, "auto"), Context(registry=r))
    assert j.verdict == V.ERROR
    assert "never reported: pae_cr3_unmapped" in j.reason


def test_unknown_scenario_id_is_error():
    j = judge_text(log(GOOD3, "auto"), Context(registry=reg("vmx_lifecycle", "msr_lists")))
    assert j.verdict == V.ERROR
    assert any("ept_basic: not a scenario" in p for p in j.problems)


def test_emulator_crash_without_result():
    j = judge_text(log(GOOD3[:1]), Context(ended="crash", end_detail="qemu: triple fault"))
    assert j.verdict == V.CRASH and "triple fault" in j.reason


def test_emulator_crash_after_result():
    j = judge_text(log(GOOD3, "auto"), Context(ended="crash", end_detail="qemu: triple fault"))
    assert j.verdict == V.CRASH and "after RESULT GOOD: qemu: triple fault" in j.reason


def test_exception_line_then_silence_is_crash():
    j = judge_text(log(GOOD3[:1], extra_after=["LHV EXCEPTION #GP err=0 rip=0x10abc"]))
    assert j.verdict == V.CRASH and "#GP" in j.reason


def test_second_banner_means_reset():
    j = judge_text(log(GOOD3[:1]) + log(GOOD3, "auto"))
    assert j.verdict == V.CRASH and "reset" in j.reason


def test_duplicate_and_malformed_test_lines():
    j = judge_text(log(GOOD3 + [("ept_basic", "GOOD", "")], "auto", summary=(3, 0, 0, 0)))
    assert j.verdict == V.ERROR and "reported twice" in j.reason
    j = judge_text(log(GOOD3, "auto", extra_before=["TEST ept_basic GOOD"]))
    assert j.verdict == V.ERROR and "malformed" in j.reason
    j = judge_text(log(GOOD3, "auto", extra_before=["TEST Bad-Id: GOOD"]))
    assert j.verdict == V.ERROR


def test_skip_needs_reason():
    j = judge_text(log([("vmfunc_eptp_switch", "SKIP", "")], "SKIP"))
    assert j.verdict == V.ERROR and "SKIP without a reason" in j.reason


def test_lines_after_result():
    j = judge_text(log(GOOD3, "auto", extra_after=["TEST late_one: GOOD"]))
    assert j.verdict == V.ERROR and "after RESULT" in j.reason
    # Informational lines after RESULT are fine.
    assert judge_text(log(GOOD3, "auto", extra_after=["INFO x: y", "LHV bye"])).verdict == V.GOOD


def test_lhv_error_option_run():
    text = "\n".join([BANNER, "LHV ERROR: lhv_opt=0xzz: not a hex number", "LHV RESULT: ERROR"])
    j = judge_text(text)
    assert j.verdict == V.ERROR and not j.problems
    assert j.errors == ["lhv_opt=0xzz: not a hex number"]
    assert "LHV ERROR" in j.reason
    # Scenarios the registry would select are not owed after an LHV ERROR.
    j = judge_text(text, Context(registry=reg("vmx_lifecycle")))
    assert j.verdict == V.ERROR and not j.problems and j.missing == ["vmx_lifecycle"]
    # An LHV ERROR with RESULT GOOD is a lie.
    j = judge_text(text.replace("RESULT: ERROR", "RESULT: GOOD"))
    assert j.problems


def test_no_scenario_at_all():
    assert judge_text(log([], "SKIP", summary=(0, 0, 0, 0))).verdict == V.SKIP
    assert judge_text(log([], "ERROR", summary=(0, 0, 0, 0))).verdict == V.ERROR
    j = judge_text(log([], "GOOD", summary=(0, 0, 0, 0)))
    assert j.verdict == V.ERROR and "SKIP or ERROR" in j.reason


def test_info_lines_attach_to_scenarios():
    j = judge_text(log(GOOD3, "auto", extra_before=["INFO ept_basic: stale translation seen on CPU1"]))
    assert j.by_id()["ept_basic"].info == ["stale translation seen on CPU1"]


def test_arch_and_boot_mismatch():
    j = judge_text(log(GOOD3, "auto"), Context(arch="i386"))
    assert j.verdict == V.ERROR and "arch=amd64" in j.reason
    j = judge_text(log(GOOD3, "auto"), Context(firmware="uefi"))
    assert j.verdict == V.ERROR and "boot=bios" in j.reason


@pytest.mark.parametrize("model,version,known", [
    ("tigerlake", "2.7", True), ("corei7_icelake_u", "2.7", True),
    ("corei7_skylake_x", "2.7", False), ("tigerlake", "2.8", False)])
def test_known_bug_mtf_on_bochs(model, version, known):
    tests = GOOD3 + [("mtf", "BAD", "MTF VM exit after one instruction, no exit")]
    ctx = Context(target="bochs", cpu_model=model, target_version=version)
    j = judge_text(log(tests, "auto"), ctx)
    assert j.verdict == V.BAD          # the finding stays visible
    assert bool(j.by_id()["mtf"].known_bug) == known
    assert j.effective_verdict == (V.GOOD if known else V.BAD)


def test_known_bug_does_not_hide_other_failures():
    tests = GOOD3 + [("mtf", "BAD", "no exit"), ("ept_basic2", "BAD", "x, y")]
    j = judge_text(log(tests, "auto"), Context(target="bochs", cpu_model="tigerlake",
                                               target_version="2.7"))
    assert j.effective_verdict == V.BAD
    # nor a lying image
    j = judge_text(log(GOOD3 + [("mtf", "BAD", "x")], "auto", summary=(4, 0, 0, 0)),
                   Context(target="bochs", cpu_model="tigerlake", target_version="2.7"))
    assert j.effective_verdict == V.ERROR


def test_other_subarch_scenario_is_not_part_of_the_run():
    r = Registry([Scenario("vmx_lifecycle", [], 0, 1, 3), Scenario("pae_pdpte_reload", [], 0, 1, 1)],
                 [])
    j = judge_text(log([("vmx_lifecycle", "GOOD", "")], "auto"), Context(registry=r))
    assert j.verdict == V.GOOD and not j.problems and not j.missing, j.problems
    # The image must not report the i386-only scenario on amd64 (the log's banner says amd64).
    tests = [("vmx_lifecycle", "GOOD", ""), ("pae_pdpte_reload", "SKIP", "not available on amd64")]
    j = judge_text(log(tests, "auto"), Context(registry=r))
    assert j.verdict == V.ERROR and "not a scenario" in j.reason, j.reason


def test_selftest_ids_are_accepted_only_with_selftest_word():
    tests = [("selftest_l1_hang", "TIMEOUT", "budget 500 ms: L1 at 0x201c22")]
    r = reg("vmx_lifecycle")
    j = judge_text(log(tests, "BAD"), Context(registry=r, cmdline="selftest=l1_hang"))
    assert j.verdict == V.BAD and not j.problems, j.problems
    j = judge_text(log(tests, "BAD"), Context(registry=r))
    assert j.verdict == V.ERROR and "not a scenario" in j.reason


# ---- repeat= / noise= (lhv/repeat.c): ROUND, REPEAT, SEED, NOISE lines

def repeat_log(rounds, repeats, tests, head="LHV REPEAT rounds=3 ms=0 until=- noise=nmi,ipi",
               seed="LHV SEED 0x2a", noise="LHV NOISE: cpu1 sent 10 NMIs and 9 IPIs; cpu0 took ..."):
    """A log with ROUND lines, then per scenario its REPEAT line right before its TEST line."""
    before = [x for x in (seed, head) if x] + list(rounds) + ([noise] if noise else [])
    text = log([], "auto", extra_before=before)
    body = []
    for sid, v, why in tests:
        if sid in repeats:
            body.append("REPEAT %s: %s" % (sid, repeats[sid]))
        body.append("TEST %s: %s%s" % (sid, v, " (%s)" % why if why else ""))
    vs = [t[1] for t in tests]
    summary = "LHV SUMMARY: %d good, %d bad, %d skipped, %d error" % (
        vs.count("GOOD"), vs.count("BAD") + vs.count("TIMEOUT"), vs.count("SKIP"), vs.count("ERROR"))
    return text.replace("LHV TSC end=", "\n".join(body) + "\nLHV TSC end=").replace(
        "LHV SUMMARY: 0 good, 0 bad, 0 skipped, 0 error", summary).replace(
        "LHV RESULT: ERROR", "LHV RESULT: " + (V.image_result(vs) or "ERROR"))


REPEAT_GOOD = "rounds=3 good=3 skip=0 error=0 bad=0 worst=GOOD worst_round=1 first_fail=0"
REPEAT_BAD = "rounds=3 good=1 skip=0 error=0 bad=2 worst=BAD worst_round=2 first_fail=2"
ROUNDS_BAD = ["ROUND 1: 2 good", "ROUND 2: 1 good, BAD ept_switch", "ROUND 3: 1 good, BAD ept_switch"]
TESTS_BAD = [("ept_basic", "GOOD", ""), ("ept_switch", "BAD", "expected x=0x1, observed x=0x2")]


def test_repeat_lines_parsed_and_judged():
    j = judge_text(repeat_log(ROUNDS_BAD, {"ept_basic": REPEAT_GOOD, "ept_switch": REPEAT_BAD}, TESTS_BAD))
    assert j.verdict == V.BAD and not j.problems, j.problems
    s = j.by_id()["ept_switch"]
    assert s.reason == "expected x=0x1, observed x=0x2"
    assert s.to_dict()["repeat"] == {"rounds": 3, "good": 1, "skip": 0, "error": 0, "bad": 2, "worst": "BAD",
                                     "worst_round": 2, "first_fail": 2}
    d = j.to_dict()["repeat"]
    assert d["rounds"] == 3 and d["seed"] == 0x2a and d["failing_rounds"] == {"ept_switch": [2, 3]}
    assert d["requested"] == {"rounds": "3", "ms": "0", "until": "-", "noise": "nmi,ipi"}
    assert d["noise"].startswith("cpu1 sent 10 NMIs")


def test_repeat_good_run_and_cut_round_line():
    rounds = ["ROUND 1: 2 good", "ROUND 2: 2 good", "ROUND 3: 0 good, BAD a, BAD b ..."]
    tests = [("ept_basic", "GOOD", ""), ("ept_switch", "GOOD", "")]
    j = judge_text(repeat_log(rounds, {"ept_basic": REPEAT_GOOD, "ept_switch": REPEAT_GOOD}, tests))
    assert j.verdict == V.GOOD and not j.problems, j.problems


@pytest.mark.parametrize("repeats,rounds,tests,problem", [
    # The TEST line must carry the worst verdict of the rounds.
    ({"ept_basic": REPEAT_GOOD, "ept_switch": REPEAT_BAD}, ROUNDS_BAD,
     [("ept_basic", "GOOD", ""), ("ept_switch", "GOOD", "")], "worst=BAD but its TEST line says GOOD"),
    # Counts that do not add up.
    ({"ept_basic": REPEAT_GOOD.replace("good=3", "good=2"), "ept_switch": REPEAT_BAD}, ROUNDS_BAD, TESTS_BAD,
     "3 rounds but the counts add up to 2"),
    # first_fail names a round whose ROUND line does not list the scenario.
    ({"ept_basic": REPEAT_GOOD, "ept_switch": REPEAT_BAD.replace("first_fail=2", "first_fail=1")}, ROUNDS_BAD,
     TESTS_BAD, "first_fail=1 but ROUND 1 does not name it"),
    # A failure without first_fail.
    ({"ept_basic": REPEAT_GOOD, "ept_switch": REPEAT_BAD.replace("first_fail=2", "first_fail=0")}, ROUNDS_BAD,
     TESTS_BAD, "first_fail=0 with 0 error and 2 bad rounds"),
    # A TEST line without its REPEAT line.
    ({"ept_switch": REPEAT_BAD}, ROUNDS_BAD, TESTS_BAD, "TEST ept_basic without its REPEAT line"),
    # More rounds claimed than ROUND lines printed.
    ({"ept_basic": REPEAT_GOOD, "ept_switch": REPEAT_BAD}, ROUNDS_BAD[:2], TESTS_BAD, "3 rounds but 2 ROUND lines"),
    # ROUND lines out of order.
    ({"ept_basic": REPEAT_GOOD, "ept_switch": REPEAT_BAD}, [ROUNDS_BAD[1], ROUNDS_BAD[0], ROUNDS_BAD[2]],
     TESTS_BAD, "ROUND lines not numbered"),
    # A malformed REPEAT line.
    ({"ept_basic": "rounds=3 good=x", "ept_switch": REPEAT_BAD}, ROUNDS_BAD, TESTS_BAD, "malformed line"),
])
def test_repeat_inconsistencies_are_harness_errors(repeats, rounds, tests, problem):
    j = judge_text(repeat_log(rounds, repeats, tests))
    assert j.verdict == V.ERROR and any(problem in p for p in j.problems), j.problems


def test_noise_without_repeat_keeps_seed():
    text = log(GOOD3, "auto", extra_before=["LHV SEED 0x10", "LHV NOISE: cpu1 sent 3 NMIs and 0 IPIs; ..."])
    j = judge_text(text)
    assert j.verdict == V.GOOD and not j.problems
    assert j.to_dict()["repeat"] == {"seed": 0x10, "noise": "cpu1 sent 3 NMIs and 0 IPIs; ..."}
