/*
 * vmfail_keeps_l1: a VM entry that fails leaves L1 as it was: the right VM-instruction error or
 * VM-entry failure exit, and L1's own CR3 (and the rest of its state) intact. EPT is off.
 *
 * Source: seed 001, Linux KVM "nVMX: restore host state after a late VM-Fail" (Sean
 * Christopherson, 2019): some guest-state checks are left to the hardware; when one fails during
 * a nested VM entry, KVM must rebuild L1's state, and with EPT off it took L1's CR3 from
 * vmcs01.GUEST_CR3, which held KVM's shadow value rather than L1's.
 * Intel SDM Vol. 3C: 27.2 "Checks on VMX Controls and Host-State Area" (a bad CR3-target count
 * gives VMfailValid with VM-instruction error 7, 31.4), 27.3.1.4 "Checks on Guest RIP, RFLAGS,
 * and SSP" (RFLAGS bit 1 must be 1), 27.8 "VM-Entry Failures During or After Loading Guest State"
 * (exit reason 33 with bit 31 set, qualification 0, host state loaded as for a VM exit).
 * The guest's CR3 is a copy of L1's top-level page table (a different page that maps the same),
 * so an L1 that got the guest's CR3 keeps running and the check can see it.
 * Both failures happen twice: by VMLAUNCH of the clear VMCS, and again by VMRESUME once the
 * guest has run (the VMCS launched), because an L0 that loads the guest's CR3 before its checks
 * may do so on either path (seed 001 names no path).
 * GOOD: error 7 with CR3 unchanged; exit reason 0x80000021 with qualification 0 and CR3 unchanged;
 * afterwards the same VMCS, still clear, launches (VMLAUNCH, not VMRESUME) and the guest runs to
 * its end; then the same two failures by VMRESUME, after which VMRESUME works.
 * Negative control (inject=vmfail_keeps_l1): after the failed entry L1 loads the guest's CR3 into
 * its own, as KVM did.
 * Needs: VMX.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vmfail_keeps_l1, 0, "vmx", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, vmfail_keeps_l1);

#define VMXERR_INVALID_CONTROL 7

static uintptr_t guest_return(uintptr_t arg) { return arg; }

static const char *entry_name(const struct vcpu *v) { return v->launched ? "VMRESUME" : "VMLAUNCH"; }

/* VMfailValid: a control the CPU checks before touching any state. */
static bool fail_on_controls(struct scenario *s, struct vcpu *v, uintptr_t l1_cr3)
{
    uint32_t max_targets = (uint32_t)((g_vmx.misc >> 16) & 0x1ff);
    vmcs_write(VMCS_CR3_TARGET_COUNT, max_targets + 1);
    int rc = vcpu_run(v);
    vmcs_write(VMCS_CR3_TARGET_COUNT, 0);
    if (rc != VMX_FAIL_VALID || v->entry_error != VMXERR_INVALID_CONTROL)
        return scenario_bad(s, "expected %s to fail with VMfailValid error 7 for CR3-target count %u, observed status %d error %u",
                            entry_name(v), max_targets + 1, rc, v->entry_error);
    return expect_eq(s, "L1 CR3 after VMfailValid", l1_cr3, read_cr3());
}

/* VM-entry failure while loading guest state: exit reason 33, host state loaded. */
static bool fail_on_guest_state(struct scenario *s, struct vcpu *v, uintptr_t l1_cr3)
{
    vmcs_write(VMCS_GUEST_RFLAGS, 0); /* bit 1 is reserved to 1 */
    int rc = vcpu_run(v);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2);
    if (rc != VMX_OK)
        return scenario_bad(s, "expected a VM-entry failure exit for RFLAGS=0 on %s, observed VMfail status %d error %u",
                            entry_name(v), rc, v->entry_error);
    if (s->inject)
        write_cr3((uintptr_t)vmcs_read(VMCS_GUEST_CR3)); /* what KVM did: L1's CR3 from the guest's */
    uintptr_t cr3_now = read_cr3();
    write_cr3(l1_cr3);
    if (!expect_eq(s, "exit reason", (1u << 31) | EXIT_INVALID_GUEST_STATE, v->exit.reason))
        return false;
    if (!expect_eq(s, "VM-entry failure qualification", 0, v->exit.qualification))
        return false;
    return expect_eq(s, "L1 CR3 after the VM-entry failure", l1_cr3, cr3_now);
}

/* Both failures on the current launch state, then an entry that works and runs the guest to its
 * end. Neither failure changes the launch state (SDM 27.8 and 31.3 VMLAUNCH/VMRESUME: it changes
 * only when VMLAUNCH succeeds), so the working entry is the same instruction again. */
static bool failures_then_run(struct scenario *s, struct vcpu *v, uintptr_t l1_cr3)
{
    bool launched = v->launched;
    if (!fail_on_controls(s, v, l1_cr3) || !fail_on_guest_state(s, v, l1_cr3))
        return false;
    v->launched = launched;
    const char *how = entry_name(v);
    int rc = vcpu_run(v);
    if (rc != VMX_OK)
        return scenario_bad(s, "expected %s to work after the failed entries, observed status %d error %u", how, rc,
                            v->entry_error);
    return vcpu_check_exit(s, v, EXIT_VMCALL) && expect_eq(s, "guest VMCALL", GUEST_CALL_DONE, v->regs.rax) &&
           expect_eq(s, "guest result", 0x600d, v->regs.rbx);
}

static void vmfail_keeps_l1(struct scenario *s)
{
    uintptr_t l1_cr3 = read_cr3();
    uint8_t *root_copy = page_alloc();
    memcpy(root_copy, (const void *)(l1_cr3 & ~(uintptr_t)0xfff), PAGE_SIZE);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_return, 0x600d);
    vmcs_write(VMCS_GUEST_CR3, (uintptr_t)root_copy | (l1_cr3 & 0xfff));
    if (!failures_then_run(s, &v, l1_cr3)) /* VMLAUNCH of a clear VMCS */
        return;
    vcpu_restart_c_guest(&v, guest_return, 0x600d);
    if (!expect_eq(s, "guest CR3 before the VMRESUME failures", (uintptr_t)root_copy | (l1_cr3 & 0xfff),
                   vmcs_read(VMCS_GUEST_CR3)) ||
        !failures_then_run(s, &v, l1_cr3)) /* VMRESUME of the launched VMCS */
        return;
    scenario_good(s);
}
