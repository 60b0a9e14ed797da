"""Known bugs of the targets LHV runs on.

A scenario verdict that matches an entry here is still reported as it is
(BAD stays BAD in the table, the JSON and the JUnit file) but is marked
"known" with the upstream reference, and it does not make the harness exit
status or the pytest suite fail.  The entry is a finding, not a waiver: if the
target is fixed, the scenario turns GOOD and the entry simply stops matching.

Fields:
  scenario   scenario id (fnmatch glob)
  target     harness target name (bochs, qemu-tcg, qemu-kvm, vmware, judge)
  cpu_model  fnmatch globs on the CPU model the target was given ("*" = any)
  version    fnmatch glob on the target's version string (e.g. Bochs "2.7")
  verdict    the verdict the bug produces
  reference  where the bug is described upstream
"""

import fnmatch
from dataclasses import dataclass, asdict


@dataclass(frozen=True)
class KnownBug:
    scenario: str
    target: str
    cpu_model: tuple
    version: str
    verdict: str
    reference: str
    summary: str

    def matches(self, scenario, verdict, target, cpu_model=None, version=None):
        if not fnmatch.fnmatchcase(scenario, self.scenario):
            return False
        if verdict != self.verdict or target != self.target:
            return False
        if not any(fnmatch.fnmatchcase(cpu_model or "", m) for m in self.cpu_model):
            return False
        return fnmatch.fnmatchcase(version or "", self.version)

    def to_dict(self):
        d = asdict(self)
        d["cpu_model"] = list(self.cpu_model)
        return d


KNOWN_BUGS = (
    KnownBug(
        scenario="mtf",
        target="bochs",
        cpu_model=("tigerlake", "corei7_icelake_u"),
        version="2.7*",
        verdict="BAD",
        reference="Bochs 2.7 advertises the monitor trap flag (IA32_VMX_PROCBASED_CTLS "
                  "allowed-1 bit 27) on these models but never delivers an MTF VM exit: seen "
                  "by LHV's mtf scenario on Debian's bochs 2.7+dfsg (and in shared/DESIGN.md's "
                  "measurements, which place the fix in Bochs 2.8; not checked against "
                  "Bochs' own change log)",
        summary="Bochs 2.7: MTF offered but no MTF VM exit",
    ),
    KnownBug(
        scenario="cr_shadows",
        target="bochs",
        cpu_model=("*",),
        version="2.7*",
        verdict="BAD",
        reference="Bochs GitHub issue #614 (https://github.com/bochs-emu/Bochs/issues/614), "
                  "fixed by commits 35f2a518a and 01ee0d0c2 (September 2025), after 3.0 and in "
                  "no release yet: BX_CPU_C::check_CR0 (cpu/crregs.cc) skips the CR0.PE/PG "
                  "fixed-bit rule for every VMX guest instead of only with unrestricted guest, so "
                  "an L2 MOV to CR0 that clears PG when L1 does not own it succeeds instead of "
                  "#GP(0) (SDM 26.3 'MOV to CR0', 24.8). Seen on the i386 image only: in 64-bit "
                  "mode clearing PG is #GP anyway",
        summary="Bochs 2.7: L2 may clear CR0.PG without unrestricted guest",
    ),
    KnownBug(
        scenario="cr_shadows",
        target="bochs",
        cpu_model=("*",),
        version="3.0*",
        verdict="BAD",
        reference="Bochs GitHub issue #614 (https://github.com/bochs-emu/Bochs/issues/614), "
                  "fixed by commits 35f2a518a and 01ee0d0c2 (September 2025), after 3.0 and in "
                  "no release yet: BX_CPU_C::check_CR0 (cpu/crregs.cc) skips the CR0.PE/PG "
                  "fixed-bit rule for every VMX guest instead of only with unrestricted guest, so "
                  "an L2 MOV to CR0 that clears PG when L1 does not own it succeeds instead of "
                  "#GP(0) (SDM 26.3 'MOV to CR0', 24.8). Seen on the i386 image only: in 64-bit "
                  "mode clearing PG is #GP anyway",
        summary="Bochs 3.0: L2 may clear CR0.PG without unrestricted guest",
    ),
)


def find(scenario, verdict, target, cpu_model=None, version=None, table=KNOWN_BUGS):
    for bug in table:
        if bug.matches(scenario, verdict, target, cpu_model, version):
            return bug
    return None
