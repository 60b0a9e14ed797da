/*
 * nmi_blocking: who is NMI-blocked, L1 or L2, across VM entries and exits, for the pin-based
 * controls "NMI exiting"/"virtual NMIs" = 0/0, 1/0 and 1/1 (the original LHV's lhv-nmi
 * experiments 1-14 and 27-30; their bare-metal results are in shared/research/nested-vmx-bugs.md).
 *
 * L1 sends NMIs to itself (local APIC ICR, physical destination = its own APIC ID, delivery mode
 * NMI); L2 does the same with the MSR bitmap letting the x2APIC MSRs through. L1's NMI hook and
 * L2's NMI handler (nmi_guest_entry) count each NMI and return WITHOUT IRET, so NMIs stay blocked
 * until an explicit IRET (nmi_iret). L1 runs these steps with interrupts disabled and without
 * external-interrupt exiting, L2 with RFLAGS.IF=0: the IRET of a timer interrupt would end the
 * blocking being measured. Whether L1 is blocked is probed by sending it an NMI.
 *
 * SDM Vol. 3C: 27.7.1 "Interruptibility State" (VM entry: with virtual NMIs=0 NMIs are blocked
 * after entry if and only if bit 3 of the guest interruptibility state is 1; with virtual NMIs=1
 * physical NMIs are not blocked and bit 3 is virtual-NMI blocking); 26.3 "Changes to Instruction
 * Behavior in VMX Non-Root Operation" (IRET: with NMI exiting=1 it does not unblock NMIs; with
 * virtual NMIs=1 it removes virtual-NMI blocking); 26.2 (an NMI with NMI exiting=1 exits even
 * under virtual-NMI blocking); 28.5.5 / 28.3.4 (VM exits caused directly by NMIs block NMIs in L1;
 * other exits leave blocking by NMI as it was; the interruptibility and activity state saved are
 * those before the exit); 28.2.2 (exit interruption information 0x80000202 for an NMI).
 * Steps (each for 0/0, 1/0, 1/1):
 *   A. L2 sends itself an NMI: 0/0 its own handler runs, bit 3 is saved as 1 and L1 stays blocked
 *      after the VMCALL exit; 1/x NMI exit, bit 3 saved 0, L1 blocked until its IRET.
 *   B. L1 blocked with an NMI pending, VM entry with bit 3 = 0: 0/0 L2's handler gets it at once;
 *      1/x an NMI exit before L2's first instruction.
 *   C. L1 blocked, VM entry with bit 3 = 0 and 1, VMCALL: bit 3 saved as entered; L1 blocked after
 *      the exit only with virtual NMIs=0 and bit 3 = 1 (KVM bugzilla 217304, lhv-nmi 13/14).
 *   D. L2 entered with bit 3 = 1 sends itself an NMI, then IRETs: 0/0 delivered only after L2's
 *      IRET; 1/0 no exit, L2's IRET does not unblock, L1's IRET takes it; 1/1 NMI exit at once,
 *      virtual-NMI blocking still saved, and cleared by L2's IRET.
 *   E. INFO: two NMIs sent while L1 is blocked; how many arrive after its IRET (bare metal: one).
 *   F. 1/x with an NMI pending, VM entry in the HLT activity state: NMI exit; the saved activity
 *      state must be HLT (28.3.4; bare metal saves HLT; KVM and Bochs up to 3.0 save ACTIVE, Bochs
 *      master since f9502df9f, GitHub #757, saves HLT). Needs the
 *      HLT activity state (IA32_VMX_MISC bit 6) and the preemption timer as a guard; INFO if not.
 * Bugs: KVM bugzilla 217304 (L1's blocking leaked into and out of L2; found with the original
 * LHV); Bochs SourceForge #1456 (VM entry did not unblock NMIs, fixed bd51ec5f8, Bochs 2.8) and
 * #1460 / GitHub bochs-emu/Bochs #211 (NMI-exit blocking, fixed 6b48d6e33, Bochs 2.8); VMware
 * Workstation 17.0.1 fails lhv-nmi 15-17 (see nmi_window).
 * GOOD: every step as above. BAD: the first step that differs, with what was seen.
 * Negative control (inject=nmi_blocking): after the NMI exit of step A L1 IRETs at once, as a
 * hypervisor would whose NMI exits do not block NMIs; the probe NMI then arrives.
 * Cleanup, also on BAD: L1 IRETs until no NMI is pending, removes its hook; nmi_after_scenario()
 * does the same after an abort.
 * Needs: NMI exiting and virtual NMIs (word vnmi).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(nmi_blocking, 0, "vmx,vnmi", 10000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, nmi_blocking);

#define CALL_REPORT (GUEST_CALL_USER + 1)  /* EBX = NMIs L2's handler has taken */
#define CALL_REPORT2 (GUEST_CALL_USER + 2) /* the same, after L2's IRET */
#define MISC_HLT_STATE (1ull << 6)
#define NMI_EXIT_INFO (INTR_INFO_VALID | INTR_TYPE_NMI | VECTOR_NMI)

