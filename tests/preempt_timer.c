/*
 * preempt_timer: the VMX-preemption timer exits where the SDM says.
 *
 * Intel SDM Vol. 3C 26.5.1 "VMX-Preemption Timer": the timer counts down at the TSC rate divided
 * by 2^X, X = IA32_VMX_MISC[4:0]; at 0 a VM exit with reason 52 follows; a timer value of 0 at VM
 * entry gives the exit before the guest executes any instruction. 25.7.1: with the "save VMX-
 * preemption timer value" exit control the current value is stored at every VM exit; 27.2.1.2:
 * that control needs the timer itself.
 * Source: seed 002, where a pending preemption-timer exit taken instead of the expected re-entry
 * into L2 exposed stale PAE PDPTEs in KVM; scenarios that need "an exit to L1 right away" use this
 * timer because Bochs 2.7 never delivers MTF exits.
 * 27.7.4 "VMX-Preemption Timer" (VM entries): a timer that expires during VM entry (value 0)
 * causes its VM exit "with its normal priority after any event injection and before execution of
 * any instruction following VM entry" (pending debug exceptions established by the entry come
 * first); 27.6.1 "Vectored-Event Injection": an injected event is delivered within the guest
 * context established by VM entry, so delivery through L2's IDT completes and the exit comes with
 * the guest RIP at the handler's first instruction, nothing of the handler executed, and no
 * IDT-vectoring information (the delivery was not interrupted; 28.2.4). Used here as the rule:
 * injection first, then the timer exit, the handler's first instruction not yet done.
 * Checks: (1) value 0: exit 52 with the guest RIP still at its first instruction; (2) value N
 * while the guest spins: exit 52, no sooner than (N - 1) * 2^X TSC cycles after the entry, and,
 * when the save control exists, a saved value of 0; (3) a VMCALL before expiry saves a value
 * below N (INFO when the save control is absent); (4) value 0 with an injected #UD (hardware
 * exception, vector 6, delivered through L2's own IDT from guest/idt.c): exit 52 with the guest
 * RIP at the #UD handler's first instruction, IDT-vectoring information invalid and the VM-entry
 * interruption information consumed (valid bit 0); resumed with a large timer, the handler's
 * first instruction then runs and reports the frame's RIP, which must be the guest RIP of the
 * injecting entry (the event delivered exactly once, not again). A hypervisor that delivers its
 * timer exit before injecting (exit at the old RIP, event still pending) or that injects after
 * running the handler's first instruction is BAD.
 * Negative control (inject=preempt_timer): L1 forgets the pin-based "activate VMX-preemption
 * timer" control, so the guest spins to its end and reports that no exit came.
 * Needs: the VMX-preemption timer.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(preempt_timer, 0, "vmx,preempt_timer", 5000, SUBARCH_ALL, SCENARIO_REPEATABLE, preempt_timer);

#define EXIT_SAVE_PREEMPTION_TIMER (1u << 22)
#define CALL_SPIN_ENDED (GUEST_CALL_USER + 1)
#define TIMER_VALUE 2000u
#define SPIN_ITERATIONS 5000000ul
#define CALL_UD_HANDLER (GUEST_CALL_USER + 2)
#define VECTOR_UD 6
_Static_assert(CALL_UD_HANDLER == 0x102, "keep the assembly's constant in step");

/* L2's #UD handler: its first instruction reads the frame's RIP; then it reports it. */
extern const uint8_t pt_ud_handler[];
__asm__(".pushsection .text\n"
        "pt_ud_handler:\n"
#ifdef __x86_64__
        "    mov (%rsp), %rbx\n"
#else
        "    mov (%esp), %ebx\n"
#endif
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

static uintptr_t guest_spin(uintptr_t iterations)
{
    for (volatile uintptr_t i = 0; i < iterations; i++)
        ;
    guest_vmcall(CALL_SPIN_ENDED, 0, 0);
    return 0;
}

static void restart_guest(struct vcpu *v, uintptr_t iterations, uint32_t timer)
{
    vcpu_restart_c_guest(v, guest_spin, iterations);
    vmcs_write(VMCS_PREEMPTION_TIMER_VALUE, timer);
}

/* Runs L2 once; the exit must be the timer's. */
static bool run_to_timer_exit(struct scenario *s, struct vcpu *v)
{
    if (!vcpu_run_entered(s, v))
        return false;
    if ((v->exit.reason & 0xffff) == EXIT_VMCALL && v->regs.rax == CALL_SPIN_ENDED)
        return scenario_bad(s, "expected a preemption-timer exit (52), observed none: the guest spun %lu "
                               "iterations to its end",
                            SPIN_ITERATIONS);
    return vcpu_check_exit(s, v, EXIT_PREEMPTION_TIMER);
}

/* (4) Timer 0 with an injected #UD: delivered first, then the timer exit at the handler. */
static bool zero_timer_with_injection(struct scenario *s, struct vcpu *v)
{
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit);
    guest_idt_set_gate(VECTOR_UD, (uintptr_t)pt_ud_handler);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    vcpu_set_controls(VMCS_EXCEPTION_BITMAP, 0, 1u << VECTOR_UD);
    restart_guest(v, SPIN_ITERATIONS, 0);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, INTR_INFO_VALID | INTR_TYPE_HW_EXCEPTION | VECTOR_UD);
    if (!run_to_timer_exit(s, v))
        return false;
    if (v->exit.guest_rip != (uintptr_t)pt_ud_handler)
        return scenario_bad(s, "injected #UD with timer 0: expected the timer exit at the handler's first instruction "
                               "0x%llx, observed guest RIP 0x%llx (trampoline 0x%llx)",
                            (unsigned long long)(uintptr_t)pt_ud_handler, (unsigned long long)v->exit.guest_rip,
                            (unsigned long long)(uintptr_t)guest_trampoline);
    if (!expect_eq(s, "IDT-vectoring information at the timer exit after injection", 0,
                   v->exit.idt_vectoring_info & INTR_INFO_VALID) ||
        !expect_eq(s, "VM-entry interruption information valid bit after the timer exit", 0,
                   vmcs_read(VMCS_ENTRY_INTERRUPTION_INFO) & INTR_INFO_VALID))
        return false;
    vmcs_write(VMCS_PREEMPTION_TIMER_VALUE, 0xffffffffu);
    if (!vcpu_run_expect(s, v, EXIT_VMCALL) ||
        !expect_eq(s, "guest VMCALL from the #UD handler", CALL_UD_HANDLER, v->regs.rax))
        return false;
    return expect_eq(s, "return RIP in the #UD frame", (uintptr_t)guest_trampoline, v->regs.rbx);
}

