/*
 * extint_exit: external-interrupt exiting with and without "acknowledge interrupt on exit": what
 * the exit reports, and where the interrupt is in L1's local APIC afterwards.
 *
 * Intel SDM Vol. 3C:
 *  - 25.6.1 "Pin-Based VM-Execution Controls" (external-interrupt exiting) and 26.2 "Other
 *    Causes of VM Exits": with the control set an external interrupt causes a VM exit whatever
 *    the guest's RFLAGS.IF (26.3, "RFLAGS.IF ... does not block external interrupts" then).
 *  - 25.7.1 "VM-Exit Controls", bit 15 "acknowledge interrupt on exit": with it the processor
 *    acknowledges the interrupt controller (the vector moves from IRR to ISR, so L1 owes the
 *    EOI) and stores the vector; without it the interrupt stays pending (IRR) and is delivered
 *    to L1 when L1 sets RFLAGS.IF.
 *  - 28.2.2 "Information for VM Exits Due to Vectored Events": for an external-interrupt exit
 *    the VM-exit interruption-information field is valid (bit 31) only with "acknowledge
 *    interrupt on exit", and then holds the vector with type 0; otherwise bit 31 is 0.
 *  - Vol. 3A 11.8.3/11.8.4: of several pending fixed interrupts the highest vector goes first.
 * Bugs: Xen a8effbffe5 "x86/vvmx: fix VM_EXIT_ACK_INTR_ON_EXIT handling" (interruption
 * information valid without the control); KVM's 2024 series 363010e1dd0e / 8c23670f2b00 (the
 * vector reported must be the one really acknowledged, no exit without an interrupt); see
 * shared/research/nested-vmx-bugs.md (X4, X5, K23). kvm-unit-tests' "interrupt" test.
 * L1 raises the interrupts itself with fixed-vector self-IPIs (0x62 and 0x92, unused by LHV)
 * while its own RFLAGS.IF is 0, waits for them in IRR, then enters L2 (a spinning C guest that
 * reports if it ever gets to its end):
 *   1. no acknowledge, guest IF=1: exit 1, interruption information bit 31 clear, 0x62
 *      still in IRR and not in ISR; L1's STI delivers it to L1 exactly once;
 *   2. acknowledge, guest IF=1: exit 1 with interruption information 0x80000062, 0x62
 *      in ISR and not in IRR; after L1's EOI nothing more is delivered to L1;
 *   3. acknowledge, 0x62 and 0x92 pending: two exits, 0x92 first, 0x62 second (0x62 still in
 *      IRR at the first);
 *   4. no acknowledge, both pending: one exit, then L1's STI delivers 0x92 before 0x62;
 *   5. steps 1 and 2 again with guest IF=0 (the exit does not depend on it), last and each on
 *      its own so that this one does not hide the others.
 * A LAPIC timer tick (0x40) may be the interrupt an exit acknowledges: L1 passes it on to its own
 * handler (INT 0x40, which does the EOI) and enters again.
 * GOOD: every step as above. BAD: the first difference.
 * Negative control (inject=extint_exit): L1 leaves "acknowledge interrupt on exit" off in step 2
 * (a hypervisor that drops the control when it builds its own VMCS), so the vector is missing.
 * Needs: VMX with the "acknowledge interrupt on exit" control.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(extint_exit, 0, "vmx", 5000, SUBARCH_ALL, SCENARIO_REPEATABLE, extint_exit);

#define VECTOR_LOW 0x62
#define VECTOR_HIGH 0x92
#define CALL_SPIN_ENDED (GUEST_CALL_USER + 1)
#define SPIN_ITERATIONS 5000000ul
#define MAX_TIMER_EXITS 100

/* What L1's own handler got of the scenario's vectors, in order. */
static volatile uint8_t g_delivered[8];
static volatile uint32_t g_delivered_count;

static void count_delivery(struct trap_frame *f)
{
    if (f->vector != VECTOR_LOW && f->vector != VECTOR_HIGH)
        return;
    uint32_t n = g_delivered_count;
    if (n < ARRAY_SIZE(g_delivered))
        g_delivered[n] = (uint8_t)f->vector;
    g_delivered_count = n + 1;
}

static uintptr_t guest_spin(uintptr_t iterations)
{
    for (volatile uintptr_t i = 0; i < iterations; i++)
        ;
    guest_vmcall(CALL_SPIN_ENDED, 0, 0);
    return 0;
}

