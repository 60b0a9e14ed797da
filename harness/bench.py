"""`python3 -m harness bench` (`make bench`): what repeat= buys for race hunting.

For each arch, two Bochs boots of the same selection, one after the other: one round (the cost
of a reboot per round: BIOS, GRUB, LHV's start-up, the round, the screen dump), then repeat=N
rounds in one boot. It prints figures, it judges nothing: rounds per minute with a reboot per
round, in one boot (the boot included), and the steady rate of the extra rounds, which is what a
long repeat_ms= run gets. Both boots must be GOOD, or the figures would measure something else.
"""

import json
import sys
from pathlib import Path

from . import verdicts as V
from .report import table
from .runner import RunSpec, run

# The EPT/TLB family: the scenarios whose races (a lost EPTE update, a missing INVEPT/INVVPID)
# need many rounds to show.
EPT_TLB_FAMILY = ("ept_basic,ept_on_demand,ept_large_pages,ept_rights_walk,ept_switch,vpid_invvpid,"
                  "invept_per_cpu,vmfunc_eptp_switch")


def measure(arch, model, cpus, tests, rounds):
    """(figures, problem): the two boots of one arch; problem is None when both were GOOD."""
    one = run(RunSpec(target="bochs", arch=arch, cpu_model=model, cpus=cpus, tests=tests))
    many = run(RunSpec(target="bochs", arch=arch, cpu_model=model, cpus=cpus, tests=tests,
                       extra="repeat=%d" % rounds))
    for rec in (one, many):
        if rec["verdict"] != V.GOOD:
            return None, "%s: %s\n%s" % (rec["name"], rec["verdict"], table(rec))
    seen = (many.get("repeat") or {}).get("rounds", 0)
    if seen != rounds:
        return None, "%s: %d ROUND lines, asked for %d" % (many["name"], seen, rounds)
    w1, wn = one["wall_s"], many["wall_s"]
    image_ms = (many.get("image_time") or {}).get("elapsed_ms")
    fig = {
        "arch": arch, "cpu_model": model, "cpus": cpus, "tests": tests, "rounds": rounds,
        "target_version": many.get("target_version"),
        "reboot_wall_s": w1,
        "repeat_wall_s": wn,
        "per_min_reboot": 60.0 / w1,
        "per_min_one_boot": 60.0 * rounds / wn,
        "per_min_steady": 60.0 * (rounds - 1) / (wn - w1) if wn > w1 else None,
        "image_ms_per_round": image_ms / rounds if image_ms else None,
        "scenarios": len(many.get("scenarios", [])),
    }
    return fig, None


def format_figures(figs):
    rows = [("arch", "model x cpus", "scenarios", "reboot/round", "rounds/min: reboot", "one boot",
             "steady", "image ms/round")]
    for f in figs:
        rows.append((f["arch"], "%s x%d" % (f["cpu_model"], f["cpus"]), str(f["scenarios"]),
                     "%.1f s" % f["reboot_wall_s"], "%.1f" % f["per_min_reboot"],
                     "%.1f" % f["per_min_one_boot"],
                     "%.1f" % f["per_min_steady"] if f["per_min_steady"] else "-",
                     "%.0f" % f["image_ms_per_round"] if f["image_ms_per_round"] else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main(args):
    tests = args.tests or EPT_TLB_FAMILY
    figs = []
    rc = 0
    for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
        fig, problem = measure(arch, args.cpu_model, args.cpus, tests, args.rounds)
        if problem:
            print("bench: " + problem, file=sys.stderr)
            rc = V.EXIT_STATUS[V.ERROR]
            continue
        figs.append(fig)
    print("repeat= against a reboot per round (Bochs %s, selection: %s, %d rounds in one boot)" % (
        figs[0]["target_version"] if figs else "?", tests, args.rounds))
    print(format_figures(figs))
    print("rounds/min: reboot = 60 / (wall time of a one-round boot); one boot = rounds / wall time of "
          "the repeat boot; steady = the extra rounds / the extra wall time (a long repeat_ms= run)")
    if args.json:
        Path(args.json).write_text(json.dumps(figs, indent=1) + "\n")
    return rc