enum guest_op { OP_CALL, OP_SELF_NMI, OP_BLOCKED_IRET };

struct combo {
    const char *name;
    uint32_t pin; /* NMI exiting, virtual NMIs */
};
static const struct combo g_combos[] = {
    { "0/0", 0 },
    { "1/0", PIN_NMI_EXITING },
    { "1/1", PIN_NMI_EXITING | PIN_VIRTUAL_NMIS },
};

static void send_self_nmi(void) { lapic_send_ipi(lapic_id(), ICR_NMI); }

/* ---- L2 ---- */

static void guest_wait(void) { delay_us(NMI_WAIT_US); }

/* Reports g_nmi_guest_count, which L1 zeroes before each step: an NMI delivered before L2's first
 * instruction counts too. */
static uintptr_t nmi_guest(uintptr_t op)
{
    if (op == OP_SELF_NMI || op == OP_BLOCKED_IRET) {
        send_self_nmi();
        guest_wait();
    }
    guest_vmcall(CALL_REPORT, g_nmi_guest_count, 0);
    if (op == OP_BLOCKED_IRET) {
        nmi_iret();
        guest_wait();
        guest_vmcall(CALL_REPORT2, g_nmi_guest_count, 0);
    }
    return 0;
}

/* ---- L1 ---- */

/* Takes an NMI and does not IRET: L1 is NMI-blocked afterwards. */
static bool l1_block(struct scenario *s)
{
    uint32_t before = g_nmi_taken;
    send_self_nmi();
    if (nmi_count_moves(&g_nmi_taken, before))
        return true;
    return scenario_error(s, "a self-NMI sent by L1 (not blocked) was not delivered");
}

/* Sends an NMI and reports whether it stayed blocked. Either way L1 is blocked afterwards, with
 * the probe pending if it was blocked before. */
static bool l1_probe_blocked(void)
{
    uint32_t before = g_nmi_taken;
    send_self_nmi();
    return !nmi_count_moves(&g_nmi_taken, before);
}

/* IRET until no NMI is pending: L1 ends unblocked. */
static bool l1_unblock_all(struct scenario *s)
{
    return nmi_iret_until_quiet() || scenario_error(s, "NMIs kept arriving after 4 IRETs");
}

static void setup_step(struct vcpu *v, const struct combo *c, uint32_t interruptibility, enum guest_op op)
{
    vcpu_restart_c_guest(v, nmi_guest, op);
    g_nmi_guest_count = 0;
    vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, c->pin,
                      (PIN_NMI_EXITING | PIN_VIRTUAL_NMIS | PIN_EXTERNAL_INTERRUPT_EXITING | PIN_PREEMPTION_TIMER) &
                          ~c->pin);
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, interruptibility);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, ACTIVITY_ACTIVE);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2); /* IF=0: no interrupt may end L2's blocking by its IRET */
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0);
}

static bool saved_bit3(void) { return (vmcs_read(VMCS_GUEST_INTERRUPTIBILITY) & INTERRUPTIBILITY_NMI) != 0; }

