"""Judge a parsed serial log: the run's verdict, per-scenario verdicts, and the
consistency checks that catch a lying image.

Rules (see DESIGN.md "Output"):
- no LHV banner                     -> NO-OUTPUT (CRASH if the emulator or the
  image reported one; ERROR if other LHV lines appear without the banner)
- more than one banner              -> CRASH (the machine reset and ran again)
- RESULT present: the TEST lines are the truth.  The harness recomputes the
  RESULT (BAD, then ERROR, win; else GOOD if any scenario is GOOD, SKIP if all
  skipped; TIMEOUT = BAD; an `LHV ERROR:` line adds ERROR; no scenario at all
  must give SKIP or ERROR) and the SUMMARY
  counts; any disagreement, a duplicated or malformed TEST line, TEST lines
  after RESULT, a SKIP/BAD/ERROR/TIMEOUT without its reason, a scenario id the
  registry does not know, or a scenario the registry selects that never
  reported, makes the run a harness ERROR.  `LHV RESULT: CRASH`, or a crash
  the emulator reports after RESULT, is CRASH.
- RESULT absent: TIMEOUT if the harness killed the run at its time limit,
  CRASH if the emulator reported a crash / exited / LHV EXCEPTION lines were
  printed, INCOMPLETE for an offline log that just stops.  Scenarios the
  registry selects without a TEST line are listed as missing.
"""

from dataclasses import dataclass, field

from . import known_bugs as kb
from . import verdicts as V
from .logparse import parse_log
from .registry import SUBARCH_BITS


@dataclass
class ScenarioResult:
    id: str
    verdict: str
    reason: str = ""
    info: list = field(default_factory=list)
    known_bug: object = None          # KnownBug or None
    repeat: dict = None               # repeat=: rounds, good, skip, error, bad, worst, worst_round, first_fail

    def to_dict(self):
        d = {"id": self.id, "verdict": self.verdict, "reason": self.reason,
             "info": list(self.info),
             "known_bug": self.known_bug.to_dict() if self.known_bug else None}
        if self.repeat is not None:
            d["repeat"] = {k: v for k, v in self.repeat.items() if k != "lineno"}
        return d


@dataclass
class Context:
    """What the harness knows about how the log was produced."""
    target: str = "judge"
    arch: str = None                  # requested arch (checked against the banner)
    cpu_model: str = None
    cpus: int = None
    firmware: str = None
    target_version: str = None
    tests: str = None                 # tests= given on the command line
    opt: str = None                   # lhv_opt= given (string, as passed)
    inject: str = None
    cmdline: str = ""
    ended: str = None                 # None (offline), "result", "timeout", "crash", "exited"
    end_detail: str = ""
    registry: object = None           # registry.Registry or None
    known_bugs: tuple = kb.KNOWN_BUGS
    qr_cut: bool = False              # a QR code's text cut to fit a small screen (see below)


@dataclass
class Judgement:
    verdict: str
    reason: str = ""
    image_result: str = None
    scenarios: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    banner: dict = None
    caps: dict = field(default_factory=dict)
    smp: dict = field(default_factory=dict)
    tsc: dict = field(default_factory=dict)
    summary: dict = None
    errors: list = field(default_factory=list)
    exceptions: list = field(default_factory=list)
    failures_left_out: bool = False   # a cut QR text lists only some of the non-GOOD scenarios
    repeat: dict = None               # the run's rounds: header, rounds seen, failing rounds, seed, noise

    @property
    def effective_verdict(self):
        """The verdict with known target bugs counted as GOOD."""
        if self.problems or self.verdict not in (V.BAD, V.ERROR) or self.failures_left_out:
            return self.verdict
        if self.image_result != self.verdict or self.errors:
            return self.verdict
        vs = [V.GOOD if s.known_bug else s.verdict for s in self.scenarios]
        return V.image_result(vs) or self.verdict

    def by_id(self):
        return {s.id: s for s in self.scenarios}

    def to_dict(self):
        return {
            "verdict": self.verdict,
            "effective_verdict": self.effective_verdict,
            "reason": self.reason,
            "image_result": self.image_result,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "scenarios": [s.to_dict() for s in self.scenarios],
            "missing": list(self.missing),
            "banner": self.banner,
            "caps": dict(self.caps),
            "smp": dict(self.smp),
            "summary": self.summary,
            "lhv_errors": list(self.errors),
            "exceptions": list(self.exceptions),
            "repeat": self.repeat,
            "image_time": {
                "tsc_start": self.tsc.get("start"),
                "tsc_end": self.tsc.get("end"),
                "tsc_hz": self.tsc.get("hz"),
                "elapsed_ms": self.tsc.get("elapsed_ms"),
            },
        }


