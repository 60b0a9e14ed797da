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
    KnownBug(
        scenario="mtf_events",
        target="bochs",
        cpu_model=("tigerlake", "corei7_icelake_u"),
        version="2.7*",
        verdict="BAD",
        reference="the same Bochs 2.7 bug as `mtf`: the monitor trap flag is advertised "
                  "(IA32_VMX_PROCBASED_CTLS allowed-1 bit 27) but no MTF VM exit is ever "
                  "delivered; implemented by Bochs commits b94657083 \"implemented VMX Monitor "
                  "Trap Flag handling\" and fac15a7d0 (2022-08-16; stlintel/Bochs #29, bochs-emu "
                  "#141), first in REL_2_8_FINAL; mtf_events is GOOD on Bochs 3.0 and master",
        summary="Bochs 2.7: MTF offered but no MTF VM exit",
    ),
    # Two bugs, both in every Bochs from 2.7 to master (3.0.devel) as of its source, so any
    # version matches. Not reported upstream: the reports are in harness/bochs-reports/.
    KnownBug(
        scenario="vmentry_fail_info",
        target="bochs",
        cpu_model=("*",),
        version="*",
        verdict="BAD",
        reference="not reported upstream; harness/bochs-reports/vmentry-failure-exit-info.md "
                  "(cpu/vmx.cc BX_CPU_C::VMexit writes the VM-exit instruction length, "
                  "interruption information and IDT-vectoring information also for exit "
                  "reasons 33/34 with bit 31 set, against SDM 27.8) and "
                  "harness/bochs-reports/debugctl-reserved-bits.md (VMenterLoadCheckGuestState "
                  "reads GUEST_IA32_DEBUGCTL without the reserved-bit check of SDM 27.3.1.1); "
                  "unfixed in Bochs master 783b58fd6",
        summary="Bochs: failed VM entries overwrite exit-information fields; no DEBUGCTL reserved-bit check",
    ),
    KnownBug(
        scenario="intr_window",
        target="bochs",
        cpu_model=("*",),
        version="*",
        verdict="BAD",
        reference="No upstream report found; see harness/bochs-reports/intr-window-hlt.md. "
                  "SDM Vol. 3C 27.7.5: interrupt-window VM exits wake a logical processor that "
                  "VM entry left in the HLT state. Bochs' handleWaitForEvent (cpu/event.cc, 2.7 "
                  "and master 783b58fd6) does not count BX_EVENT_VMX_INTERRUPT_WINDOW_EXITING as "
                  "a wake-up event, so the exit comes only at the next interrupt (LHV sees the "
                  "preemption timer first). Not fixed in any release",
        summary="Bochs: interrupt-window exit does not wake a guest entered in HLT",
    ),
    KnownBug(
        scenario="extint_exit",
        target="bochs",
        cpu_model=("*",),
        version="*",
        verdict="BAD",
        reference="No upstream report found; see harness/bochs-reports/extint-exit-guest-if0.md. "
                  "SDM Vol. 3C 26.3: with external-interrupt exiting RFLAGS.IF does not block "
                  "external interrupts. Bochs' VM entry loads guest RFLAGS (setEFlags in "
                  "VMenterLoadCheckGuestState, cpu/vmx.cc) before it sets in_vmx_guest, and "
                  "handleInterruptMaskChange (cpu/flag_ctrl_pro.cc) runs only when IF changes: "
                  "entered from L1 with IF=0 into a guest with IF=0, pending interrupts stay "
                  "masked and no exit comes. 2.7 to master 783b58fd6; not fixed in any release",
        summary="Bochs: no external-interrupt exit while the guest's IF=0",
    ),
    KnownBug(
        scenario="ept_ad_pml",
        target="bochs",
        cpu_model=("corei7_skylake_x", "tigerlake", "corei7_icelake_u"),
        version="2.7*",
        verdict="BAD",
        reference="Bochs GitHub issue #217 (https://github.com/bochs-emu/Bochs/issues/217): "
                  "vmx_page_modification_logging() in cpu/vmexit.cc wrote the full guest-physical "
                  "address into the page-modification log, not the 4 KiB-aligned one SDM 29.3.6 "
                  "requires; fixed by commit 9fc53de18 \"VMX: PML address saved should be always 4K "
                  "aligned\" (2024-01-13, LPFOf(guest_paddr)), first released in Bochs 2.8",
        summary="Bochs 2.7: PML logs unaligned guest-physical addresses",
    ),
    KnownBug(
        scenario="tsc_offset",
        target="bochs",
        cpu_model=("*",),
        version="*",
        verdict="BAD",
        reference="no upstream report found: harness/bochs-reports/vmexit-store-tsc.md. "
                  "VMexit() in cpu/vmx.cc calls StoreMSRs() while still in guest context, and "
                  "rdmsr(IA32_TSC) (cpu/msr.cc, get_TSC_VMXAdjust / get_Virtual_TSC) applies the "
                  "TSC offset and multiplier, so the VM-exit MSR-store list gets L2's TSC instead "
                  "of the TSC itself (SDM 28.4; kvm-unit-tests vmx_store_tsc_test). Present in "
                  "2.7, 3.0 and master (2026-08); not fixed in any release",
        summary="Bochs: IA32_TSC in the VM-exit MSR-store list saved with the TSC offset applied",
    ),
    KnownBug(
        scenario="cr_shadows",
        target="bochs",
        cpu_model=("*",),
        version="[23].[078]",  # 2.7, 2.8, 3.0; not "3.0.devel" (master has the fix)
        verdict="BAD",
        reference="Bochs GitHub issue #614 (https://github.com/bochs-emu/Bochs/issues/614), "
                  "fixed by commits 35f2a518a and 01ee0d0c2 (September 2025), after 3.0 and in "
                  "no release yet: BX_CPU_C::check_CR0 (cpu/crregs.cc) skips the CR0.PE/PG "
                  "fixed-bit rule for every VMX guest instead of only with unrestricted guest, so "
                  "an L2 MOV to CR0 that clears PG when L1 does not own it succeeds instead of "
                  "#GP(0) (SDM 26.3 'MOV to CR0', 24.8). Seen on the i386 image only: in 64-bit "
                  "mode clearing PG is #GP anyway",
        summary="Bochs 2.7-3.0: L2 may clear CR0.PG without unrestricted guest",
    ),
    KnownBug(
        scenario="init_sipi",
        target="bochs",
        cpu_model=("*",),
        version="2.7*",
        verdict="BAD",
        reference="Two Bochs 2.7 bugs, both fixed in Bochs 2.8 (REL_2_8_FINAL). (1) The INIT "
                  "stays pending after the INIT VM exit: cpu/event.cc handleAsyncEvent() calls "
                  "VMexit(VMX_VMEXIT_INIT) without clear_event(BX_EVENT_INIT) (VMexit longjmps, so "
                  "the reset() that would clear it never runs) and every VM entry unmasks INIT "
                  "again (cpu/vmx.cc VMLAUNCH/VMRESUME: unmask_event(BX_EVENT_INIT), line 3113), so "
                  "each re-entry exits with INIT; stlintel/Bochs issue #11, PR #16, bochs-emu/Bochs "
                  "commit 88f881c6d 'Fix that the INIT signal remains pending even after delivery of "
                  "VM-exit/#VMEXIT(INIT)' (Satoshi Tanda, 2022-07-23; event.cc lines 233-245 in 2.7). (2) VM exits save blocking by "
                  "SMI (interruptibility bit 2) whenever SMI is masked, which wait-for-SIPI leaves "
                  "masked after the SIPI exit, so the next VM entry fails 'SMI blocked when not in "
                  "SMM': cpu/vmx.cc VMexitSaveGuestState(); stlintel/Bochs issue #10, PR #15, commit "
                  "0ae5e6789 (2022-07-23)",
        summary="Bochs 2.7: INIT stays pending after the INIT exit; exits save blocking by SMI",
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
