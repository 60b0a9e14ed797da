#!/usr/bin/env python3
"""The floors of lhv/ run one way: lib -> arch -> console -> vmx -> runner -> main.

A file may use (call, read, include) what its own floor or a floor below it defines, never what
a floor above it defines. Two checks:

  * symbols: every undefined symbol of a built object (`nm`) that another object defines must be
    defined on the same floor or below (function pointers handed down at run time are the way up:
    trap handlers, the AP set-up work, the VMX failure handler, run_end);
  * includes: every `#include "..."` of a source or header names a header on the same floor or
    below.

Usage: tools/check_layers.py [build/<arch> ...]   (default: every build/<arch> that exists)
Exit status 1 and one line per upward dependency when the floors are broken.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ["lib", "arch", "console", "vmx", "runner", "main"]

# Longest prefix wins. options.c is configuration read by every floor (lhv_opt()), built only on
# lib; guest/ is the L2 side that the VMX floor starts; boot/ is the CPU's entry, part of arch.
PREFIXES = {
    "lhv/lib/": "lib",
    "lhv/options.c": "lib",
    "lhv/options.h": "lib",
    "lhv/arch/": "arch",
    "lhv/boot/": "arch",
    "lhv/console/": "console",
    "lhv/vmx/": "vmx",
    "guest/": "vmx",
    "lhv/scenario.h": "runner",
    "lhv/run.h": "runner",
    "lhv/run.c": "runner",
    "lhv/expect.c": "runner",
    "lhv/report.c": "runner",
    "lhv/guard.c": "runner",
    "lhv/guard.h": "runner",
    "lhv/selftest.c": "runner",
    "lhv/repeat.c": "runner",
    "tests/": "runner",
    "lhv/main.c": "main",
}

# The only calls up: the reset vector, which enters L1's start-up code once.
ALLOWED_UP = {("arch", "lhv_main")}


def floor_of(path):
    best = None
    for prefix, floor in PREFIXES.items():
        if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, floor)
    return best[1] if best else None


def source_of(obj, build):
    """build/amd64/lhv/arch/smp.c.o -> lhv/arch/smp.c"""
    rel = obj.relative_to(build).as_posix()
    return rel[: -len(".o")]


def nm_symbols(obj):
    out = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
        elif len(parts) == 3 and parts[1].isupper() and parts[1] not in "UW":
            defined.add(parts[2])
    return defined, undefined


def check_symbols(build):
    problems, objects = [], []
    for obj in sorted(build.rglob("*.o")):
        src = source_of(obj, build)
        if build.is_relative_to(ROOT / "build") and not (ROOT / src).exists():
            continue  # left over from a source file that is gone
        floor = floor_of(src)
        if floor is None:
            problems.append("%s: no floor assigned (add it to PREFIXES in tools/check_layers.py)" % src)
            continue
        objects.append((src, floor) + nm_symbols(obj))
    if not objects:
        return ["%s: no objects (run `make` first)" % build]
    where = {}
    for src, floor, defined, _ in objects:
        for sym in defined:
            where[sym] = (src, floor)
    for src, floor, _, undefined in objects:
        for sym in sorted(undefined):
            if sym not in where:
                continue  # the linker script or libgcc
            def_src, def_floor = where[sym]
            if FLOORS.index(def_floor) > FLOORS.index(floor) and (floor, sym) not in ALLOWED_UP:
                problems.append("%s (%s) uses %s from %s (%s): upward" % (src, floor, sym, def_src, def_floor))
    return problems


INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def check_includes():
    problems = []
    files = [p for d in ("lhv", "guest", "tests") for p in (ROOT / d).rglob("*") if p.suffix in (".c", ".h", ".S", ".inc")]
    for path in sorted(files):
        rel = path.relative_to(ROOT).as_posix()
        floor = floor_of(rel)
        if floor is None:
            problems.append("%s: no floor assigned (add it to PREFIXES in tools/check_layers.py)" % rel)
            continue
        for name in INCLUDE.findall(path.read_text()):
            target = next((t for t in ("lhv/" + name, name) if (ROOT / t).exists()), None)
            target_floor = floor_of(target) if target else None
            if target_floor and FLOORS.index(target_floor) > FLOORS.index(floor):
                problems.append("%s (%s) includes %s (%s): upward" % (rel, floor, target, target_floor))
    return problems


def main(argv):
    builds = [Path(a) for a in argv] or sorted(p for p in (ROOT / "build").glob("*") if p.is_dir() and any(p.rglob("*.o")))
    problems = check_includes()
    if not builds:
        problems.append("no build/<arch> with objects: run `make` first")
    for build in builds:
        problems += check_symbols(build.resolve())
    for p in problems:
        print(p)
    if not problems:
        print("floors one way (%s): %s" % (" -> ".join(FLOORS), ", ".join(b.name for b in builds)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