def _expected_selection(p, ctx):
    reg = ctx.registry
    if reg is None or p.banner is None:
        return None
    arch = p.banner.get("arch")
    if arch not in SUBARCH_BITS:
        return None
    try:
        opt = int(p.banner.get("opt", ""), 16)
    except ValueError:
        return None
    return reg.selected(arch, opt, ctx.tests)


def cmdline_value(cmdline, key):
    """The last key=value of a multiboot command line (what the image will use)."""
    val = None
    for word in (cmdline or "").split():
        if word.startswith(key + "="):
            val = word[len(key) + 1:]
    return val


QR_CUT_MARK = b"LHV QR CUT"


def _judge_cut_qr(p, j):
    """The QR code of a small screen (VGA text) leaves out the banner, CAPS and GOOD lines, and
    when even that does not fit, some of the other TEST lines (lhv/report.c; an "LHV QR CUT"
    line says so). What it keeps must still add up: no more TEST lines of each verdict than the
    SUMMARY counts, and RESULT as the SUMMARY's counts give it."""
    vs = [s.verdict for s in j.scenarios]
    j.notes.append("QR text cut to fit the screen: banner, CAPS and GOOD lines left out")
    if p.result is None or p.summary is None:
        j.problems.append("no LHV SUMMARY and RESULT in the QR text")
    else:
        listed = {"bad": vs.count(V.BAD) + vs.count(V.TIMEOUT), "skipped": vs.count(V.SKIP),
                  "error": vs.count(V.ERROR)}
        over = [k for k in listed if listed[k] > p.summary[k]]
        if over:
            j.problems.append("the QR's TEST lines count %s, more than its SUMMARY %s" % (listed, p.summary))
        counted = ([V.BAD] * p.summary["bad"] + [V.ERROR] * p.summary["error"] +
                   [V.GOOD] * p.summary["good"] + [V.SKIP] * p.summary["skipped"])
        want = V.image_result(counted)
        if want and p.result not in (want, V.CRASH):
            j.problems.append("QR says RESULT %s but its SUMMARY gives %s" % (p.result, want))
        if sum(listed.values()) < p.summary["bad"] + p.summary["error"] + p.summary["skipped"]:
            j.failures_left_out = True
            j.notes.append("some non-GOOD TEST lines left out too: see the screen's rows")
    if j.problems:
        j.verdict, j.reason = V.ERROR, "harness: " + "; ".join(j.problems)
    else:
        j.verdict = p.result
        j.reason = ", ".join("%s %s" % (s.id, s.verdict) for s in j.scenarios if s.verdict != V.SKIP)
    return j