/* The next exit must be VMCALL `call`; *reported gets EBX; the VMCALL is stepped over. */
static bool expect_report(struct scenario *s, struct vcpu *v, const char *step, uintptr_t call, uint32_t *reported)
{
    if (!vcpu_entered(s, v, vcpu_run_irq_off(v)))
        return false;
    if ((v->exit.reason & 0xffff) != EXIT_VMCALL || v->regs.rax != call)
        return scenario_bad(s, "%s: expected VMCALL 0x%x, observed exit %u (%s) at rip 0x%llx, interruption info 0x%x",
                            step, (unsigned)call, v->exit.reason & 0xffff, exit_reason_name(v->exit.reason & 0xffff),
                            (unsigned long long)v->exit.guest_rip, v->exit.interruption_info);
    *reported = (uint32_t)v->regs.rbx;
    vcpu_skip_instruction(v);
    return true;
}

static bool expect_nmi_exit(struct scenario *s, struct vcpu *v, const char *step)
{
    if (!vcpu_entered(s, v, vcpu_run_irq_off(v)))
        return false;
    if ((v->exit.reason & 0xffff) == EXIT_EXCEPTION_NMI && v->exit.interruption_info == NMI_EXIT_INFO)
        return true;
    return scenario_bad(s, "%s: expected an NMI exit (0, info 0x%x), observed exit %u (%s) at rip 0x%llx, info 0x%x",
                        step, NMI_EXIT_INFO, v->exit.reason & 0xffff, exit_reason_name(v->exit.reason & 0xffff),
                        (unsigned long long)v->exit.guest_rip, v->exit.interruption_info);
}

static bool expect_l1_blocked(struct scenario *s, const char *step, bool expected)
{
    bool blocked = l1_probe_blocked();
    if (blocked == expected)
        return true;
    return scenario_bad(s, "%s: expected L1 %s after the exit, observed %s", step,
                        expected ? "NMI-blocked" : "not NMI-blocked", blocked ? "blocked" : "not blocked");
}

/* A. L2 sends itself an NMI. */
static bool step_nmi_in_l2(struct scenario *s, struct vcpu *v, const struct combo *c)
{
    setup_step(v, c, 0, OP_SELF_NMI);
    uint32_t taken;
    if (!c->pin) {
        return expect_report(s, v, "A 0/0 NMI in L2", CALL_REPORT, &taken) &&
               expect_eq(s, "A 0/0: NMIs taken by L2's handler", 1, taken) &&
               expect_eq(s, "A 0/0: saved blocking by NMI", 1, saved_bit3()) &&
               expect_l1_blocked(s, "A 0/0 (L2 blocked, VMCALL exit)", true);
    }
    if (!expect_nmi_exit(s, v, "A NMI in L2") || !expect_eq(s, "A: saved bit 3 after an NMI exit", 0, saved_bit3()))
        return false;
    if (s->inject)
        nmi_iret(); /* negative control: as if the NMI exit had not blocked NMIs in L1 */
    return expect_l1_blocked(s, "A (NMI exit)", true);
}

/* B. L1 blocked with an NMI pending, then VM entry with bit 3 = 0. */
static bool step_pending_at_entry(struct scenario *s, struct vcpu *v, const struct combo *c)
{
    if (!l1_block(s))
        return false;
    if (!l1_probe_blocked())
        return scenario_error(s, "B: L1 not blocked after taking an NMI without IRET");
    setup_step(v, c, 0, OP_CALL);
    if (!c->pin) {
        uint32_t taken;
        return expect_report(s, v, "B 0/0 pending NMI at entry", CALL_REPORT, &taken) &&
               expect_eq(s, "B 0/0: NMIs taken by L2 right after entry (SDM 27.7.1)", 1, taken);
    }
    return expect_nmi_exit(s, v, "B pending NMI at entry") &&
           expect_eq(s, "B: guest RIP of the NMI exit (before L2's first instruction)", (uintptr_t)guest_trampoline,
                     v->exit.guest_rip);
}

