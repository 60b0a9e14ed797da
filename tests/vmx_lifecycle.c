/*
 * vmx_lifecycle: the life cycle of a VMCS and the VMX instructions' status rules.
 *
 * Checks, in order (Intel SDM Vol. 3C, chapter 25.1 "VMCS states" and chapter 31.3/31.4,
 * "VMX instruction reference" and "VM-instruction error numbers"):
 *   - VMXON in VMX root operation with a current VMCS fails with VMfailValid, error 15;
 *   - VMPTRST returns the VMCS that VMPTRLD made current;
 *   - VMLAUNCH runs a guest that executes CPUID then VMCALL: exit reasons 10 and 18 with
 *     instruction lengths 2 and 3 (SDM 28.2.5 "Information for VM exits due to instruction
 *     execution");
 *   - VMLAUNCH of a launched VMCS fails with error 4;
 *   - VMCLEAR makes the VMCS not current (VMPTRST gives all ones, VMREAD gives VMfailInvalid),
 *     VMPTRLD brings back every field of the field table unchanged, VMRESUME of the now clear
 *     VMCS fails with error 5, and VMLAUNCH runs the guest again;
 *   - with LHV_OPT 0x80 (USE_VMXOFF): VMXOFF, VMXON, no current VMCS afterwards, relaunch.
 * This is the original LHV's basic loop, the ground every nested hypervisor must get right.
 * GOOD: all of the above. BAD: names the first rule that did not hold.
 * Negative control (inject=vmx_lifecycle): L1 forgets to advance RIP past CPUID, so the guest
 * executes CPUID again and the expected VMCALL exit does not come.
 * Needs: VMX.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vmx_lifecycle, 0, "vmx", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, vmx_lifecycle);

#define CALL_AFTER_CPUID (GUEST_CALL_USER + 1)

static uintptr_t guest_cpuid_then_vmcall(uintptr_t arg)
{
    uint32_t eax = 0, ebx, ecx = 0, edx;
    __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx)); /* 0f a2: 2 bytes */
    guest_vmcall(CALL_AFTER_CPUID, eax, arg); /* 0f 01 c1: 3 bytes */
    return 0;
}

static bool expect_length(struct scenario *s, struct vcpu *v, uint32_t len)
{
    return expect_eq(s, "VM-exit instruction length", len, v->exit.instruction_length);
}

/* From the guest's first instruction to its final VMCALL. */
static bool run_guest_to_done(struct scenario *s, struct vcpu *v)
{
    vcpu_restart_c_guest(v, guest_cpuid_then_vmcall, 0);
    if (!vcpu_run_expect(s, v, EXIT_CPUID) || !expect_length(s, v, 2))
        return false;
    if (!s->inject)
        vcpu_skip_instruction(v);
    if (!vcpu_run_expect(s, v, EXIT_VMCALL) || !expect_length(s, v, 3))
        return false;
    if (!expect_eq(s, "guest VMCALL number", CALL_AFTER_CPUID, v->regs.rax))
        return false;
    vcpu_skip_instruction(v);
    return vcpu_expect_call(s, v, GUEST_CALL_DONE);
}

static bool expect_vmfail_valid(struct scenario *s, const char *what, int rc, uint32_t error)
{
    if (rc == VMX_FAIL_VALID && vmx_instruction_error() == error)
        return true;
    return scenario_bad(s, "expected %s to give VMfailValid with error %u, observed status %d error %u", what,
                        error, rc, rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0);
}

static bool expect_current_vmcs(struct scenario *s, uint64_t expected)
{
    uint64_t current = 0;
    if (vmcs_store(&current) != VMX_OK)
        return scenario_bad(s, "expected VMPTRST to succeed");
    return expect_eq(s, "VMPTRST", expected, current);
}

/* Every field of the table, read back: status and value. */
struct field_dump {
    uint8_t status[160];
    uint64_t value[160];
};
static struct field_dump g_before, g_after;

static void dump_fields(struct field_dump *d)
{
    for (size_t i = 0; i < g_vmcs_field_count && i < ARRAY_SIZE(d->value); i++)
        d->status[i] = (uint8_t)vmx_vmread(g_vmcs_fields[i].encoding, &d->value[i]);
}

static bool clear_and_reload(struct scenario *s, struct vcpu *v)
{
    dump_fields(&g_before);
    if (vmcs_clear(v->vmcs_phys) != VMX_OK)
        return scenario_bad(s, "expected VMCLEAR of the current VMCS to succeed");
    if (!expect_current_vmcs(s, ~0ull))
        return false;
    uint64_t value;
    if (vmx_vmread(VMCS_GUEST_RIP, &value) != VMX_FAIL_INVALID)
        return scenario_bad(s, "expected VMREAD without a current VMCS to give VMfailInvalid");
    if (vmcs_load(v->vmcs_phys) != VMX_OK)
        return scenario_bad(s, "expected VMPTRLD of the cleared VMCS to succeed");
    dump_fields(&g_after);
    for (size_t i = 0; i < g_vmcs_field_count && i < ARRAY_SIZE(g_before.value); i++)
        if (g_before.status[i] != g_after.status[i] ||
            (g_before.status[i] == VMX_OK && g_before.value[i] != g_after.value[i])) /* only fields that exist */
            return scenario_bad(s, "expected %s=0x%llx after VMCLEAR+VMPTRLD, observed 0x%llx", g_vmcs_fields[i].name,
                                (unsigned long long)g_before.value[i], (unsigned long long)g_after.value[i]);
    v->launched = true; /* ask for VMRESUME: the CPU must refuse it, the VMCS is clear */
    if (!expect_vmfail_valid(s, "VMRESUME of a clear VMCS", vcpu_run(v), VMXERR_VMRESUME_NONLAUNCHED))
        return false;
    v->launched = false;
    return run_guest_to_done(s, v);
}

static bool vmxoff_cycle(struct scenario *s, struct vcpu *v)
{
    struct percpu *cpu = this_cpu();
    if (vmcs_clear(v->vmcs_phys) != VMX_OK || vmx_off() != VMX_OK)
        return scenario_bad(s, "expected VMCLEAR and VMXOFF to succeed");
    cpu->vmx_on = false;
    if (vmx_on(cpu->vmxon_phys) != VMX_OK)
        return scenario_bad(s, "expected VMXON after VMXOFF to succeed");
    cpu->vmx_on = true;
    if (!expect_current_vmcs(s, ~0ull) || vmcs_load(v->vmcs_phys) != VMX_OK)
        return scenario_bad(s, "expected no current VMCS after VMXON and a working VMPTRLD");
    v->launched = false;
    return run_guest_to_done(s, v);
}

static void vmx_lifecycle(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_cpuid_then_vmcall, 0);
    if (!expect_vmfail_valid(s, "VMXON in VMX root operation", vmx_on(this_cpu()->vmxon_phys), VMXERR_VMXON_IN_ROOT))
        return;
    if (!expect_current_vmcs(s, v.vmcs_phys) || !run_guest_to_done(s, &v))
        return;
    v.launched = false; /* ask for VMLAUNCH: the CPU must refuse it, the VMCS is launched */
    if (!expect_vmfail_valid(s, "VMLAUNCH of a launched VMCS", vcpu_run(&v), VMXERR_VMLAUNCH_NONCLEAR))
        return;
    if (!clear_and_reload(s, &v))
        return;
    if ((lhv_opt() & LHV_OPT_USE_VMXOFF) && !vmxoff_cycle(s, &v))
        return;
    scenario_good(s);
}
