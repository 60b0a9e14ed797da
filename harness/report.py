"""Reports: readable table, side-by-side comparison, JUnit XML, JSON."""

import json
import xml.etree.ElementTree as ET

from . import verdicts as V


def _scenario_cell(s):
    v = s["verdict"]
    if s.get("known_bug"):
        v += " (known)"
    return v


def _fmt_time(rec):
    it = rec.get("image_time") or {}
    t = "wall %.1f s" % rec.get("wall_s", 0.0)
    if it.get("elapsed_ms") is not None:
        t += ", image %s ms" % it["elapsed_ms"]
    return t


def _repeat_lines(rec):
    """repeat= and noise=: the rounds, the seed, and per scenario that failed in some round
    how often and first when."""
    rep = rec.get("repeat")
    if not rep:
        return []
    head = "  rounds: %d" % rep.get("rounds", 0) if "rounds" in rep else "  noise"
    if rep.get("seed") is not None:
        head += ", seed 0x%x" % rep["seed"]
    if rep.get("noise"):
        head += "; noise: " + rep["noise"]
    out = [head]
    for s in rec.get("scenarios", []):
        r = s.get("repeat")
        if r and r.get("first_fail"):
            out.append("  %s: %s in %d of %d rounds, first in round %d (worst %s, round %d)" % (
                s["id"], "failed", r["error"] + r["bad"], r["rounds"], r["first_fail"],
                r["worst"], r["worst_round"]))
    return out


def table(rec):
    """One run as readable text."""
    out = []
    head = "%s  ->  %s" % (rec["name"], rec["verdict"])
    if rec.get("effective_verdict") and rec["effective_verdict"] != rec["verdict"]:
        head += " (%s counting known target bugs)" % rec["effective_verdict"]
    out.append(head)
    b = rec.get("banner")
    if b:
        out.append("  image: LHV %s arch=%s boot=%s cpus=%s opt=%s cpu=\"%s\"" % (
            b.get("version"), b.get("arch"), b.get("boot"), b.get("cpus"), b.get("opt"),
            b.get("cpu", "")))
    out.append("  time: " + _fmt_time(rec) + (
        "; target %s %s" % (rec["target"], rec["target_version"]) if rec.get("target_version")
        else ""))
    rows = [(s["id"], _scenario_cell(s), s.get("reason", "")) for s in rec.get("scenarios", [])]
    rows += [(m, "MISSING", "no TEST line") for m in rec.get("missing", [])]
    if rows:
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        for sid, v, why in rows:
            out.append(("  %-*s  %-*s  %s" % (w0, sid, w1, v, why)).rstrip())
        for s in rec.get("scenarios", []):
            for info in s.get("info", []):
                out.append("  INFO %s: %s" % (s["id"], info))
            if s.get("known_bug"):
                out.append("  known bug %s: %s" % (s["id"], s["known_bug"]["reference"]))
    out += _repeat_lines(rec)
    for e in rec.get("lhv_errors", []):
        out.append("  LHV ERROR: " + e)
    scrn = rec.get("screen") or {}
    if scrn.get("checked"):
        out.append("  screen: %s%s" % ("agrees with serial" if scrn.get("ok") else "DISAGREES",
                                       "" if scrn.get("ok") else " (%s)" % scrn.get("reason")))
    elif scrn.get("reason"):
        out.append("  screen: not checked (%s)" % scrn["reason"])
    for p in rec.get("problems", []):
        out.append("  problem: " + p)
    if rec.get("reason") and rec["verdict"] not in (V.GOOD,):
        out.append("  reason: " + rec["reason"])
    logs = rec.get("logs") or {}
    if logs:
        out.append("  logs: " + ", ".join("%s=%s" % kv for kv in sorted(logs.items())))
    return "\n".join(out)


def column_names(recs):
    """Column headings for compare(): the parts of the run names that differ between the runs
    (bochs-2.7 | bochs-3.0 | bochs-3.0.devel, or i386 | amd64), else run 1, run 2..."""
    names = [r["name"] for r in recs]
    # The same " [command line]" on every run says nothing about the columns.
    if len({n.partition(" [")[2] for n in names}) == 1:
        names = [n.partition(" [")[0] for n in names]
    parts = [n.split("/") for n in names]
    if len(recs) > 1 and len({len(p) for p in parts}) == 1:
        differ = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
        heads = ["/".join(p[i] for i in differ) for p in parts]
        if all(heads) and len(set(heads)) == len(heads) and max(map(len, heads)) <= 32:
            return heads
    return ["run %d" % (i + 1) for i in range(len(recs))]


