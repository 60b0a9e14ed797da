/*
 * intr_window: interrupt-window exiting (exit 7) and the events that hold the window shut: the
 * STI and MOV-SS shadows, the HLT activity state, an event injected at the same VM entry; and
 * the VM-entry checks that keep L1 from injecting an external interrupt the guest cannot take.
 *
 * Intel SDM Vol. 3C:
 *  - 26.7.5 "Interrupt-Window Exiting and Virtual-Interrupt Delivery" / 25.6.2 (the control): a
 *    VM exit occurs before any instruction when RFLAGS.IF=1 and there is no blocking by STI or
 *    MOV SS; these exits wake a logical processor from the HLT state (as an external interrupt
 *    would); event injection takes priority over them (27.7.5: after VM entry the exit comes
 *    after the injected event has been delivered, at the handler's first instruction).
 *  - 25.4.2 "Guest Non-Register State" (interruptibility state: bit 0 blocking by STI, bit 1 by
 *    MOV SS; activity state 1 = HLT, allowed when IA32_VMX_MISC bit 6 says so); 28.3.4: a VM exit
 *    saves the blocking in effect, so a VMCALL executed in an STI or MOV-SS shadow exits with
 *    that bit set; 27.7.1: blocking by STI or MOV SS loaded by VM entry lasts for one
 *    instruction.
 *  - 27.3.1.4 (RFLAGS.IF must be 1 to inject an external interrupt) and 27.3.1.5 (no blocking by
 *    STI or MOV SS with an injected external interrupt): otherwise VM entry fails with exit
 *    reason 0x80000021 (invalid guest state).
 *  - 27.1 "Basic VM-Entry Checks" and 31.4 error 26: VMLAUNCH executed in a MOV-SS shadow fails
 *    with VMfailValid 26 ("VM entry with events blocked by MOV SS") before any control check.
 * Source: kvm-unit-tests vmx_intr_window_test and vmentry_movss_shadow_test; Xen 67f9d0b95a
 * (spurious interrupt-window exits); the intr_window_blocking proposal in
 * shared/research/nested-vmx-bugs.md (S10).
 * Steps (L2 is native-mode code below; every step starts it afresh at a known RIP):
 *   1. IF=1, no blocking: exit 7 at the first instruction.
 *   2. IF=0, STI; NOP: exit 7 after the NOP (the STI shadow covers it), RFLAGS.IF saved as 1.
 *   3. STI; VMCALL and MOV SS; VMCALL: the VMCALL exits with blocking by STI / by MOV SS saved.
 *   4. Entry with blocking by STI, then by MOV SS, at a NOP: exit 7 after that one NOP.
 *   5. External interrupt 0x33 injected with the window control on: the event is delivered
 *      first (trap gate, so IF stays 1), exit 7 at its handler's first instruction with no
 *      IDT-vectoring information; then the handler reports the vector.
 *   6. Entry checks: injecting an external interrupt with IF=0, with blocking by STI, with
 *      blocking by MOV SS: exit reason 0x80000021 each time.
 *   7. Activity state HLT (when offered): step 5 again from HLT; then HLT alone: exit 7 at
 *      once, RIP unchanged, where a preemption timer (when offered) of about 50 us marks "at
 *      once": its exit 52 first means the window did not wake the halted guest. The saved
 *      activity state is INFO.
 *   8. VMLAUNCH of a fresh VMCS with an invalid CR3-target count: error 7 normally, error 26
 *      when executed right after MOV SS.
 * GOOD: every step as above. BAD: the first difference, with what was seen.
 * Negative control (inject=intr_window): at step 4 L1 drops the blocking bit it should load (a
 * hypervisor that loses the interruptibility state), so the window opens one instruction early.
 * Needs: VMX with interrupt-window exiting; HLT and preemption-timer parts are left out (INFO)
 * where the CPU lacks them.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(intr_window, 0, "vmx", 5000, SUBARCH_ALL, SCENARIO_REPEATABLE, intr_window);

#define CALL_RAN_ON 0x101 /* GUEST_CALL_USER + 1: the guest went past where the exit belonged */
#define VECTOR_INJECTED 0x33
#define EXIT_REASON_ENTRY_FAIL_GUEST (0x80000000u | EXIT_INVALID_GUEST_STATE)
#define VMXERR_INVALID_CONTROL 7
#define VMXERR_MOV_SS_BLOCKING 26
#define MISC_ACTIVITY_HLT (1ull << 6)
#define GATE_TYPE_TRAP32 0x8f /* present, DPL 0, 32/64-bit trap gate: IF stays as it was */
_Static_assert(CALL_RAN_ON == GUEST_CALL_USER + 1, "keep the assembly's constant in step");

