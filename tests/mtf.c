/*
 * mtf: the monitor trap flag exits after each guest instruction.
 *
 * Intel SDM Vol. 3C 26.5.2 "Monitor Trap Flag": with the "monitor trap flag" control set, a VM
 * exit (reason 37) is pending after the first instruction executed in VMX non-root operation,
 * so the guest advances exactly one instruction per entry. Source: seed 002, where an MTF exit
 * taken right after an L2 CR write exposed KVM's stale PDPTEs (kvm-unit-tests vmx_mtf_pdpte_test).
 * Bochs 2.7 offers the control (IA32_VMX_PROCBASED_CTLS allowed-1 bit 27 on tigerlake and
 * corei7_icelake_u) but never delivers the exit (that came with Bochs 2.8): this scenario is BAD
 * there, and harness/known_bugs.py records it as a known target bug.
 * Steps: the guest runs three 1-byte NOPs then VMCALL; with MTF set, each entry must exit with
 * reason 37 after exactly one instruction (guest RIP advanced by 1), three times, then the VMCALL.
 * Negative control (inject=mtf): L1 does not set the control.
 * Needs: the monitor trap flag.
 */
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(mtf, 0, "vmx,mtf", 3000, SUBARCH_ALL, SCENARIO_REPEATABLE, mtf);

#define CALL_AFTER_NOPS 0x101 /* GUEST_CALL_USER + 1 */
_Static_assert(CALL_AFTER_NOPS == GUEST_CALL_USER + 1, "keep the assembly's constant in step");

extern const uint8_t mtf_guest[];
__asm__(".pushsection .text\n"
        "mtf_guest:\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

static void mtf(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)mtf_guest,
                                .stack_top = guest_stack_top() };
    vcpu_init(&v, &cfg);
    if (!s->inject)
        vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, PROC_MTF, 0);
    for (uintptr_t step = 1; step <= 3; step++) {
        if (!vcpu_run_expect(s, &v, EXIT_MTF) ||
            !expect_eq(s, "guest RIP after one instruction under MTF", (uintptr_t)mtf_guest + step, v.exit.guest_rip))
            return;
    }
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, 0, PROC_MTF);
    if (!vcpu_expect_call(s, &v, CALL_AFTER_NOPS))
        return;
    scenario_good(s);
}
