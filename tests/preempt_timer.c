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
 * Checks: (1) value 0: exit 52 with the guest RIP still at its first instruction; (2) value N
 * while the guest spins: exit 52, no sooner than (N - 1) * 2^X TSC cycles after the entry, and,
 * when the save control exists, a saved value of 0; (3) a VMCALL before expiry saves a value
 * below N (INFO when the save control is absent).
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
    scenario_good(s);
}