static void preempt_timer(struct scenario *s)
{
    uint32_t rate = (uint32_t)(g_vmx.misc & 0x1f);
    bool can_save = ALLOWED1(g_vmx.exit, EXIT_SAVE_PREEMPTION_TIMER) != 0;
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_spin, SPIN_ITERATIONS);
    if (!s->inject)
        vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, PIN_PREEMPTION_TIMER, 0);
    if (can_save && !s->inject) /* saving needs the timer itself (SDM 27.2.1.2) */
        vcpu_set_controls(VMCS_EXIT_CONTROLS, EXIT_SAVE_PREEMPTION_TIMER, 0);

    /* (1) Zero: the exit comes before the first guest instruction. */
    restart_guest(&v, SPIN_ITERATIONS, 0);
    if (!run_to_timer_exit(s, &v) || !expect_eq(s, "guest RIP at a zero-timer exit", (uintptr_t)guest_trampoline,
                                                v.exit.guest_rip))
        return;

    /* (2) N: not before (N - 1) * 2^X TSC cycles; the saved value is then 0. */
    restart_guest(&v, SPIN_ITERATIONS, TIMER_VALUE);
    uint64_t before = rdtsc();
    bool timer_exit = run_to_timer_exit(s, &v);
    uint64_t elapsed = rdtsc() - before;
    if (!timer_exit)
        return;
    uint64_t least = (uint64_t)(TIMER_VALUE - 1) << rate;
    if (elapsed < least)
        return (void)scenario_bad(s, "expected the exit after at least %llu TSC cycles (%u << %u), observed %llu",
                                  (unsigned long long)least, TIMER_VALUE - 1, rate, (unsigned long long)elapsed);
    if (can_save && !expect_eq(s, "saved preemption timer value at its exit", 0,
                               vmcs_read(VMCS_PREEMPTION_TIMER_VALUE)))
        return;
    scenario_info(s, "timer %u at rate 2^%u: exit after %llu TSC cycles", TIMER_VALUE, rate,
                  (unsigned long long)elapsed);

    /* (3) A VMCALL long before expiry: the saved value has counted down, but not to 0. */
    restart_guest(&v, 1, 0xffffffffu);
    if (!vcpu_expect_call(s, &v, CALL_SPIN_ENDED))
        return;
    uint64_t saved = vmcs_read(VMCS_PREEMPTION_TIMER_VALUE);
    if (!can_save)
        scenario_info(s, "no \"save VMX-preemption timer value\" control: saved-value checks left out");
    else if (saved == 0 || saved >= 0xffffffffu)
        return (void)scenario_bad(s, "expected a saved timer value in (0, 0xffffffff) after an early VMCALL, "
                                     "observed 0x%llx",
                                  (unsigned long long)saved);
    if (zero_timer_with_injection(s, &v))
        scenario_good(s);
}
