/*
 * df_triple_fault: #DF and triple-fault VM exits, and what the IDT-vectoring information holds
 * for each. L2 raises #GP(0x1238) (a bad selector load) with its own IDT; L1 makes the #GP gate
 * not present, so delivering the #GP raises #NP, and #GP followed by #NP is a double fault (Intel
 * SDM Vol. 3A 6.15, Table 6-5: both contributory).
 *   1. #DF intercepted (exception bitmap bit 8; #GP and #NP not): exit 0 with interruption
 *      information 0x80000b08, error code 0. The #DF causes the VM exit directly, so by Vol. 3C
 *      28.2.4 "Information for VM Exits During Event Delivery" this exit is not during event
 *      delivery: the IDT-vectoring information is invalid (bit 31 clear), not the #GP. L1 then
 *      repairs the #GP gate and resumes: L2's #GP handler runs with 0x1238.
 *   2. #DF not intercepted and its gate not present as well: delivering the #DF raises #NP, a
 *      triple fault, VM exit 2 (26.2 "Other Causes of VM Exits"); 28.2.4 again: "the VM exit is
 *      caused by a triple fault" is not during event delivery, so IDT-vectoring is invalid. The
 *      triple fault must be a VM exit, never a reset of the machine. L1 repairs both gates and
 *      VMRESUME runs L2's #GP handler.
 *   3. Contrast: #DF gate present but the page of the stack it is pushed on missing from EPT:
 *      an EPT violation during #DF delivery, IDT-vectoring information 0x80000b08 (valid,
 *      hardware exception, error code valid) with IDT-vectoring error code 0. L1 maps the page,
 *      re-injects the #DF and L2's #DF handler runs with vector 8 and error code 0 (the RIP in a
 *      #DF frame is undefined, Vol. 3A 6.15 "Interrupt 8": only reported as INFO).
 * Bug: Linux KVM 9bd1f0efa859 "KVM: nVMX: Clear IDT vectoring on nested VM-Exit for
 * double/triple fault" (2022): L1 saw the original event in the IDT-vectoring field.
 * GOOD: each exit as described, with exact interruption and vectoring information, and the
 * guest's handlers running after L1's repair. BAD: another exit, valid vectoring information in
 * 1 or 2, invalid or different information in 3, a handler that does not run.
 * Negative control (inject=df_triple_fault): after the #DF exit L1 resumes without repairing the
 * #GP gate, so L2 double-faults again instead of reaching its handler.
 * Needs: EPT (step 3).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(df_triple_fault, LHV_OPT_USE_EPT, "vmx,ept", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, df_triple_fault);

#define VECTOR_DF 8
#define VECTOR_NP 11
#define VECTOR_GP 13
#define GP_SELECTOR 0x1238
#define CALL_NO_EVENT 0x102 /* the guest went on after the faulting instruction */
_Static_assert(CALL_NO_EVENT == GUEST_CALL_USER + 2, "asm constant");

uint8_t g_dftf_stack[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

extern const uint8_t dftf_guest[], dftf_gp_insn[];
__asm__(".pushsection .text\n"
        "dftf_guest:\n"
        "    mov $0x1238, %eax\n"
        "dftf_gp_insn:\n"
        "    mov %eax, %fs\n"              /* #GP(0x1238): no such GDT entry */
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

static uintptr_t g_idt;

static void set_gate_present(int vector, bool present)
{
    uint8_t *type_byte = (uint8_t *)g_idt + vector * guest_idt_gate_size() + 5;
    *type_byte = present ? (uint8_t)(*type_byte | 0x80) : (uint8_t)(*type_byte & 0x7f);
}

/* Start L2 over at the faulting instruction with a stack of its own. */
static void restart_guest(uintptr_t stack_top)
{
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)dftf_guest);
    vmcs_write(VMCS_GUEST_RSP, stack_top);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, ACTIVITY_ACTIVE);
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0);
}

/* L2's handler for `vector` reports through GUEST_CALL_EVENT. */
static bool expect_handler(struct scenario *s, struct vcpu *v, const char *what, uint32_t vector, uint32_t error)
{
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (v->regs.rax == CALL_NO_EVENT)
        return scenario_bad(s, "%s: expected L2's handler for vector %u, observed the guest going on without it", what,
                            vector);
    if (!expect_eq(s, "guest VMCALL", GUEST_CALL_EVENT, v->regs.rax))
        return false;
    if (v->regs.rbx != vector || (uint32_t)v->regs.rcx != error)
        return scenario_bad(s, "%s: expected L2's handler to see vector %u error 0x%x, observed vector %llu error 0x%x",
                            what, vector, error, (unsigned long long)v->regs.rbx, (uint32_t)v->regs.rcx);
    return true;
}

static bool expect_no_vectoring(struct scenario *s, const char *what, const struct vmx_exit *e)
{
    if (!(e->idt_vectoring_info & INTR_INFO_VALID))
        return true;
    return scenario_bad(s, "%s: expected IDT-vectoring information invalid (SDM 28.2.4), observed 0x%x error code 0x%llx "
                           "(KVM 9bd1f0efa859)",
                        what, e->idt_vectoring_info, (unsigned long long)vmcs_read(VMCS_IDT_VECTORING_ERROR_CODE));
}

