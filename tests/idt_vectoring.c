/*
 * idt_vectoring: an EPT violation in the middle of delivering an event to L2. L1 must read the
 * IDT-vectoring information, fix the mapping and re-inject the event; the L2 handler then runs
 * with the right vector and error code.
 *
 * Intel SDM Vol. 3C 28.2.4 "Information for VM Exits During Event Delivery" (the IDT-vectoring
 * information field: valid bit 31, type in bits 10:8, error code valid in bit 11, bit 12 undefined),
 * 27.6 "Event Injection" and 27.6.1.1 (a re-injected software interrupt needs the VM-entry
 * instruction length). Source: seed 003, XMHF nesting LHV: an EPT exit taken while delivering
 * the timer interrupt (IDT-vectoring information 0x80000020) was handled without re-injecting
 * the interrupt, so it was lost and L2 hung; "The correct response should be injecting the
 * event ... just need to copy the fields".
 * Three deliveries, each interrupted by an EPT violation L1 arranged:
 *   1. an external interrupt (vector 0x32) that L1 injects while L2's IDT page is unmapped:
 *      vectoring info 0x80000032; lost unless L1 re-injects it;
 *   2. INT 0x31 with the IDT page unmapped: vectoring info 0x80000431 and instruction length 2,
 *      re-injected with that length; the handler sees the return RIP after the INT;
 *   3. #GP(0x1238) from a bad selector load while the page of the stack it is pushed on is
 *      unmapped: vectoring info 0x80000b0d, vectoring error code 0x1238, re-injected with it.
 * GOOD: each violation at the expected page with the expected vectoring information, and each
 * handler runs with the event's vector, error code and frame RIP.
 * Negative control (inject=idt_vectoring): L1 maps the page again but does not re-inject, so
 * the interrupt of step 1 is lost.
 * Needs: EPT.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(idt_vectoring, LHV_OPT_USE_EPT, "vmx,ept", 3000, SUBARCH_ALL, SCENARIO_REPEATABLE, idt_vectoring);

#define CALL_READY 0x101    /* GUEST_CALL_USER + 1 */
#define CALL_NO_EVENT 0x102 /* the guest went on without its handler running */
#define VECTOR_INJECTED 0x32
#define VECTOR_SOFTWARE 0x31
#define GP_SELECTOR 0x1238
_Static_assert(CALL_READY == GUEST_CALL_USER + 1 && CALL_NO_EVENT == GUEST_CALL_USER + 2, "asm constants");

uint8_t g_idtv_stack[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

extern const uint8_t idtv_guest[], idtv_step_int[], idtv_step_gp[], idtv_gp_insn[];
__asm__(".pushsection .text\n"
        "idtv_guest:\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"                     /* 1: L1 injects vector 0x32 on the next entry */
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        "idtv_step_int:\n"
        "    .byte 0xcd, 0x31\n"           /* 2: INT 0x31 */
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        "idtv_step_gp:\n"
#ifdef __x86_64__
        "    mov $g_idtv_stack + 4096, %rsp\n"
#else
        "    mov $g_idtv_stack + 4096, %esp\n"
#endif
        "    mov $0x1238, %eax\n"
        "idtv_gp_insn:\n"
        "    mov %eax, %fs\n"              /* 3: #GP(0x1238): no such GDT entry */
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        ".popsection\n");

struct delivery {
    const char *what;
    uintptr_t unmapped_page; /* the page L1 takes away during this delivery */
    uint64_t violation_from, violation_to; /* where in it the violation must be: [from, to) */
    uint32_t vectoring_info;
    uint32_t error_code;
    uintptr_t handler_rip; /* RIP in the handler's frame */
};

static bool expect_violation(struct scenario *s, struct vcpu *v, const struct delivery *d)
{
    const struct vmx_exit *e = &v->exit;
    if (!vcpu_run_expect(s, v, EXIT_EPT_VIOLATION))
        return false;
    if (e->guest_physical < d->violation_from || e->guest_physical >= d->violation_to)
        return scenario_bad(s, "expected the EPT violation for %s in [0x%llx, 0x%llx), observed 0x%llx", d->what,
                            (unsigned long long)d->violation_from, (unsigned long long)d->violation_to,
                            (unsigned long long)e->guest_physical);
    if ((e->idt_vectoring_info & ~(1u << 12)) != d->vectoring_info) /* bit 12 is undefined there */
        return scenario_bad(s, "expected IDT-vectoring information 0x%x for %s, observed 0x%x", d->vectoring_info,
                            d->what, e->idt_vectoring_info);
    if ((d->vectoring_info & (1u << 11)) &&
        !expect_eq(s, "IDT-vectoring error code", d->error_code, vmcs_read(VMCS_IDT_VECTORING_ERROR_CODE)))
        return false;
    if ((d->vectoring_info & 0x700) == 0x400 && !expect_eq(s, "instruction length for INT n", 2, e->instruction_length))
        return false;
    return true;
}

/* What a correct L1 does: copy the vectoring fields into the VM-entry injection fields. */
static void reinject(struct vcpu *v)
{
    uint32_t info = v->exit.idt_vectoring_info & 0x80000fffu; /* bit 12 is undefined there */
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, info);
    if (info & (1u << 11))
        vmcs_write(VMCS_ENTRY_EXCEPTION_ERROR_CODE, vmcs_read(VMCS_IDT_VECTORING_ERROR_CODE));
    vmcs_write(VMCS_ENTRY_INSTRUCTION_LENGTH, v->exit.instruction_length);
}