def compare(recs):
    """Scenarios as rows, runs as columns; marks rows whose verdicts differ."""
    ids = []
    for r in recs:
        for s in r.get("scenarios", []):
            if s["id"] not in ids:
                ids.append(s["id"])
        for m in r.get("missing", []):
            if m not in ids:
                ids.append(m)
    cols = column_names(recs)
    cells = []
    for sid in ids:
        row = []
        for r in recs:
            by = {s["id"]: s for s in r.get("scenarios", [])}
            if sid in by:
                row.append(_scenario_cell(by[sid]))
            elif sid in r.get("missing", []):
                row.append("MISSING")
            else:
                row.append("-")
        cells.append(row)
    result_row = [r["verdict"] for r in recs]
    w0 = max([len("scenario")] + [len(i) for i in ids])
    ws = [max([len(c)] + [len(row[k]) for row in cells] + [len(result_row[k])])
          for k, c in enumerate(cols)]
    out = ["Runs:"]
    for c, r in zip(cols, recs):
        # The binary too where the user chose it (several Bochs builds side by side).
        prog = r.get("target_program")
        out.append("  %s = %s%s" % (c, r["name"], "  (%s)" % prog if prog else ""))
    out.append("")
    out.append("  " + "  ".join(["scenario".ljust(w0)] + [c.ljust(w) for c, w in zip(cols, ws)]))
    for sid, row in zip(ids, cells):
        # A SKIP on a target without the feature is no finding; GOOD on one
        # target and BAD/ERROR/TIMEOUT/MISSING on another is.
        plain = {c.replace(" (known)", "") for c in row if c not in ("-", V.SKIP)}
        mark = "  <-- differs" if len(plain) > 1 else ""
        out.append("  " + "  ".join([sid.ljust(w0)] + [c.ljust(w) for c, w in zip(row, ws)])
                   + mark)
    out.append("  " + "  ".join(["RESULT".ljust(w0)] + [c.ljust(w) for c, w in zip(result_row, ws)]))
    return "\n".join(x.rstrip() for x in out)


def to_json(recs):
    return json.dumps({"runs": recs}, indent=2, sort_keys=False, default=str)


def junit(recs):
    suites = ET.Element("testsuites")
    for r in recs:
        suite = ET.SubElement(suites, "testsuite", name=r["name"])
        n = fails = errs = skips = 0
        for s in r.get("scenarios", []):
            n += 1
            tc = ET.SubElement(suite, "testcase", classname=r["name"], name=s["id"])
            msg = "%s %s" % (s["verdict"], s.get("reason", ""))
            if s.get("known_bug"):
                ET.SubElement(tc, "system-out").text = "known target bug: %s (%s)" % (
                    msg, s["known_bug"]["reference"])
            elif s["verdict"] == V.SKIP:
                skips += 1
                ET.SubElement(tc, "skipped", message=s.get("reason", ""))
            elif s["verdict"] in (V.BAD, V.TIMEOUT):
                fails += 1
                ET.SubElement(tc, "failure", message=msg).text = msg
            elif s["verdict"] == V.ERROR:
                errs += 1
                ET.SubElement(tc, "error", message=msg).text = msg
            if s.get("info"):
                ET.SubElement(tc, "system-out").text = "\n".join(s["info"])
        for m in r.get("missing", []):
            n += 1
            tc = ET.SubElement(suite, "testcase", classname=r["name"], name=m)
            errs += 1
            ET.SubElement(tc, "error", message="no TEST line (%s)" % r["verdict"])
        # The run itself: verdict, harness cross-checks, screen check.
        n += 1
        tc = ET.SubElement(suite, "testcase", classname=r["name"], name="run")
        ev = r.get("effective_verdict", r["verdict"])
        msg = "%s: %s" % (r["verdict"], r.get("reason", ""))
        if ev in (V.SKIP, V.UNAVAILABLE):
            skips += 1
            ET.SubElement(tc, "skipped", message=msg)
        elif ev not in (V.GOOD, V.BUNDLE):
            errs += 1
            ET.SubElement(tc, "error", message=msg).text = "\n".join(
                [msg] + r.get("problems", []))
        ET.SubElement(tc, "system-out").text = "\n".join(
            "%s: %s" % kv for kv in sorted((r.get("logs") or {}).items()))
        suite.set("tests", str(n))
        suite.set("failures", str(fails))
        suite.set("errors", str(errs))
        suite.set("skipped", str(skips))
        suite.set("time", "%.3f" % r.get("wall_s", 0.0))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def exit_code(recs):
    if not recs:
        return V.EXIT_STATUS[V.ERROR]
    worst = V.worst([r.get("effective_verdict", r["verdict"]) for r in recs])
    return V.exit_status(worst)