/* A fixed interrupt to this CPU, left pending: L1 runs with IF=0 here. */
static bool raise_pending(struct scenario *s, uint8_t vector)
{
    lapic_send_ipi(lapic_id(), vector); /* fixed delivery, physical destination = this CPU */
    for (int i = 0; i < 1000000; i++)
        if (lapic_requested(vector))
            return true;
    return scenario_error(s, "self-IPI 0x%x never showed up in the local APIC's IRR", vector);
}

/* L1 takes whatever is pending (IF=1 for a moment) and sees which of its vectors arrived. */
static void let_l1_take_interrupts(void)
{
    irq_enable();
    delay_us(100);
    irq_disable();
}

static void prepare_entry(struct vcpu *v, bool guest_if, bool ack)
{
    vcpu_restart_c_guest(v, guest_spin, SPIN_ITERATIONS);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | (guest_if ? RFLAGS_IF : 0));
    vcpu_set_controls(VMCS_EXIT_CONTROLS, ack ? EXIT_ACK_INTERRUPT : 0, ack ? 0 : EXIT_ACK_INTERRUPT);
}

/* Enter L2 until an external-interrupt exit that is not a timer tick L1 had to pass on. Returns
 * with L1's interrupts disabled. */
static bool run_to_interrupt_exit(struct scenario *s, struct vcpu *v, bool ack, const char *what)
{
    for (int ticks = 0; ticks < MAX_TIMER_EXITS; ticks++) {
        irq_disable();
        if (!vcpu_run_entered(s, v))
            return false;
        if ((v->exit.reason & 0xffff) == EXIT_VMCALL && v->regs.rax == CALL_SPIN_ENDED)
            return scenario_bad(s, "%s: expected an external-interrupt exit, observed none (the guest spun to its end "
                                   "with the interrupt pending)",
                                what);
        if (!vcpu_check_exit(s, v, EXIT_EXTERNAL_INTERRUPT))
            return false;
        uint32_t info = v->exit.interruption_info;
        if (!ack || info != (INTR_INFO_VALID | INTR_TYPE_EXTERNAL | VECTOR_TIMER))
            return true;
        __asm__ volatile("int $0x40" ::: "memory"); /* L1's tick, acknowledged by the exit: its handler EOIs */
    }
    return scenario_error(s, "%s: %d timer-tick exits in a row", what, MAX_TIMER_EXITS);
}

static bool expect_apic(struct scenario *s, const char *what, uint8_t vector, bool in_service, bool requested)
{
    bool isr = lapic_in_service(vector), irr = lapic_requested(vector);
    if (isr == in_service && irr == requested)
        return true;
    return scenario_bad(s, "%s: expected vector 0x%x with ISR=%d IRR=%d in L1's local APIC, observed ISR=%d IRR=%d",
                        what, vector, in_service, requested, isr, irr);
}

static bool expect_delivered(struct scenario *s, const char *what, uint32_t count, const uint8_t *order)
{
    if (g_delivered_count != count)
        return scenario_bad(s, "%s: expected %u interrupt(s) delivered to L1 when it set IF, observed %u", what, count,
                            g_delivered_count);
    for (uint32_t i = 0; i < count; i++)
        if (g_delivered[i] != order[i])
            return scenario_bad(s, "%s: expected delivery %u to L1 to be vector 0x%x, observed 0x%x", what, i + 1,
                                order[i], g_delivered[i]);
    return true;
}

/* Step 1: the interrupt is not acknowledged; L1 gets it when it opens IF. */
static bool without_ack(struct scenario *s, struct vcpu *v, bool guest_if)
{
    const char *what = guest_if ? "no acknowledge, guest IF=1" : "no acknowledge, guest IF=0";
    static const uint8_t once[1] = { VECTOR_LOW };
    prepare_entry(v, guest_if, false);
    if (!raise_pending(s, VECTOR_LOW) || !run_to_interrupt_exit(s, v, false, what))
        return false;
    if (v->exit.interruption_info & INTR_INFO_VALID)
        return scenario_bad(s, "%s: expected VM-exit interruption information not valid (bit 31 clear), observed 0x%x "
                               "(Xen a8effbffe5)",
                            what, v->exit.interruption_info);
    if (!expect_apic(s, what, VECTOR_LOW, false, true))
        return false;
    g_delivered_count = 0;
    let_l1_take_interrupts();
    return expect_delivered(s, what, 1, once) && expect_apic(s, "after L1 took it", VECTOR_LOW, false, false);
}

