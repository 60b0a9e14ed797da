/*
 * nmi_window: NMI-window exiting, NMI injection and their priorities (the original LHV's lhv-nmi
 * experiments 20-26), with NMI exiting and virtual NMIs on, and three VM-entry checks.
 *
 * SDM Vol. 3C: 25.6.2 "Processor-Based VM-Execution Controls" (NMI-window exiting, bit 22);
 * 27.2.1.1 (NMI-window exiting needs virtual NMIs: VMfailValid, error 7 "invalid control field");
 * 27.3.1.5 "Checks on Guest Non-Register State" (injecting an NMI with virtual NMIs = 1 needs
 * bit 3 of the interruptibility state clear: a failed entry, exit reason 0x80000021); 27.6
 * "Event Injection" and 27.7.1 (an injected NMI with virtual NMIs = 1 sets virtual-NMI blocking);
 * 27.7.6 "NMI-Window Exiting" (with no virtual-NMI blocking the exit comes before L2's first
 * instruction, after any injected event); 26.3 (L2's IRET removes virtual-NMI blocking, so the
 * window exit comes right after it); 25.8.3 "VM-Entry Controls for Event Injection" (a VM exit clears the valid bit of the VM-entry
 * interruption-information field).
 * Steps:
 *   1. NMI-window exiting without virtual NMIs: VMfailValid 7.
 *   2. NMI-window exiting, no blocking, preemption timer off: the entry succeeds (VirtualBox
 *      GitHub #313 checked a timer control there) and exit 8 comes at L2's first instruction.
 *   3. Window with virtual-NMI blocking: no exit 8 while blocked; exit 8 right after L2's IRET.
 *   4. NMI injected: L2's handler runs once; virtual-NMI blocking is saved at the next exit; the
 *      entry interruption-information valid bit is clear after the exit.
 *   5. NMI injected with the window open: the injection goes first (no exit 8 before the handler
 *      ran), the window exit follows L2's IRET (lhv-nmi 24).
 *   6. INFO: L1 blocked with an NMI pending and the window open: which exit comes first (bare
 *      metal: the window's); then the NMI exit must come.
 *   7. Injecting an NMI with virtual-NMI blocking set: exit 0x80000021.
 * Bugs: Bochs GitHub #626 / #648 (the step-7 check was commented out up to Bochs 3.0; fixed by
 * 203b044f5 and 18fa36af4 in master, after 3.0); KVM bugzilla 217304 (lhv-nmi 24 still failing after the first fix);
 * VMware Workstation 17.0.1 (an NMI pending in L1 while it injects an event comes much later:
 * lhv-nmi 15-17); VirtualBox GitHub #313 (step 2).
 * GOOD: all steps as above. BAD: the first step that differs (every failing step is also listed
 * as an INFO line).
 * Negative control (inject=nmi_window): L1 leaves NMI-window exiting off in step 2, so L2 runs
 * to its VMCALL instead of exiting at once.
 * Cleanup, also on BAD: L1 IRETs until no NMI is pending and removes its hook.
 * Needs: NMI exiting, virtual NMIs and NMI-window exiting.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(nmi_window, 0, "vmx,vnmi,nmi_window", 8000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, nmi_window);

#define CALL_REPORT (GUEST_CALL_USER + 1)  /* EBX = NMIs L2's handler has taken */
#define CALL_REPORT2 (GUEST_CALL_USER + 2) /* the same, after L2's IRET */
#define NMI_INFO (INTR_INFO_VALID | INTR_TYPE_NMI | VECTOR_NMI)
#define VNMI_PIN (PIN_NMI_EXITING | PIN_VIRTUAL_NMIS)

enum guest_op { OP_CALL, OP_IRET };

/* ---- L2: report the NMIs its handler took, then (OP_IRET) IRET and report again ---- */

static uintptr_t window_guest(uintptr_t op)
{
    guest_vmcall(CALL_REPORT, g_nmi_guest_count, 0);
    if (op == OP_IRET) {
        nmi_iret();
        guest_vmcall(CALL_REPORT2, g_nmi_guest_count, 0);
    }
    return 0;
}

/* ---- L1 ---- */

static void setup_step(struct vcpu *v, uint32_t pin, bool window, uint32_t interruptibility, uint32_t inject,
                       enum guest_op op)
{
    vcpu_restart_c_guest(v, window_guest, op);
    g_nmi_guest_count = 0;
    vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, pin, (VNMI_PIN | PIN_EXTERNAL_INTERRUPT_EXITING) & ~pin);
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, window ? PROC_NMI_WINDOW : 0, window ? 0 : PROC_NMI_WINDOW);
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, interruptibility);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, ACTIVITY_ACTIVE);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2); /* IF=0 */
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, inject);
}

static bool saved_bit3(void) { return (vmcs_read(VMCS_GUEST_INTERRUPTIBILITY) & INTERRUPTIBILITY_NMI) != 0; }