def _check_repeat(p, j, seen):
    """repeat=: every TEST line has its REPEAT line, which must agree with it and with the
    ROUND lines; fills j.repeat and each scenario's repeat."""
    if p.repeat is None and not p.repeats and not p.rounds:
        if p.seed is not None:
            j.repeat = {"seed": p.seed, "noise": p.noise}
        return
    if p.repeat is None:
        j.problems.append("ROUND/REPEAT lines without the LHV REPEAT line")
    rounds = {r.round: r for r in p.rounds}
    if [r.round for r in p.rounds] != list(range(1, len(p.rounds) + 1)):
        j.problems.append("ROUND lines not numbered 1..%d" % len(p.rounds))
    for sid, r in p.repeats.items():
        s = seen.get(sid)
        if s is None:
            j.problems.append("REPEAT %s without its TEST line" % sid)
            continue
        s.repeat = r
        counted = r["good"] + r["skip"] + r["error"] + r["bad"]
        if counted != r["rounds"]:
            j.problems.append("REPEAT %s: %d rounds but the counts add up to %d" % (sid, r["rounds"], counted))
        worst = V.BAD if r["worst"] == V.TIMEOUT else r["worst"]
        test = V.BAD if s.verdict == V.TIMEOUT else s.verdict
        if worst != test:
            j.problems.append("REPEAT %s: worst=%s but its TEST line says %s" % (sid, r["worst"], s.verdict))
        if bool(r["first_fail"]) != bool(r["error"] + r["bad"]):
            j.problems.append("REPEAT %s: first_fail=%d with %d error and %d bad rounds" % (
                sid, r["first_fail"], r["error"], r["bad"]))
        line = rounds.get(r["first_fail"])
        if r["first_fail"] and line is not None and not line.cut and \
                sid not in [fid for _v, fid in line.failed]:
            j.problems.append("REPEAT %s: first_fail=%d but ROUND %d does not name it" % (
                sid, r["first_fail"], r["first_fail"]))
        if r["rounds"] > max(len(p.rounds), 1):
            j.problems.append("REPEAT %s: %d rounds but %d ROUND lines" % (sid, r["rounds"], len(p.rounds)))
    if p.repeat is not None:
        for sid in seen:
            if sid not in p.repeats:
                j.problems.append("TEST %s without its REPEAT line" % sid)
    failing = {}
    for r in p.rounds:
        for v, sid in r.failed:
            failing.setdefault(sid, []).append(r.round)
    j.repeat = {"requested": dict(p.repeat or {}), "rounds": len(p.rounds), "seed": p.seed,
                "noise": p.noise, "failing_rounds": failing}


def judge_text(text, ctx=None):
    return judge(parse_log(text), ctx)