/* C. L1 blocked, entry with bit 3 = b, VMCALL: is L1 blocked after the exit? */
static bool step_blocking_carried(struct scenario *s, struct vcpu *v, const struct combo *c, bool b)
{
    if (!l1_block(s))
        return false;
    setup_step(v, c, b ? INTERRUPTIBILITY_NMI : 0, OP_CALL);
    uint32_t taken;
    char step[48];
    snprintf(step, sizeof(step), "C %s bit 3 = %d", c->name, b);
    if (!expect_report(s, v, step, CALL_REPORT, &taken) || !expect_eq(s, "C: saved bit 3 as entered", b, saved_bit3()))
        return false;
    return expect_l1_blocked(s, step, b && !(c->pin & PIN_VIRTUAL_NMIS));
}

/* D. L2 entered blocked (bit 3 = 1) sends itself an NMI, then executes IRET. */
static bool step_iret_in_l2(struct scenario *s, struct vcpu *v, const struct combo *c)
{
    setup_step(v, c, INTERRUPTIBILITY_NMI, OP_BLOCKED_IRET);
    uint32_t before_iret, after_iret;
    if (c->pin == 0) {
        return expect_report(s, v, "D 0/0 NMI while L2 blocked", CALL_REPORT, &before_iret) &&
               expect_eq(s, "D 0/0: NMIs taken by L2 while blocked", 0, before_iret) &&
               expect_report(s, v, "D 0/0 IRET in L2", CALL_REPORT2, &after_iret) &&
               expect_eq(s, "D 0/0: NMIs taken by L2 after its IRET", 1, after_iret);
    }
    if (!(c->pin & PIN_VIRTUAL_NMIS)) {
        if (!expect_report(s, v, "D 1/0 NMI while L2 blocked: no exit", CALL_REPORT, &before_iret) ||
            !expect_report(s, v, "D 1/0 IRET in L2 does not unblock (SDM 26.3)", CALL_REPORT2, &after_iret))
            return false;
        uint32_t before = g_nmi_taken;
        nmi_iret();
        if (!nmi_count_moves(&g_nmi_taken, before))
            return scenario_bad(s, "D 1/0: expected L1 to take the pending NMI after its IRET, observed none");
        return true;
    }
    if (!expect_nmi_exit(s, v, "D 1/1 NMI under virtual-NMI blocking") ||
        !expect_eq(s, "D 1/1: saved virtual-NMI blocking at the NMI exit", 1, saved_bit3()))
        return false;
    nmi_iret(); /* the NMI exit blocked L1 */
    if (!expect_report(s, v, "D 1/1 before IRET", CALL_REPORT, &before_iret) ||
        !expect_eq(s, "D 1/1: saved virtual-NMI blocking before L2's IRET", 1, saved_bit3()) ||
        !expect_report(s, v, "D 1/1 after IRET", CALL_REPORT2, &after_iret))
        return false;
    return expect_eq(s, "D 1/1: saved virtual-NMI blocking after L2's IRET (SDM 26.3)", 0, saved_bit3());
}

/* E. Two NMIs while L1 is blocked: how many arrive after IRETs. */
static bool step_two_nmis(struct scenario *s, uint32_t *delivered)
{
    if (!l1_block(s))
        return false;
    send_self_nmi();
    send_self_nmi();
    uint32_t before = g_nmi_taken;
    for (int i = 0; i < 3; i++) {
        uint32_t now = g_nmi_taken;
        nmi_iret();
        nmi_count_moves(&g_nmi_taken, now);
    }
    *delivered = g_nmi_taken - before;
    return true;
}