static const char *exit_name(const struct vcpu *v) { return exit_reason_name(v->exit.reason & 0xffff); }

static bool expect_exit(struct scenario *s, struct vcpu *v, const char *step, uint32_t reason, uintptr_t call)
{
    if (!vcpu_entered(s, v, vcpu_run_irq_off(v)))
        return false;
    if ((v->exit.reason & 0xffff) == reason && (reason != EXIT_VMCALL || v->regs.rax == call))
        return true;
    return scenario_bad(s, "%s: expected %s exit (%u%s), observed %s exit (%u) at rip 0x%llx, EAX 0x%llx", step,
                        exit_reason_name(reason), reason, reason == EXIT_VMCALL ? ", a report" : "", exit_name(v),
                        v->exit.reason & 0xffff, (unsigned long long)v->exit.guest_rip,
                        (unsigned long long)v->regs.rax);
}

static bool expect_report(struct scenario *s, struct vcpu *v, const char *step, uintptr_t call, uint32_t handled)
{
    if (!expect_exit(s, v, step, EXIT_VMCALL, call))
        return false;
    vcpu_skip_instruction(v);
    if (v->regs.rbx == handled)
        return true;
    return scenario_bad(s, "%s: expected %u NMI(s) taken by L2's handler, observed %u", step, handled,
                        (unsigned)v->regs.rbx);
}

static bool expect_rip(struct scenario *s, struct vcpu *v, const char *step, const void *where)
{
    if (v->exit.guest_rip == (uintptr_t)where)
        return true;
    return scenario_bad(s, "%s: expected the exit at rip 0x%llx, observed 0x%llx", step,
                        (unsigned long long)(uintptr_t)where, (unsigned long long)v->exit.guest_rip);
}

/* 1. NMI-window exiting needs virtual NMIs. */
static bool step_window_needs_vnmi(struct scenario *s, struct vcpu *v)
{
    setup_step(v, PIN_NMI_EXITING, true, 0, 0, OP_CALL);
    int rc = vcpu_run_irq_off(v);
    if (rc == VMX_FAIL_VALID && v->entry_error == VMXERR_ENTRY_INVALID_CONTROL)
        return true;
    if (rc == VMX_OK)
        return scenario_bad(s, "1: expected VMfailValid 7 for NMI-window exiting without virtual NMIs, observed "
                               "a VM entry (exit %u)",
                            v->exit.reason & 0xffff);
    return scenario_bad(s, "1: expected VMfailValid 7, observed %s, error %u",
                        rc == VMX_FAIL_VALID ? "VMfailValid" : "VMfailInvalid", v->entry_error);
}

/* 2. Window open, no blocking, preemption timer off: exit 8 before L2's first instruction. */
static bool step_window_at_once(struct scenario *s, struct vcpu *v)
{
    setup_step(v, VNMI_PIN, !s->inject, 0, 0, OP_CALL);
    int rc = vcpu_run_irq_off(v);
    if (rc != VMX_OK || (v->exit.reason & EXIT_ENTRY_FAILURE))
        return scenario_bad(s, "2: expected NMI-window exiting without the preemption timer to enter, observed "
                               "entry status %d, error %u, exit reason 0x%x",
                            rc, v->entry_error, v->exit.reason);
    return expect_exit(s, v, "2: window open", EXIT_NMI_WINDOW, 0) &&
           expect_rip(s, v, "2: window exit before L2's first instruction", guest_trampoline);
}

/* 3. Window open under virtual-NMI blocking: nothing until L2's IRET, then exit 8 at once. */
static bool step_window_after_iret(struct scenario *s, struct vcpu *v)
{
    setup_step(v, VNMI_PIN, true, INTERRUPTIBILITY_NMI, 0, OP_IRET);
    return expect_report(s, v, "3: no window exit while blocked", CALL_REPORT, 0) &&
           expect_exit(s, v, "3: window exit after L2's IRET", EXIT_NMI_WINDOW, 0) &&
           expect_rip(s, v, "3: window exit right after L2's IRET", nmi_iret_done);
}

/* 4. An injected NMI reaches L2's handler and sets virtual-NMI blocking. */
static bool step_injected_nmi_blocks(struct scenario *s, struct vcpu *v)
{
    setup_step(v, VNMI_PIN, false, 0, NMI_INFO, OP_CALL);
    return expect_report(s, v, "4: NMI injected", CALL_REPORT, 1) &&
           expect_eq(s, "4: virtual-NMI blocking saved after an injected NMI", 1, saved_bit3()) &&
           expect_eq(s, "4: VM-entry interruption-information valid bit after the exit", 0,
                     vmcs_read(VMCS_ENTRY_INTERRUPTION_INFO) & INTR_INFO_VALID);
}