static bool expect_handler(struct scenario *s, struct vcpu *v, const struct delivery *d)
{
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (v->regs.rax == CALL_NO_EVENT)
        return scenario_bad(s, "expected the L2 handler for %s, observed the guest going on without it (event lost)",
                            d->what);
    if (!expect_eq(s, "guest VMCALL", GUEST_CALL_EVENT, v->regs.rax))
        return false;
    uint32_t vector = d->vectoring_info & 0xff;
    if (v->regs.rbx != vector || (uint32_t)v->regs.rcx != d->error_code || v->regs.rdx != d->handler_rip)
        return scenario_bad(s, "expected the handler for %s to see vector 0x%x error 0x%x rip 0x%llx, observed vector "
                               "0x%llx error 0x%llx rip 0x%llx",
                            d->what, vector, d->error_code, (unsigned long long)d->handler_rip,
                            (unsigned long long)v->regs.rbx, (unsigned long long)(uint32_t)v->regs.rcx,
                            (unsigned long long)v->regs.rdx);
    return true;
}

/* Take the page away, let the delivery fault, give the page back, re-inject, see the handler. */
static bool delivery_step(struct scenario *s, struct vcpu *v, struct ept *ept, const struct delivery *d)
{
    ept_set_4k(ept, d->unmapped_page, 0, 0);
    ept_invalidate(ept);
    if (!expect_violation(s, v, d))
        return false;
    ept_set_4k(ept, d->unmapped_page, d->unmapped_page, EPT_RWX);
    if (!s->inject)
        reinject(v);
    return expect_handler(s, v, d);
}

static void idt_vectoring(struct scenario *s)
{
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit), gate = guest_idt_gate_size();
    struct ept ept;
    ept_build_identity(&ept, false);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)idtv_guest,
                                .stack_top = guest_stack_top(), .eptp = ept.eptp };
    vcpu_init(&v, &cfg);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | RFLAGS_IF); /* an injected external interrupt needs IF=1 */
    vcpu_set_controls(VMCS_EXCEPTION_BITMAP, 0, 1u << 13); /* #GP goes to L2's handler */
    if (!vcpu_expect_call(s, &v, CALL_READY))
        return;

    uintptr_t stack = (uintptr_t)g_idtv_stack;
    const struct delivery steps[3] = {
        { "the injected interrupt 0x32", idt, idt + VECTOR_INJECTED * gate, idt + (VECTOR_INJECTED + 1) * gate,
          0x80000000u | VECTOR_INJECTED, 0, (uintptr_t)v.exit.guest_rip + v.exit.instruction_length },
        { "INT 0x31", idt, idt + VECTOR_SOFTWARE * gate, idt + (VECTOR_SOFTWARE + 1) * gate,
          0x80000400u | VECTOR_SOFTWARE, 0, (uintptr_t)idtv_step_int + 2 },
        { "#GP(0x1238)", stack, stack, stack + PAGE_SIZE, 0x80000b0du, GP_SELECTOR, (uintptr_t)idtv_gp_insn },
    };
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, steps[0].vectoring_info); /* inject the external interrupt */
    if (!delivery_step(s, &v, &ept, &steps[0]))
        return;
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)idtv_step_int);
    vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
    if (!delivery_step(s, &v, &ept, &steps[1]))
        return;
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)idtv_step_gp);
    if (!delivery_step(s, &v, &ept, &steps[2]))
        return;
    scenario_good(s);
}
