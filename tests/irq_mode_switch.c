/*
 * irq_mode_switch: interrupts keep arriving while L2 leaves long mode and comes back; a guest
 * that keeps them off (IF=0) for the switch must never see one in the middle of it, and nothing
 * may fault.
 *
 * Source: seed 003, "Unrestricted guest in AMD64": LHV's L2 under XMHF took an interrupt between
 * `pushl $__CS` and `lretl` while turning paging off, and ended in the #TS handler with a
 * misaligned stack; the fix was to disable interrupts in lhv_disable_enable_paging(). The L1
 * side of that contract is what this checks: an interrupt is delivered only when the guest can
 * take it (Intel SDM Vol. 3C 27.3.1.5 "Checks on Guest Non-Register State" and 27.6 "Event
 * Injection": an injected external interrupt needs RFLAGS.IF=1 and no STI/MOV-SS blocking;
 * 25.6.2, "interrupt-window exiting", tells L1 when that is).
 * L2 (amd64, unrestricted guest): N rounds of [IF=1 for a while; CLI; far return to 32-bit
 * code; CR0.PG off (long mode off); CR0.PG on; far jump back to 64-bit code]. L1 makes the
 * preemption timer exit L2 at pseudo-random points and, at each exit, injects vector 0x30 when
 * L2 is interruptible or else asks for an interrupt-window exit and injects then. L2's handler
 * counts and IRETs. In the middle of the switch L2's IDT (64-bit format) is wrong for 32-bit
 * protected mode, so an interrupt there faults.
 * GOOD: every round completes, the handler ran exactly as often as L1 injected, no exception.
 * Negative control (inject=irq_mode_switch): L1 sets RFLAGS.IF in the saved guest
 * state whenever it finds it clear (a hypervisor restoring a stale RFLAGS), so interrupts land
 * mid-switch.
 * Needs: amd64 (on i386 the IDT format does not change with paging), EPT, unrestricted guest,
 * the preemption timer, interrupt-window exiting, the EFER load controls.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(irq_mode_switch, LHV_OPT_USE_EPT | LHV_OPT_USE_UNRESTRICTED_GUEST,
                   "vmx,ept,ug,preempt_timer,load_efer", 8000, SUBARCH_AMD64, SCENARIO_REPEATABLE, irq_mode_switch);

#define ROUNDS 300
#define VECTOR_TICK 0x30
#define EXIT_INTERRUPT_WINDOW 7
#define PROC_INTERRUPT_WINDOW (1u << 2)
#define MAX_EXITS 100000

volatile uint32_t g_irq_handled;

#ifdef __x86_64__
/* ESI = rounds. */
extern const uint8_t irq_guest[], irq_tick_handler[];
__asm__(".pushsection .text\n"
        "irq_tick_handler:\n"
        "    lock incl g_irq_handled(%rip)\n"
        "    iretq\n"
        "irq_guest:\n"
        "1:  sti\n"
        "    mov $64, %ecx\n"
        "2:  dec %ecx\n"
        "    jnz 2b\n"                     /* interrupts are welcome here */
        "    cli\n"
        "    pushq $0x08\n"                /* SEL_CODE32 */
        "    lea 3f(%rip), %rax\n"
        "    pushq %rax\n"
        "    lretq\n"
        ".code32\n"
        "3:  mov %cr0, %eax\n"
        "    and $0x7fffffff, %eax\n"
        "    mov %eax, %cr0\n"              /* long mode off: a 64-bit IDT is wrong now */
        "    mov %cr0, %eax\n"
        "    or $0x80000000, %eax\n"
        "    mov %eax, %cr0\n"
        "    ljmp $0x18, $4f\n"             /* SEL_CODE64 */
        ".code64\n"
        "4:  dec %esi\n"
        "    jnz 1b\n"
        "    mov g_irq_handled(%rip), %ebx\n"
        "    mov $0x10, %eax\n"             /* GUEST_CALL_DONE */
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");
#else
extern const uint8_t irq_guest[], irq_tick_handler[];
const uint8_t irq_guest[1], irq_tick_handler[1]; /* never run: the scenario is amd64-only */
#endif

static bool interruptible(void)
{
    return (vmcs_read(VMCS_GUEST_RFLAGS) & RFLAGS_IF) && !(vmcs_read(VMCS_GUEST_INTERRUPTIBILITY) & 3);
}

/* Deliver one tick now, or ask to be told when the guest can take it. */
static void offer_tick(struct vcpu *v, uint32_t *injected)
{
    if (interruptible()) {
        vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0x80000000u | VECTOR_TICK);
        vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, 0, PROC_INTERRUPT_WINDOW);
        (*injected)++;
    } else {
        vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, PROC_INTERRUPT_WINDOW, 0);
    }
    (void)v;
}

static void irq_mode_switch(struct scenario *s)
{
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit);
    guest_idt_set_gate(VECTOR_TICK, (uintptr_t)irq_tick_handler);
    struct ept ept;
    ept_build_identity(&ept, (lhv_opt() & LHV_OPT_USE_LARGE_PAGE) != 0);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)irq_guest,
                                .stack_top = guest_stack_top(), .eptp = ept.eptp, .unrestricted = true };
    vcpu_init(&v, &cfg);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, PIN_PREEMPTION_TIMER, 0);
    g_irq_handled = 0;
    v.regs.rsi = ROUNDS;
    uint32_t injected = 0, seed = 4242;
    for (int exits = 0; exits < MAX_EXITS; exits++) {
        seed = seed * 1103515245u + 12345u;
        vmcs_write(VMCS_PREEMPTION_TIMER_VALUE, 20 + ((seed >> 16) & 255));
        if (s->inject && !(vmcs_read(VMCS_GUEST_RFLAGS) & RFLAGS_IF))
            vmcs_write(VMCS_GUEST_RFLAGS, vmcs_read(VMCS_GUEST_RFLAGS) | RFLAGS_IF); /* the stale RFLAGS */
        if (!vcpu_run_entered(s, &v))
            return;
        uint32_t reason = v.exit.reason & 0xffff;
        if (reason == EXIT_PREEMPTION_TIMER || reason == EXIT_INTERRUPT_WINDOW) {
            offer_tick(&v, &injected);
            continue;
        }
        if (!vcpu_check_exit(s, &v, EXIT_VMCALL) || !expect_eq(s, "guest VMCALL", GUEST_CALL_DONE, v.regs.rax))
            return;
        if (!expect_eq(s, "interrupts handled by L2 (injected by L1)", injected, (uint32_t)v.regs.rbx))
            return;
        scenario_info(s, "%d mode-switch rounds, %u interrupts delivered between them", ROUNDS, injected);
        scenario_good(s);
        return;
    }
    scenario_error(s, "the guest did not finish in %d exits", MAX_EXITS);
}