def judge(p, ctx=None):
    ctx = ctx or Context()
    j = Judgement(verdict=V.ERROR, banner=p.banner, caps=p.caps, smp=p.smp, tsc=p.tsc,
                  summary=p.summary, errors=list(p.errors), exceptions=list(p.exceptions),
                  image_result=p.result)

    # Scenario table (first TEST line per id wins; duplicates are a problem).
    seen = {}
    for t in p.tests:
        if t.id in seen:
            j.problems.append("TEST %s reported twice (line %d)" % (t.id, t.lineno))
            continue
        s = ScenarioResult(t.id, t.verdict, t.reason, list(p.infos.get(t.id, [])))
        if t.verdict != V.GOOD and not t.reason:
            j.problems.append("TEST %s: %s without a reason" % (t.id, t.verdict))
        s.known_bug = kb.find(t.id, t.verdict, ctx.target, ctx.cpu_model,
                              ctx.target_version, ctx.known_bugs)
        seen[t.id] = s
        j.scenarios.append(s)
    for n, line in p.malformed:
        j.problems.append("malformed line %d: %r" % (n, line))
    _check_repeat(p, j, seen)

    if ctx.qr_cut:
        return _judge_cut_qr(p, j)
    if not p.banners:
        if ctx.ended == "crash" or p.result == V.CRASH or p.exceptions:
            j.verdict = V.CRASH
            j.reason = "no LHV banner; " + "; ".join(
                x for x in [ctx.end_detail if ctx.ended == "crash" else ""]
                + p.exceptions[-1:] + (["RESULT CRASH"] if p.result == V.CRASH else []) if x)
        elif p.tests or p.result or p.summary or p.errors:
            j.verdict, j.reason = V.ERROR, "harness: LHV output without its banner line"
            j.problems.append("no LHV banner before the other LHV lines")
        else:
            j.verdict = V.NO_OUTPUT
            j.reason = "no LHV banner on serial" + (
                " (%s)" % ctx.end_detail if ctx.end_detail else "")
        return j

    b = p.banner
    if ctx.arch and b.get("arch") and b.get("arch") != ctx.arch:
        j.problems.append("banner says arch=%s, asked for %s" % (b.get("arch"), ctx.arch))
    if ctx.firmware and b.get("boot") and b.get("boot") != ctx.firmware:
        j.problems.append("banner says boot=%s, booted by %s" % (b.get("boot"), ctx.firmware))

    # selftest=<name>[,<name>...] runs built-in self-tests (selftest_<name>, not
    # in the registry) before the selection.
    selftest = cmdline_value(ctx.cmdline, "selftest")
    expected = None if selftest else _expected_selection(p, ctx)
    reported = set(seen)
    if ctx.registry is not None:
        # Every record is in every image, but a scenario built for the other
        # subarch is not part of this image's run: its TEST line is a problem.
        arch = (p.banner or {}).get("arch")
        known_ids = set(ctx.registry.ids(arch if arch in SUBARCH_BITS else None))
        if selftest:
            known_ids.update("selftest_" + name for name in selftest.split(",") if name)
        for sid in sorted(reported - known_ids):
            j.problems.append("TEST %s: not a scenario of this image's registry" % sid)
    if expected is not None:
        j.missing = [sid for sid in expected if sid not in reported]

    if len(p.banners) > 1:
        j.verdict = V.CRASH
        j.reason = "LHV banner printed %d times (line %s): the machine reset" % (
            len(p.banners), ", ".join(str(x["lineno"]) for x in p.banners))
        return j

    if p.result is None:
        if ctx.ended == "timeout":
            j.verdict, j.reason = V.TIMEOUT, ctx.end_detail or "run exceeded its time limit"
        elif ctx.ended in ("crash", "exited"):
            j.verdict, j.reason = V.CRASH, ctx.end_detail or "emulator ended before RESULT"
        elif p.exceptions:
            j.verdict, j.reason = V.CRASH, "log ends after: " + p.exceptions[-1]
        else:
            j.verdict, j.reason = V.INCOMPLETE, "log ends without LHV RESULT"
        if j.missing:
            j.reason += "; missing: " + ", ".join(j.missing)
        return j

    # RESULT present: cross-check everything the image claims.
    if p.result_count > 1:
        j.problems.append("LHV RESULT printed %d times" % p.result_count)
    for n, line in p.after_result:
        j.problems.append("line %d after RESULT: %r" % (n, line))
    vs = [s.verdict for s in j.scenarios]
    if p.errors:
        want = V.image_result(vs + [V.ERROR])
        allowed = {want}
    elif not vs:
        allowed = {V.SKIP, V.ERROR}
        want = "SKIP or ERROR (no scenario reported)"
    else:
        want = V.image_result(vs)
        allowed = {want}
    if p.result != V.CRASH and p.result not in allowed:
        j.problems.append("image says RESULT %s but its TEST lines give %s" % (p.result, want))
    if p.summary is None:
        if not p.errors:
            j.problems.append("no LHV SUMMARY line before RESULT")
    else:
        counts = {"good": vs.count(V.GOOD), "bad": vs.count(V.BAD) + vs.count(V.TIMEOUT),
                  "skipped": vs.count(V.SKIP), "error": vs.count(V.ERROR)}
        if counts != p.summary:
            j.problems.append("SUMMARY says %s but TEST lines count %s" % (
                ", ".join("%d %s" % (p.summary[k], k) for k in counts),
                ", ".join("%d %s" % (counts[k], k) for k in counts)))
        if p.summary_count > 1:
            j.problems.append("LHV SUMMARY printed %d times" % p.summary_count)
    if j.missing and p.result != V.CRASH and not p.errors:
        j.problems.append("selected but never reported: " + ", ".join(j.missing))

    if ctx.ended == "crash":
        j.verdict = V.CRASH
        j.reason = "after RESULT %s: %s" % (p.result, ctx.end_detail or "emulator crash")
    elif p.result == V.CRASH:
        j.verdict = V.CRASH
        j.reason = "image reported CRASH" + (": " + p.exceptions[0] if p.exceptions else "")
    elif j.problems:
        j.verdict = V.ERROR
        j.reason = "harness: " + "; ".join(j.problems)
    else:
        j.verdict = p.result
        if p.errors:
            j.reason = "LHV ERROR: " + "; ".join(p.errors)
        else:
            bad = [s for s in j.scenarios if s.verdict != V.GOOD and s.verdict != V.SKIP]
            j.reason = ", ".join("%s %s" % (s.id, s.verdict) for s in bad)
    return j
