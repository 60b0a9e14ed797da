/*
 * host_state_load: after a VM exit L1's LDTR selector is 0 and CPUID.1:ECX.OSXSAVE follows L1's
 * own CR4, whatever L2 and L1 had before. The check itself is on the runner floor (lhv/expect.c,
 * check_host_state_after_exit, run after every VM exit a scenario judges, in every scenario);
 * this scenario is the one where the check has something to catch, and its negative control.
 *
 * Intel SDM Vol. 3C 28.5.2 "Loading Host Segment and Descriptor-Table Registers": the host-state
 * area has no LDTR selector field; on every VM exit "the selector is cleared to 0000H, the segment
 * is marked unusable and is otherwise undefined" (so SLDT reads 0). 28.5.1 "Loading Host Control
 * Registers, Debug Registers, MSRs": CR4 is loaded from the host CR4 field; Vol. 2A CPUID: leaf 1
 * ECX[27] (OSXSAVE) reflects CR4.OSXSAVE. Bugs: Linux KVM afc8de0118be "KVM: nVMX: Set LDTR to
 * its architecturally defined value on nested VM-Exit" (2021; kvm-unit-tests vmx_ldtr_test); KVM
 * did not recompute CPUID.OSXSAVE when HOST_CR4 was loaded at a nested VM exit (2020;
 * kvm-unit-tests vmx_cr4_osxsave_test). Research notes K17, K26.
 * Steps: L1 runs on a copy of its GDT with an LDT descriptor added, loads that LDT itself (LLDT)
 * and gives L2 the same LDTR (usable, from the VMCS guest LDTR fields); where XSAVE is offered
 * (CPUID.1:ECX[26]) and CR4.OSXSAVE is allowed in VMX operation (IA32_VMX_CR4_FIXED1 bit 18), L1
 * sets its own CR4.OSXSAVE and runs L2 with it clear. L2 returns at once (VMCALL). After the exit
 * the runner floor's check must find LDTR 0 and CPUID.1:ECX.OSXSAVE 1. L1 then restores its GDT,
 * LDTR 0 and its CR4.
 * GOOD: both as the SDM says. BAD: "host state after VM exit: LDTR=..., CPUID.1:ECX.OSXSAVE=...".
 * Negative control (inject=host_state_load): L1 imitates a hypervisor that does not set LDTR on
 * a VM exit: it reloads the non-zero LDT selector between the exit and the check, so the runner
 * floor's check must say BAD.
 * Needs: VMX. The OSXSAVE half is left out with an INFO line where XSAVE or CR4.OSXSAVE in VMX
 * operation is not offered.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(host_state_load, 0, "vmx", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, host_state_load);

#define CR4_OSXSAVE (1u << 18)
#define CPUID1_ECX_XSAVE (1u << 26)
#define AR_LDT 0x82 /* present, DPL 0, system, type 2 (LDT) */
#define LDT_LIMIT 0xfffu

static uintptr_t guest_return(uintptr_t arg) { return arg; }

static inline void load_ldtr(uint16_t selector) { __asm__ volatile("lldt %0" ::"rm"(selector) : "memory"); }

/* An LDT descriptor (SDM Vol. 3A 3.5, 16 bytes in IA-32e mode) for `ldt` at the first free slot of
 * a GDT copy; returns its selector and makes *gdtr describe the copy. */
static uint16_t gdt_copy_with_ldt(uint64_t *copy, void *ldt, struct desc_ptr *gdtr)
{
    struct desc_ptr own = read_gdtr();
    size_t slots = ((size_t)own.limit + 1) / 8;
    memcpy(copy, (const void *)own.base, (size_t)own.limit + 1);
    uintptr_t base = (uintptr_t)ldt;
    copy[slots] = (LDT_LIMIT & 0xffff) | ((uint64_t)(base & 0xffffff) << 16) | ((uint64_t)AR_LDT << 40) |
                  ((uint64_t)((base >> 24) & 0xff) << 56);
    copy[slots + 1] = (uint64_t)base >> 32; /* the upper half in IA-32e mode; a null slot in legacy mode */
    gdtr->base = (uintptr_t)copy;
    gdtr->limit = (uint16_t)((slots + 2) * 8 - 1);
    return (uint16_t)(slots * 8);
}

static bool osxsave_possible(void)
{
    return (cpuid(1, 0).ecx & CPUID1_ECX_XSAVE) && (g_vmx.cr4_fixed1 & CR4_OSXSAVE);
}

static void host_state_load(struct scenario *s)
{
    struct desc_ptr own_gdtr = read_gdtr(), gdtr;
    uintptr_t own_cr4 = read_cr4();
    void *ldt = page_alloc();
    uint16_t ldt_sel = gdt_copy_with_ldt(page_alloc(), ldt, &gdtr);
    bool osxsave = osxsave_possible();
    write_gdtr(&gdtr);
    load_ldtr(ldt_sel);
    if (osxsave)
        write_cr4(own_cr4 | CR4_OSXSAVE); /* HOST_CR4 (vcpu_init reads CR4) has OSXSAVE, L2 has not */
    else
        scenario_info(s, "XSAVE (CPUID.1:ECX=0x%x) or CR4.OSXSAVE in VMX operation (IA32_VMX_CR4_FIXED1=0x%llx) not "
                         "offered: the OSXSAVE half is left out",
                      cpuid(1, 0).ecx, (unsigned long long)g_vmx.cr4_fixed1);

    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_return, 0);
    vmcs_write(VMCS_GUEST_LDTR_SELECTOR, ldt_sel);
    vmcs_write(VMCS_GUEST_LDTR_BASE, (uintptr_t)ldt);
    vmcs_write(VMCS_GUEST_LDTR_LIMIT, LDT_LIMIT);
    vmcs_write(VMCS_GUEST_LDTR_AR, AR_LDT);
    vmcs_write(VMCS_GUEST_CR4, vmcs_read(VMCS_GUEST_CR4) & ~(uint64_t)CR4_OSXSAVE);
    vmcs_write(VMCS_CR4_READ_SHADOW, vmcs_read(VMCS_CR4_READ_SHADOW) & ~(uint64_t)CR4_OSXSAVE);

    int rc = vcpu_run(&v);
    if (s->inject)
        load_ldtr(ldt_sel); /* the buggy hypervisor: L1 keeps the LDTR it had before the entry */
    bool ok = vcpu_entered(s, &v, rc) && vcpu_check_exit(s, &v, EXIT_VMCALL) &&
              expect_eq(s, "guest VMCALL", GUEST_CALL_DONE, v.regs.rax);

    load_ldtr(0);
    write_gdtr(&own_gdtr);
    write_cr4(own_cr4);
    if (ok && s->verdict == VERDICT_GOOD) {
        scenario_info(s, "LDTR 0x%x before the entry (L1 and L2), 0 after the exit%s", ldt_sel,
                      osxsave ? "; CPUID.OSXSAVE 1 after an L2 without it" : "");
        scenario_good(s);
    }
}
