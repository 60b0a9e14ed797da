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
        scenario="nmi_blocking",
        target="bochs",
        cpu_model=("*",),
        version="2.7*",
        verdict="BAD",
        reference="Bochs SourceForge bug #1456 (https://sourceforge.net/p/bochs/bugs/1456/): "
                  "VMenterLoadCheckGuestState() never unmasks NMIs, so L1's blocking carries into L2 "
                  "(steps B, C 1/1, F); fixed by bd51ec5f8 (2023-04-08), released in Bochs 2.8. "
                  "SourceForge bug #1460 / GitHub bochs-emu/Bochs #211: handleAsyncEvent() masks the NMI "
                  "before VMexit_Event(), so an NMI exit saves blocking by NMI = 1 (step A 1/0); fixed by "
                  "6b48d6e33 (2024-01-12), released in Bochs 2.8. The HLT activity state is not saved "
                  "at an NMI exit (step F): see the 2.8/3.0 entry",
        summary="Bochs 2.7: VM entry keeps L1's NMI blocking; NMI exit saves blocking by NMI",
    ),
    KnownBug(
        scenario="nmi_blocking",
        target="bochs",
        cpu_model=("*",),
        version="[23].[08]",  # the 2.8 and 3.0 releases, not "3.0.devel" (master)
        verdict="BAD",
        reference="handleWaitForEvent() (cpu/event.cc) set the activity state to ACTIVE as soon as an "
                  "event woke the CPU, before the NMI VM exit saved it, so an NMI exit out of HLT saves "
                  "activity state 0 instead of 1 (SDM 28.3.4; step F). Changed by f9502df9f (2026-07-24, "
                  "'attempt to fix #757', GitHub bochs-emu/Bochs #757, whose report is about the "
                  "WAIT-FOR-SIPI exit); not in a release yet (after REL_3_0_FINAL), no report of its own",
        summary="Bochs 2.8/3.0: NMI exit out of HLT saves activity state ACTIVE",
    ),
    KnownBug(
        scenario="nmi_window",
        target="bochs",
        cpu_model=("*",),
        version="[23].[078]",  # 2.7, 2.8, 3.0; not "3.0.devel" (master)
        verdict="BAD",
        reference="On 2.7 step 6 fails first, by SourceForge bug #1456 (see nmi_blocking: the VM entry "
                  "leaves L1 NMI-blocked, so the NMI pending at entry is not taken after the NMI-window "
                  "exit; fixed in 2.8). On 2.7, 2.8 and 3.0: GitHub bochs-emu/Bochs #626 and #648: the VM-entry check that rejects an injected NMI "
                  "while virtual-NMI blocking is set (SDM 27.3.1.5) is commented out in "
                  "VMenterLoadCheckVmControls() (cpu/vmx.cc); fixed by 203b044f5 (2025-10-20) and "
                  "18fa36af4 (2025-11-22, exit reason 0x80000021); not in a release yet (after REL_3_0_FINAL)",
        summary="Bochs 2.7-3.0: NMI injection under virtual-NMI blocking enters instead of failing",
    ),
)


def find(scenario, verdict, target, cpu_model=None, version=None, table=KNOWN_BUGS):
    for bug in table:
        if bug.matches(scenario, verdict, target, cpu_model, version):
            return bug
    return None