/* 5. Injection before the window; the window exit follows L2's IRET. */
static bool step_injection_before_window(struct scenario *s, struct vcpu *v)
{
    setup_step(v, VNMI_PIN, true, 0, NMI_INFO, OP_IRET);
    return expect_report(s, v, "5: NMI injected with the window open", CALL_REPORT, 1) &&
           expect_exit(s, v, "5: window exit after L2's IRET", EXIT_NMI_WINDOW, 0) &&
           expect_rip(s, v, "5: window exit right after L2's IRET", nmi_iret_done);
}

/* 6. L1 blocked with an NMI pending and the window open. The entry unblocks physical NMIs (virtual
 * NMIs = 1), so the NMI exits at once, unless the window exit comes first: that exit leaves L1
 * unblocked (SDM 28.5.5: only NMI-caused exits block), and L1 must then take the NMI itself. */
static bool step_pending_nmi_and_window(struct scenario *s, struct vcpu *v, uint32_t *first)
{
    uint32_t before = g_nmi_taken;
    lapic_send_ipi(lapic_id(), ICR_NMI);
    if (!nmi_count_moves(&g_nmi_taken, before))
        return scenario_error(s, "6: a self-NMI sent by L1 (not blocked) was not delivered");
    before = g_nmi_taken;
    lapic_send_ipi(lapic_id(), ICR_NMI); /* pending: L1 is blocked */
    setup_step(v, VNMI_PIN, true, 0, 0, OP_CALL);
    if (!vcpu_entered(s, v, vcpu_run_irq_off(v)))
        return false;
    *first = v->exit.reason & 0xffff;
    if (*first == EXIT_EXCEPTION_NMI && v->exit.interruption_info == NMI_INFO)
        return true;
    if (*first != EXIT_NMI_WINDOW)
        return scenario_bad(s, "6: expected an NMI or NMI-window exit, observed %s exit (%u)", exit_name(v), *first);
    if (nmi_count_moves(&g_nmi_taken, before))
        return true;
    return scenario_bad(s, "6: after the NMI-window exit, expected L1 (unblocked by the entry) to take the pending "
                           "NMI, observed none");
}

/* 7. Injecting an NMI under virtual-NMI blocking is invalid guest state. */
static bool step_inject_while_blocked(struct scenario *s, struct vcpu *v)
{
    setup_step(v, VNMI_PIN, false, INTERRUPTIBILITY_NMI, NMI_INFO, OP_CALL);
    int rc = vcpu_run_irq_off(v);
    uint32_t expected = EXIT_ENTRY_FAILURE | EXIT_INVALID_GUEST_STATE;
    if (rc == VMX_OK && v->exit.reason == expected)
        return true;
    if (rc != VMX_OK)
        return scenario_bad(s, "7: expected exit reason 0x%x, observed VMfail (status %d, error %u)", expected, rc,
                            v->entry_error);
    return scenario_bad(s, "7: expected exit reason 0x%x for an NMI injected under virtual-NMI blocking, observed a "
                           "VM entry (exit %u, %s)",
                        expected, v->exit.reason & 0xffff, exit_name(v));
}

/* Each step with L1's interrupts off; afterwards L1 IRETs until nothing is pending. A BAD step is
 * listed as INFO and the next step runs; the verdict keeps the first BAD. */
/* After a step: L1 IRETs until no NMI is pending (each IRET may take one), then takes
 * interrupts again. */
static void l1_iret_until_quiet(void)
{
    (void)nmi_iret_until_quiet(); /* at most 4 IRETs; the next step starts either way */
    irq_enable();
}

#define STEP(s, call) SCENARIO_STEP((s), (call), irq_disable(), l1_iret_until_quiet())

static void nmi_window_steps(struct scenario *s, struct vcpu *v)
{
    STEP(s, step_window_needs_vnmi(s, v));
    STEP(s, step_window_at_once(s, v));
    STEP(s, step_window_after_iret(s, v));
    STEP(s, step_injected_nmi_blocks(s, v));
    STEP(s, step_injection_before_window(s, v));
    uint32_t first = 0;
    STEP(s, step_pending_nmi_and_window(s, v, &first));
    scenario_info(s, "6: L1 blocked with an NMI pending, window open: first exit %u (%s) (bare metal: NMI window)",
                  first, exit_reason_name(first));
    STEP(s, step_inject_while_blocked(s, v));
}

static void nmi_window(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, window_guest, OP_CALL);
    uint16_t idt_limit;
    vmcs_write(VMCS_GUEST_IDTR_BASE, guest_idt_build(&idt_limit));
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    guest_idt_set_gate(VECTOR_NMI, (uintptr_t)nmi_guest_entry);
    g_nmi_taken = 0;
    nmi_set_hook(nmi_count_and_keep_blocked);
    nmi_window_steps(s, &v);
    nmi_set_hook(NULL);
    scenario_good(s); /* stands only if no step recorded anything worse */
}