extern const uintptr_t guest_stub_table[256];
extern const uint8_t iw_nops[], iw_sti[], iw_sti_after[], iw_sti_vmcall[], iw_sti_vmcall_insn[], iw_movss_vmcall[],
    iw_movss_vmcall_insn[];
__asm__(".pushsection .text\n"
        "iw_nops:\n"
        "    nop\n"
        "    nop\n"
        "    nop\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        "iw_sti:\n"
        "    sti\n"
        "    nop\n"                     /* in the STI shadow */
        "iw_sti_after:\n"
        "    nop\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        "iw_sti_vmcall:\n"
        "    sti\n"
        "iw_sti_vmcall_insn:\n"
        "    vmcall\n"                  /* in the STI shadow */
        "    ud2\n"
        "iw_movss_vmcall:\n"
        "    mov %ss, %eax\n"
        "    mov %eax, %ss\n"
        "iw_movss_vmcall_insn:\n"
        "    vmcall\n"                  /* in the MOV-SS shadow */
        "    ud2\n"
        ".popsection\n");

/* Start L2 over at rip with the given IF, blocking and activity state, nothing injected. */
static void start_at(const uint8_t *rip, bool interrupts_on, uint32_t blocking, uint32_t activity)
{
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)rip);
    vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | (interrupts_on ? RFLAGS_IF : 0));
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, blocking);
    vmcs_write(VMCS_GUEST_ACTIVITY_STATE, activity);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0);
}

static void window_control(bool on)
{
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, on ? PROC_INTERRUPT_WINDOW : 0, on ? 0 : PROC_INTERRUPT_WINDOW);
}

static bool expect_window_exit(struct scenario *s, struct vcpu *v, const char *what, uintptr_t rip)
{
    if (!vcpu_run_entered(s, v))
        return false;
    if ((v->exit.reason & 0xffff) == EXIT_VMCALL && v->regs.rax == CALL_RAN_ON)
        return scenario_bad(s, "%s: expected an interrupt-window exit at rip 0x%llx, observed none (the guest ran on "
                               "to rip 0x%llx)",
                            what, (unsigned long long)rip, (unsigned long long)v->exit.guest_rip);
    if ((v->exit.reason & 0xffff) != EXIT_INTERRUPT_WINDOW)
        return scenario_bad(s, "%s: expected an interrupt-window exit (7) at rip 0x%llx, observed %s exit (%u) at rip "
                               "0x%llx",
                            what, (unsigned long long)rip, exit_reason_name(v->exit.reason), v->exit.reason & 0xffff,
                            (unsigned long long)v->exit.guest_rip);
    if (v->exit.guest_rip != rip)
        return scenario_bad(s, "%s: expected the interrupt-window exit at rip 0x%llx, observed it at rip 0x%llx", what,
                            (unsigned long long)rip, (unsigned long long)v->exit.guest_rip);
    return true;
}

/* Steps 1 and 2: an open window, and the window that opens one instruction after STI. */
static bool window_and_sti_shadow(struct scenario *s, struct vcpu *v)
{
    window_control(true);
    start_at(iw_nops, true, 0, ACTIVITY_ACTIVE);
    if (!expect_window_exit(s, v, "IF=1, no blocking", (uintptr_t)iw_nops))
        return false;
    start_at(iw_sti, false, 0, ACTIVITY_ACTIVE);
    if (!expect_window_exit(s, v, "IF=0, STI; NOP", (uintptr_t)iw_sti_after))
        return false;
    return expect_eq(s, "saved RFLAGS.IF after STI", RFLAGS_IF, vmcs_read(VMCS_GUEST_RFLAGS) & RFLAGS_IF);
}

/* Step 3: a VMCALL in a shadow exits with the shadow recorded in the interruptibility state. */
static bool shadow_saved(struct scenario *s, struct vcpu *v, const uint8_t *code, const uint8_t *vmcall,
                         bool interrupts_on, uint32_t blocking, const char *what)
{
    window_control(false);
    start_at(code, interrupts_on, 0, ACTIVITY_ACTIVE);
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (!expect_eq(s, "rip of the VMCALL exit", (uintptr_t)vmcall, v->exit.guest_rip))
        return false;
    uint32_t saved = (uint32_t)vmcs_read(VMCS_GUEST_INTERRUPTIBILITY) & 3;
    if (saved != blocking)
        return scenario_bad(s, "VMCALL right after %s: expected interruptibility state %u saved, observed %u", what,
                            blocking, saved);
    return true;
}