/* 1: #GP through a not-present gate, #DF intercepted. */
static bool step_df_exit(struct scenario *s, struct vcpu *v)
{
    const char *what = "#DF exit";
    set_gate_present(VECTOR_GP, false);
    vcpu_set_controls(VMCS_EXCEPTION_BITMAP, 1u << VECTOR_DF, (1u << VECTOR_GP) | (1u << VECTOR_NP));
    if (!vcpu_run_expect(s, v, EXIT_EXCEPTION_NMI))
        return false;
    const struct vmx_exit *e = &v->exit;
    uint32_t df_info = INTR_INFO_VALID | INTR_TYPE_HW_EXCEPTION | INTR_INFO_ERROR_CODE | VECTOR_DF;
    if (!expect_eq(s, "#DF exit interruption information", df_info, e->interruption_info & ~INTR_INFO_NMI_UNBLOCKED_BY_IRET) ||
        !expect_eq(s, "#DF exit error code", 0, e->interruption_error) || !expect_no_vectoring(s, what, e))
        return false;
    scenario_info(s, "#DF exit at guest rip 0x%llx (the #GP instruction is 0x%llx)", (unsigned long long)e->guest_rip,
                  (unsigned long long)(uintptr_t)dftf_gp_insn);
    if (!s->inject) /* the negative control resumes with the gate still missing */
        set_gate_present(VECTOR_GP, true);
    restart_guest(guest_stack_top());
    return expect_handler(s, v, "VMRESUME after repairing the #GP gate", VECTOR_GP, GP_SELECTOR);
}

/* 2: the #DF gate missing too, nothing intercepted: triple fault. */
static bool step_triple_fault(struct scenario *s, struct vcpu *v)
{
    set_gate_present(VECTOR_GP, false);
    set_gate_present(VECTOR_DF, false);
    vcpu_set_controls(VMCS_EXCEPTION_BITMAP, 0, 1u << VECTOR_DF);
    restart_guest(guest_stack_top());
    if (!vcpu_run_expect(s, v, EXIT_TRIPLE_FAULT) || !expect_no_vectoring(s, "triple-fault exit", &v->exit))
        return false;
    if (v->exit.interruption_info & INTR_INFO_VALID)
        scenario_info(s, "triple-fault exit with exit interruption information 0x%x", v->exit.interruption_info);
    set_gate_present(VECTOR_GP, true);
    set_gate_present(VECTOR_DF, true);
    restart_guest(guest_stack_top());
    return expect_handler(s, v, "VMRESUME after the triple fault", VECTOR_GP, GP_SELECTOR);
}

/* 3: an EPT violation while delivering the #DF: now the exit is during event delivery. */
static bool step_violation_in_df(struct scenario *s, struct vcpu *v, struct ept *ept)
{
    uintptr_t stack = (uintptr_t)g_dftf_stack;
    set_gate_present(VECTOR_GP, false);
    ept_set_4k(ept, stack, 0, 0);
    ept_invalidate(ept);
    restart_guest(stack + PAGE_SIZE);
    if (!vcpu_run_expect(s, v, EXIT_EPT_VIOLATION))
        return false;
    const struct vmx_exit *e = &v->exit;
    uint32_t df_info = INTR_INFO_VALID | INTR_TYPE_HW_EXCEPTION | INTR_INFO_ERROR_CODE | VECTOR_DF;
    if ((e->guest_physical & ~0xfffull) != stack)
        return scenario_bad(s, "expected the EPT violation in the #DF stack page 0x%llx, observed 0x%llx",
                            (unsigned long long)stack, (unsigned long long)e->guest_physical);
    if (!expect_eq(s, "IDT-vectoring information of the violation in #DF delivery", df_info,
                   e->idt_vectoring_info & ~(1u << 12)) ||
        !expect_eq(s, "IDT-vectoring error code", 0, vmcs_read(VMCS_IDT_VECTORING_ERROR_CODE)))
        return false;
    ept_set_4k(ept, stack, stack, EPT_RWX);
    ept_invalidate(ept);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, df_info); /* re-inject the #DF */
    vmcs_write(VMCS_ENTRY_EXCEPTION_ERROR_CODE, 0);
    if (!expect_handler(s, v, "the re-injected #DF", VECTOR_DF, 0))
        return false;
    scenario_info(s, "#DF frame RIP 0x%llx (undefined by the SDM)", (unsigned long long)v->regs.rdx);
    set_gate_present(VECTOR_GP, true);
    return true;
}

static void df_triple_fault(struct scenario *s)
{
    uint16_t idt_limit;
    g_idt = guest_idt_build(&idt_limit);
    struct ept ept;
    ept_build_identity(&ept, false);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)dftf_guest,
                                .stack_top = guest_stack_top(), .eptp = ept.eptp };
    vcpu_init(&v, &cfg);
    vmcs_write(VMCS_GUEST_IDTR_BASE, g_idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    if (!step_df_exit(s, &v) || !step_triple_fault(s, &v) || !step_violation_in_df(s, &v, &ept))
        return;
    scenario_good(s);
}