/* F. NMI exit out of the HLT activity state. */
static bool step_hlt(struct scenario *s, struct vcpu *v, const struct combo *c, uint32_t *length)
{
    if (!l1_block(s))
        return false;
    send_self_nmi(); /* pending until the VM entry unblocks NMIs */
    setup_step(v, c, 0, OP_CALL);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, ACTIVITY_HLT);
    /* Guard: if no NMI wakes L2, the timer ends the HLT instead of a hang (about 100 ms). */
    vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, PIN_PREEMPTION_TIMER, 0);
    vmcs_write(VMCS_PREEMPTION_TIMER_VALUE, (uint32_t)((g_tsc_hz / 10) >> (g_vmx.misc & 0x1f)));
    if (!vcpu_entered(s, v, vcpu_run_irq_off(v)))
        return false;
    vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, 0, PIN_PREEMPTION_TIMER);
    if ((v->exit.reason & 0xffff) == EXIT_PREEMPTION_TIMER)
        return scenario_bad(s, "F %s: expected an NMI exit out of HLT, observed none before the preemption timer", c->name);
    if ((v->exit.reason & 0xffff) != EXIT_EXCEPTION_NMI)
        return scenario_bad(s, "F %s: expected an NMI exit out of HLT, observed exit %u", c->name, v->exit.reason & 0xffff);
    *length = v->exit.instruction_length;
    return expect_eq(s, "F: saved activity state at an NMI exit in HLT (SDM 28.3.4)", ACTIVITY_HLT,
                     vmcs_read(VMCS_GUEST_ACTIVITY_STATE));
}

static bool can_try_hlt(void)
{
    return (g_vmx.misc & MISC_HLT_STATE) && ALLOWED1(g_vmx.pin, PIN_PREEMPTION_TIMER);
}

/* Every step runs with L1's interrupts off; afterwards L1 IRETs until nothing is pending and takes
 * interrupts again, whether the step passed or not. A BAD step does not hide the later ones: its
 * reason is printed as an INFO line, the verdict keeps the first. Only an ERROR stops the run. */
#define STEP(s, call) SCENARIO_STEP((s), (call), irq_disable(), (l1_unblock_all(s), irq_enable()))

static void nmi_blocking_steps(struct scenario *s, struct vcpu *v)
{
    for (size_t i = 0; i < ARRAY_SIZE(g_combos); i++) {
        const struct combo *c = &g_combos[i];
        STEP(s, step_nmi_in_l2(s, v, c));
        STEP(s, step_pending_at_entry(s, v, c));
        STEP(s, step_blocking_carried(s, v, c, false));
        STEP(s, step_blocking_carried(s, v, c, true));
        STEP(s, step_iret_in_l2(s, v, c));
    }
    uint32_t delivered = 0;
    STEP(s, step_two_nmis(s, &delivered));
    scenario_info(s, "E: two NMIs sent while L1 was blocked, %u delivered after its IRETs (bare metal: 1)", delivered);
    if (!can_try_hlt()) {
        scenario_info(s, "F left out: HLT activity state (IA32_VMX_MISC=0x%llx bit 6) or preemption timer missing",
                      (unsigned long long)g_vmx.misc);
        return;
    }
    for (size_t i = 1; i < ARRAY_SIZE(g_combos); i++) {
        uint32_t length = 0;
        STEP(s, step_hlt(s, v, &g_combos[i], &length));
        scenario_info(s, "F %s: exit %u in HLT at rip 0x%llx, instruction length %u, activity state %llu "
                         "(bare metal: NMI exit, HLT saved, length 1)",
                      g_combos[i].name, v->exit.reason & 0xffff, (unsigned long long)v->exit.guest_rip, length,
                      (unsigned long long)vmcs_read(VMCS_GUEST_ACTIVITY_STATE));
    }
}

static void nmi_blocking(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .msr_bitmap = true };
    vcpu_init_c_guest(&v, &cfg, nmi_guest, OP_CALL);
    uint16_t idt_limit;
    vmcs_write(VMCS_GUEST_IDTR_BASE, guest_idt_build(&idt_limit));
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    guest_idt_set_gate(VECTOR_NMI, (uintptr_t)nmi_guest_entry);
    g_nmi_taken = 0;
    nmi_set_hook(nmi_count_and_keep_blocked);
    nmi_blocking_steps(s, &v);
    nmi_set_hook(NULL);
    scenario_good(s); /* stands only if no step recorded anything worse */
}