/* Step 4: blocking loaded by VM entry holds the window shut for exactly one instruction. */
static bool shadow_loaded(struct scenario *s, struct vcpu *v, uint32_t blocking, const char *what)
{
    window_control(true);
    start_at(iw_nops, true, s->inject ? 0 : blocking, ACTIVITY_ACTIVE);
    return expect_window_exit(s, v, what, (uintptr_t)iw_nops + 1);
}

/* Step 7: HLT with IF=1 and the window control: the exit wakes the guest at once. */
static bool halted_guest_woken(struct scenario *s, struct vcpu *v)
{
    bool timer = ALLOWED1(g_vmx.pin, PIN_PREEMPTION_TIMER) != 0;
    window_control(true);
    start_at(iw_nops, true, 0, ACTIVITY_HLT);
    if (timer) {
        uint64_t ticks = (g_tsc_hz / 20000) >> (g_vmx.misc & 0x1f); /* about 50 us */
        vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, PIN_PREEMPTION_TIMER, 0);
        vmcs_write(VMCS_PREEMPTION_TIMER_VALUE, ticks ? ticks : 1);
    } else {
        scenario_info(s, "no preemption timer: \"at once\" is not timed in the HLT step");
    }
    bool entered = vcpu_run_entered(s, v);
    if (timer)
        vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, 0, PIN_PREEMPTION_TIMER);
    if (!entered)
        return false;
    if ((v->exit.reason & 0xffff) == EXIT_PREEMPTION_TIMER)
        return scenario_bad(s, "activity HLT, IF=1: expected an interrupt-window exit at once (it wakes a halted "
                               "guest), observed the preemption-timer exit after ~50 us first (the guest stayed halted)");
    if (!expect_window_exit(s, v, "activity HLT, IF=1", (uintptr_t)iw_nops))
        return false;
    scenario_info(s, "interrupt-window exit from HLT: activity state saved as %llu",
                  (unsigned long long)vmcs_read(VMCS_GUEST_ACTIVITY_STATE));
    return true;
}

/* Steps 5 and 7: injection first, then the window, at the handler's first instruction. */
static bool injection_then_window(struct scenario *s, struct vcpu *v, uint32_t activity)
{
    const char *what = activity == ACTIVITY_HLT ? "HLT + injected interrupt 0x33" : "injected interrupt 0x33";
    window_control(true);
    start_at(iw_nops, true, 0, activity);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, INTR_INFO_VALID | INTR_TYPE_EXTERNAL | VECTOR_INJECTED);
    if (!expect_window_exit(s, v, what, guest_stub_table[VECTOR_INJECTED]))
        return false;
    if (v->exit.idt_vectoring_info & INTR_INFO_VALID)
        return scenario_bad(s, "%s: expected no IDT-vectoring information at the window exit (delivery was "
                               "complete), observed 0x%x",
                            what, v->exit.idt_vectoring_info);
    window_control(false);
    if (!vcpu_expect_call(s, v, GUEST_CALL_EVENT))
        return false;
    if (v->regs.rbx != VECTOR_INJECTED || v->regs.rdx != (uintptr_t)iw_nops)
        return scenario_bad(s, "%s: expected the handler to see vector 0x33 and return rip 0x%llx, observed vector "
                               "0x%llx rip 0x%llx",
                            what, (unsigned long long)(uintptr_t)iw_nops, (unsigned long long)v->regs.rbx,
                            (unsigned long long)v->regs.rdx);
    return true;
}

/* Step 6: an external interrupt may only be injected into a guest that can take it. */
static bool injection_refused(struct scenario *s, struct vcpu *v, bool interrupts_on, uint32_t blocking,
                              const char *what)
{
    window_control(false);
    start_at(iw_nops, interrupts_on, blocking, ACTIVITY_ACTIVE);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, INTR_INFO_VALID | INTR_TYPE_EXTERNAL | VECTOR_INJECTED);
    int rc = vcpu_run(v);
    if (rc != VMX_OK)
        return scenario_bad(s, "injection with %s: expected exit reason 0x80000021, observed %s (error %u)", what,
                            rc == VMX_FAIL_VALID ? "VMfailValid" : "VMfailInvalid", v->entry_error);
    if (v->exit.reason != EXIT_REASON_ENTRY_FAIL_GUEST)
        return scenario_bad(s, "injection with %s: expected exit reason 0x80000021, observed 0x%x at rip 0x%llx", what,
                            v->exit.reason, (unsigned long long)v->exit.guest_rip);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0);
    return true;
}

