/*
 * The judging helpers of the scenarios: run L2 through the VMX floor's vcpu_run() and turn what
 * it returned into a verdict. They are on the runner floor because a verdict is the runner's
 * business; the VMX floor only reports what happened (a VMfail status, an exit reason).
 */
#include "scenario.h"
#include "vmx/vmx.h"

/* A VM-entry failure while loading guest state comes back as an exit with bit 31 set. */
static bool entry_succeeded(struct scenario *s, const struct vmx_exit *e)
{
    if (!(e->reason & (1u << 31)))
        return true;
    return scenario_error(s, "VM entry failed: exit reason %u (%s), qualification 0x%llx", e->reason & 0xffff,
                          exit_reason_name(e->reason), (unsigned long long)e->qualification);
}

#define CR4_OSXSAVE (1u << 18)
#define CPUID1_ECX_OSXSAVE (1u << 27)

static inline uint16_t read_ldtr(void)
{
    uint16_t selector;
    __asm__ volatile("sldt %0" : "=rm"(selector));
    return selector;
}

/* Host-state load, checked after every VM exit a scenario judges (and after a VM entry that fails
 * while loading guest state, which loads host state the same way, SDM 27.8): SDM 28.5.2 clears
 * the LDTR selector to 0 on every VM exit (the host-state area has no LDTR field), so SLDT reads
 * 0 (KVM afc8de0118be); 28.5.1 loads CR4 from the host-state area, and CPUID.1:ECX[27] reports
 * CR4.OSXSAVE (SDM Vol. 2A CPUID), so L1's CPUID must follow L1's CR4, not L2's (kvm-unit-tests
 * vmx_cr4_osxsave_test). A violation is the scenario's BAD; the scenario goes on (its own checks
 * still run), and the first BAD reason stays. The scenario host_state_load makes both matter. */
static void check_host_state_after_exit(struct scenario *s)
{
    uint16_t ldtr = read_ldtr();
    bool cr4_osxsave = (read_cr4() & CR4_OSXSAVE) != 0;
    bool cpuid_osxsave = (cpuid(1, 0).ecx & CPUID1_ECX_OSXSAVE) != 0;
    if (ldtr != 0 || cr4_osxsave != cpuid_osxsave)
        scenario_bad(s, "host state after VM exit: LDTR=0x%x (expected 0, SDM 28.5.2), CPUID.1:ECX.OSXSAVE=%d with "
                        "L1's CR4.OSXSAVE=%d (expected equal, SDM 28.5.1)",
                     ldtr, cpuid_osxsave, cr4_osxsave);
}

/* Run L2 and check the exit reason. A failed VM entry means the scenario's own setup is wrong
 * (ERROR); a different exit is what the scenario checks (BAD, with what was seen). */
bool vcpu_entered(struct scenario *s, struct vcpu *v, int rc)
{
    if (rc != VMX_OK)
        return scenario_error(s, "VM entry failed: %s, VM-instruction error %u",
                              rc == VMX_FAIL_INVALID ? "VMfailInvalid" : "VMfailValid", v->entry_error);
    check_host_state_after_exit(s); /* first: before the scenario's own code can change LDTR or CR4 */
    return entry_succeeded(s, &v->exit);
}

bool vcpu_run_entered(struct scenario *s, struct vcpu *v) { return vcpu_entered(s, v, vcpu_run(v)); }

bool vcpu_run_expect(struct scenario *s, struct vcpu *v, uint32_t expected_reason)
{
    return vcpu_run_entered(s, v) && vcpu_check_exit(s, v, expected_reason);
}

bool vcpu_check_exit(struct scenario *s, struct vcpu *v, uint32_t expected_reason)
{
    struct vmx_exit *e = &v->exit;
    if (!entry_succeeded(s, e))
        return false;
    if ((e->reason & 0xffff) == expected_reason)
        return true;
    return scenario_bad(s, "expected %s exit (%u), observed %s exit (%u) at guest rip 0x%llx, interruption info 0x%x",
                        exit_reason_name(expected_reason), expected_reason, exit_reason_name(e->reason),
                        e->reason & 0xffff, (unsigned long long)e->guest_rip, e->interruption_info);
}

bool vcpu_expect_call(struct scenario *s, struct vcpu *v, uintptr_t call)
{
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (v->regs.rax != call)
        return scenario_bad(s, "expected VMCALL 0x%llx from the guest, observed VMCALL 0x%llx at rip 0x%llx",
                            (unsigned long long)call, (unsigned long long)v->regs.rax,
                            (unsigned long long)v->exit.guest_rip);
    vcpu_skip_instruction(v);
    return true;
}