/* An acknowledged exit must name the vector; L1 then owes the EOI. */
static bool acknowledged(struct scenario *s, struct vcpu *v, const char *what, uint8_t vector, bool other_pending)
{
    uint32_t expected = INTR_INFO_VALID | INTR_TYPE_EXTERNAL | vector;
    if (!run_to_interrupt_exit(s, v, true, what))
        return false;
    if (v->exit.interruption_info != expected)
        return scenario_bad(s, "%s: expected VM-exit interruption information 0x%x, observed 0x%x", what, expected,
                            v->exit.interruption_info);
    if (!expect_apic(s, what, vector, true, false))
        return false;
    if (other_pending && !expect_apic(s, "the lower vector meanwhile", VECTOR_LOW, false, true))
        return false;
    lapic_eoi();
    return expect_apic(s, "after L1's EOI", vector, false, false);
}

/* Step 2: acknowledged on exit, so it is L1's to EOI and is never delivered to L1 again. */
static bool with_ack(struct scenario *s, struct vcpu *v, bool guest_if)
{
    const char *what = guest_if ? "acknowledge on exit, guest IF=1" : "acknowledge on exit, guest IF=0";
    prepare_entry(v, guest_if, !s->inject);
    if (!raise_pending(s, VECTOR_LOW) || !acknowledged(s, v, what, VECTOR_LOW, false))
        return false;
    g_delivered_count = 0;
    let_l1_take_interrupts();
    return expect_delivered(s, what, 0, NULL);
}

/* Step 3: two pending, acknowledged one exit each, the higher vector first. */
static bool two_with_ack(struct scenario *s, struct vcpu *v)
{
    prepare_entry(v, true, true);
    if (!raise_pending(s, VECTOR_LOW) || !raise_pending(s, VECTOR_HIGH))
        return false;
    if (!acknowledged(s, v, "two pending, first exit", VECTOR_HIGH, true))
        return false;
    return acknowledged(s, v, "two pending, second exit", VECTOR_LOW, false);
}

/* Step 4: two pending, not acknowledged: L1 takes them itself, the higher vector first. */
static bool two_without_ack(struct scenario *s, struct vcpu *v)
{
    static const uint8_t order[2] = { VECTOR_HIGH, VECTOR_LOW };
    prepare_entry(v, true, false);
    if (!raise_pending(s, VECTOR_LOW) || !raise_pending(s, VECTOR_HIGH))
        return false;
    if (!run_to_interrupt_exit(s, v, false, "two pending, no acknowledge"))
        return false;
    g_delivered_count = 0;
    let_l1_take_interrupts();
    return expect_delivered(s, "two pending, no acknowledge", 2, order);
}

/* Whatever a failed step left behind: EOI for a vector still in service, the rest delivered. */
static void drain_apic(void)
{
    irq_disable();
    for (int i = 0; i < 2 && (lapic_in_service(VECTOR_HIGH) || lapic_in_service(VECTOR_LOW)); i++)
        lapic_eoi();
    let_l1_take_interrupts();
}

static void extint_exit(struct scenario *s)
{
    if (!ALLOWED1(g_vmx.exit, EXIT_ACK_INTERRUPT))
        return (void)scenario_skip(s, "\"acknowledge interrupt on exit\" not allowed by IA32_VMX_EXIT_CTLS=0x%llx",
                                   (unsigned long long)g_vmx.exit);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_spin, SPIN_ITERATIONS);
    v.irq_exits_to_caller = true;
    g_delivered_count = 0;
    irq_set_hook(count_delivery);
    irq_disable();
    bool good = without_ack(s, &v, true) && with_ack(s, &v, true) && two_with_ack(s, &v) && two_without_ack(s, &v);
    drain_apic();
    /* Guest IF=0 last and each on its own: an implementation that lets the guest's IF block the
     * exit must not hide the other checks. */
    bool if0_without = without_ack(s, &v, false);
    drain_apic();
    bool if0_with = with_ack(s, &v, false);
    drain_apic();
    irq_set_hook(NULL);
    irq_enable();
    if (good && if0_without && if0_with)
        scenario_good(s);
}