/* VMLAUNCH of the current VMCS, optionally in the shadow of MOV SS; returns the VMX status. */
static int vmlaunch_probe(bool after_mov_ss)
{
    uint8_t fail_invalid, fail_valid;
    uint32_t ss;
    if (after_mov_ss)
        __asm__ volatile("mov %%ss, %2\n\t"
                         "mov %2, %%ss\n\t"
                         "vmlaunch\n\t"
                         "setc %0\n\t"
                         "setz %1"
                         : "=qm"(fail_invalid), "=qm"(fail_valid), "=&r"(ss)::"cc", "memory");
    else
        __asm__ volatile("vmlaunch\n\t"
                         "setc %0\n\t"
                         "setz %1"
                         : "=qm"(fail_invalid), "=qm"(fail_valid)::"cc", "memory");
    return fail_invalid ? VMX_FAIL_INVALID : fail_valid ? VMX_FAIL_VALID : VMX_OK;
}

/* Step 8: a fresh VMCS whose CR3-target count (5) no CPU accepts: it can never enter. */
static bool vmlaunch_in_mov_ss_shadow(struct scenario *s)
{
    static struct vcpu probe; /* the watchdog may look at it after this function */
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)iw_nops, .stack_top = guest_stack_top() };
    vcpu_init(&probe, &cfg);
    vmcs_write(VMCS_CR3_TARGET_COUNT, 5);
    static const struct { bool mov_ss; uint32_t error; const char *what; } probes[2] = {
        { false, VMXERR_INVALID_CONTROL, "VMLAUNCH with CR3-target count 5" },
        { true, VMXERR_MOV_SS_BLOCKING, "the same VMLAUNCH right after MOV SS" },
    };
    for (int i = 0; i < 2; i++) {
        int rc = vmlaunch_probe(probes[i].mov_ss);
        uint32_t error = rc == VMX_FAIL_VALID ? vmx_instruction_error() : 0;
        if (rc != VMX_FAIL_VALID || error != probes[i].error)
            return scenario_bad(s, "%s: expected VMfailValid error %u, observed status %d error %u", probes[i].what,
                                probes[i].error, rc, error);
    }
    return true;
}

static void intr_window(struct scenario *s)
{
    if (!ALLOWED1(g_vmx.proc, PROC_INTERRUPT_WINDOW))
        return (void)scenario_skip(s, "interrupt-window exiting not allowed by IA32_VMX_PROCBASED_CTLS=0x%llx",
                                   (unsigned long long)g_vmx.proc);
    bool hlt = (g_vmx.misc & MISC_ACTIVITY_HLT) != 0;
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit);
    ((uint8_t *)idt)[VECTOR_INJECTED * guest_idt_gate_size() + 5] = GATE_TYPE_TRAP32;
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)iw_nops, .stack_top = guest_stack_top() };
    vcpu_init(&v, &cfg);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);

    if (!window_and_sti_shadow(s, &v) ||
        !shadow_saved(s, &v, iw_sti_vmcall, iw_sti_vmcall_insn, false, INTERRUPTIBILITY_STI, "STI") ||
        !shadow_saved(s, &v, iw_movss_vmcall, iw_movss_vmcall_insn, true, INTERRUPTIBILITY_MOV_SS, "MOV SS") ||
        !shadow_loaded(s, &v, INTERRUPTIBILITY_STI, "entry with blocking by STI") ||
        !shadow_loaded(s, &v, INTERRUPTIBILITY_MOV_SS, "entry with blocking by MOV SS"))
        return;
    if (!injection_then_window(s, &v, ACTIVITY_ACTIVE))
        return;
    if (!injection_refused(s, &v, false, 0, "RFLAGS.IF=0") ||
        !injection_refused(s, &v, true, INTERRUPTIBILITY_STI, "blocking by STI") ||
        !injection_refused(s, &v, true, INTERRUPTIBILITY_MOV_SS, "blocking by MOV SS"))
        return;
    /* The HLT steps last: an implementation that never wakes the guest must not hide the rest. */
    if (!hlt)
        scenario_info(s, "activity state HLT not offered (IA32_VMX_MISC=0x%llx): HLT steps left out",
                      (unsigned long long)g_vmx.misc);
    else if (injection_then_window(s, &v, ACTIVITY_HLT))
        halted_guest_woken(s, &v); /* a BAD here stays recorded; the last step is independent */
    if (!vmlaunch_in_mov_ss_shadow(s)) /* last: it makes another VMCS current */
        return;
    scenario_good(s);
}
