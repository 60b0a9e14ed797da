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
                  "by LHV's mtf scenario on Debian's bochs 2.7+dfsg. Fixed upstream by "
                  "bochs-emu/Bochs commit b94657083 \"implemented VMX Monitor Trap Flag "
                  "handling\" (2022-08-16, cpu/event.cc, cpu/vmx.cc), first released in 2.8; "
                  "GOOD on 3.0",
        summary="Bochs 2.7: MTF offered but no MTF VM exit",
    ),
)


def find(scenario, verdict, target, cpu_model=None, version=None, table=KNOWN_BUGS):
    for bug in table:
        if bug.matches(scenario, verdict, target, cpu_model, version):
            return bug
    return None
