/*
 * event_injection: VM-entry injection of every event type the SDM defines, as L2's handlers see
 * it, in a protected/long-mode guest and in a real-mode guest under unrestricted guest.
 *
 * Intel SDM Vol. 3C:
 *  - 25.8.3 "VM-Entry Controls for Event Injection": the interruption-information field (vector,
 *    type 0 external interrupt, 2 NMI, 3 hardware exception, 4 software interrupt, 5 privileged
 *    software exception, 6 software exception, 7 other event; deliver-error-code bit 11), the
 *    error code and the instruction length; a VM exit clears the valid bit (bit 31).
 *  - 27.6 "Event Injection", 27.6.1.1: the event is delivered through the guest's IDT (IVT in
 *    real mode) as if it had occurred right after VM entry; for types 4, 5 and 6 the return RIP
 *    pushed is the guest RIP plus the VM-entry instruction length, for the others it is the guest
 *    RIP itself; an error code is pushed when bit 11 says so. 27.6.2 "Injection of Pending MTF VM
 *    Exits": type 7 with vector 0 makes an MTF VM exit occur right after VM entry, before any
 *    guest instruction, even with the monitor trap flag control off.
 *  - 27.2.1.3 (which vectors take an error code; none when CR0.PE=0 under unrestricted guest),
 *    27.3.1.4 (RFLAGS.IF=1 for an injected external interrupt).
 * Source: kvm-unit-tests (vmx_exception_test, the "invalid event injection" checks of
 * vmx_controls_test, vmx_mtf_test), the injection bugs in shared/research/nested-vmx-bugs.md
 * (XMHF's stale entry interruption information re-injecting NMIs, §4 finding 3; the KVM event/
 * exception series of 2022, K15); a nested hypervisor has to rebuild each injected event for its
 * L0, and every type has its own rule for the return address and the error code.
 * Steps (protected/long mode, L2's IDT from guest/idt.c, the vectors' exception-bitmap bits
 * cleared): external interrupt 0x35; NMI; #UD (hardware exception, no error code); #GP with
 * error code 0x1234; INT 0x36 with length 2 (type 4); ICEBP/INT1 with length 1 (type 5); INT3
 * and INTO with length 1 (type 6). For each, L2's handler must report the vector, the error code
 * and the frame RIP above, and after that exit the entry interruption-information field must be
 * invalid. Real mode (unrestricted guest, EPT; a 16-bit world of four pages that EPT maps at
 * guest-physical 0-0x3fff: IVT, handlers, stack, code): external interrupt 0x30, INT 0x31 with
 * length 2 and #UD, each handler seeing its vector and an IRET frame (IP, CS, FLAGS) with the
 * IP above and IF set. Where the monitor trap flag is offered (before the real-mode part): type
 * 7 gives an MTF exit (37) at the guest's first instruction. Each part runs even when the one
 * before was BAD.
 * GOOD: all as above. BAD: the first difference.
 * Negative control (inject=event_injection): L1 gives the software interrupt a VM-entry
 * instruction length of 1 instead of 2 (a hypervisor that gets the length wrong), so the handler
 * sees a return RIP one byte short.
 * Needs: VMX. The real-mode part needs EPT and unrestricted guest (LHV_OPT 0x4 and 0x20, and the
 * CPU) and the EFER load controls; type 7 needs the monitor trap flag; each is left out with an
 * INFO line otherwise.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(event_injection, 0, "vmx", 5000, SUBARCH_ALL, SCENARIO_REPEATABLE, event_injection);

#define CALL_NO_EVENT 0x101 /* GUEST_CALL_USER + 1: the guest ran without its handler */
_Static_assert(CALL_NO_EVENT == GUEST_CALL_USER + 1, "keep the assembly's constant in step");

extern const uint8_t ei_landing[];
__asm__(".pushsection .text\n"
        "ei_landing:\n"
        "    nop\n"
        "    nop\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

struct injected_event {
    const char *what;
    uint32_t info;       /* VM-entry interruption information */
    uint32_t error_code; /* with bit 11 */
    uint32_t length;     /* VM-entry instruction length (types 4, 5, 6) */
    uint32_t rip_offset; /* the frame's RIP minus the guest RIP at entry */
};

#define EVENT(type, vector) (INTR_INFO_VALID | (type) | (vector))
static const struct injected_event g_events[] = {
    { "external interrupt 0x35", EVENT(INTR_TYPE_EXTERNAL, 0x35), 0, 0, 0 },
    { "NMI", EVENT(INTR_TYPE_NMI, 2), 0, 0, 0 },
    { "#UD (hardware exception)", EVENT(INTR_TYPE_HW_EXCEPTION, 6), 0, 0, 0 },
    { "#GP(0x1234)", EVENT(INTR_TYPE_HW_EXCEPTION, 13) | INTR_INFO_ERROR_CODE, 0x1234, 0, 0 },
    { "INT 0x36 (software interrupt, length 2)", EVENT(INTR_TYPE_SW_INTERRUPT, 0x36), 0, 2, 2 },
    { "ICEBP (privileged software exception, length 1)", EVENT(INTR_TYPE_PRIV_SW_EXCEPTION, 1), 0, 1, 1 },
    { "INT3 (software exception, length 1)", EVENT(INTR_TYPE_SW_EXCEPTION, 3), 0, 1, 1 },
    { "INTO (software exception, length 1)", EVENT(INTR_TYPE_SW_EXCEPTION, 4), 0, 1, 1 },
};

static void inject(const struct injected_event *e, bool wrong_length)
{
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, e->info);
    vmcs_write(VMCS_ENTRY_EXCEPTION_ERROR_CODE, e->error_code);
    vmcs_write(VMCS_ENTRY_INSTRUCTION_LENGTH, wrong_length && e->length == 2 ? 1 : e->length);
}

/* After any VM exit the valid bit of the entry interruption information is 0 (SDM 25.8.3). */
static bool expect_injection_consumed(struct scenario *s, const char *what)
{
    uint32_t info = (uint32_t)vmcs_read(VMCS_ENTRY_INTERRUPTION_INFO);
    if (!(info & INTR_INFO_VALID))
        return true;
    return scenario_bad(s, "%s: expected the VM-entry interruption information invalid after the next VM exit, "
                           "observed 0x%x",
                        what, info);
}

/* The handler's report: VMCALL GUEST_CALL_EVENT with vector, error code and frame RIP. */
static bool expect_report(struct scenario *s, struct vcpu *v, const char *what, uint32_t vector, uint32_t error,
                          uintptr_t rip)
{
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (v->regs.rax == CALL_NO_EVENT)
        return scenario_bad(s, "%s: expected its handler to run, observed the guest going on without it", what);
    if (!expect_eq(s, "guest VMCALL", GUEST_CALL_EVENT, v->regs.rax))
        return false;
    if (v->regs.rbx != vector || (uint32_t)v->regs.rcx != error || v->regs.rdx != rip)
        return scenario_bad(s, "%s: expected the handler to see vector 0x%x error 0x%x rip 0x%llx, observed vector "
                               "0x%llx error 0x%llx rip 0x%llx",
                            what, vector, error, (unsigned long long)rip, (unsigned long long)v->regs.rbx,
                            (unsigned long long)(uint32_t)v->regs.rcx, (unsigned long long)v->regs.rdx);
    return expect_injection_consumed(s, what);
}

static bool protected_mode_events(struct scenario *s, struct vcpu *v)
{
    for (size_t i = 0; i < ARRAY_SIZE(g_events); i++) {
        const struct injected_event *e = &g_events[i];
        vmcs_write(VMCS_GUEST_RIP, (uintptr_t)ei_landing);
        vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
        vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | RFLAGS_IF);
        vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0); /* the NMI step leaves blocking by NMI behind */
        inject(e, s->inject);
        uint32_t error = (e->info & INTR_INFO_ERROR_CODE) ? e->error_code : 0;
        if (!expect_report(s, v, e->what, e->info & 0xff, error, (uintptr_t)ei_landing + e->rip_offset))
            return false;
    }
    return true;
}

/* Type 7: an MTF exit right after VM entry, before the guest's first instruction. */
static bool pending_mtf(struct scenario *s, struct vcpu *v)
{
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)ei_landing);
    vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, EVENT(INTR_TYPE_OTHER, 0));
    if (!vcpu_run_entered(s, v))
        return false;
    if ((v->exit.reason & 0xffff) == EXIT_VMCALL && v->regs.rax == CALL_NO_EVENT)
        return scenario_bad(s, "type 7 (pending MTF): expected an MTF exit (37) before the first guest instruction, "
                               "observed none (the guest ran on)");
    if (!vcpu_check_exit(s, v, EXIT_MTF))
        return false;
    if (!expect_eq(s, "guest RIP at the pending-MTF exit", (uintptr_t)ei_landing, v->exit.guest_rip))
        return false;
    return expect_injection_consumed(s, "type 7 (pending MTF)");
}

/* The real-mode world: four pages at guest-physical 0x0000-0x3fff, backed by pool pages. */
enum { RM_IVT, RM_HANDLERS, RM_STACK, RM_CODE, RM_PAGES };
#define RM_STACK_TOP (RM_STACK * PAGE_SIZE + PAGE_SIZE - 16)

struct real_mode_event {
    const char *what;
    uint32_t info, length;
    uint16_t frame_ip;
};

/* Handler k at 0x1000 + 16k: mov $vector, %bx; mov $GUEST_CALL_EVENT, %ax; vmcall; hlt. */
static void rm_write_handler(uint8_t *handlers, int k, uint8_t vector)
{
    static const uint8_t body[10] = { 0xbb, 0, 0, 0xb8, GUEST_CALL_EVENT, 0, 0x0f, 0x01, 0xc1, 0xf4 };
    memcpy(handlers + 16 * k, body, sizeof(body));
    handlers[16 * k + 1] = vector;
}

static void rm_build(struct ept *ept, uint8_t *page[RM_PAGES], const struct real_mode_event *events, int count)
{
    static const uint8_t code[8] = { 0x90, 0x90, 0xb8, 0x01, 0x01, 0x0f, 0x01, 0xc1 }; /* nop; nop; mov $0x101,%ax; vmcall */
    for (int i = 0; i < RM_PAGES; i++) {
        page[i] = page_alloc();
        ept_set_4k(ept, (uint64_t)i * PAGE_SIZE, (uintptr_t)page[i], EPT_RWX);
    }
    ept_invalidate(ept);
    memcpy(page[RM_CODE], code, sizeof(code));
    page[RM_CODE][sizeof(code)] = 0xf4; /* hlt */
    uint16_t *ivt = (uint16_t *)page[RM_IVT];
    for (int k = 0; k < count; k++) {
        uint8_t vector = events[k].info & 0xff;
        rm_write_handler(page[RM_HANDLERS], k, vector);
        ivt[2 * vector] = (uint16_t)(RM_HANDLERS * PAGE_SIZE + 16 * k); /* offset */
        ivt[2 * vector + 1] = 0;                                     /* segment */
    }
}

/* Real mode under unrestricted guest: CR0.PE=PG=0, 64 KiB segments at base 0, the IVT at 0. */
static void rm_guest_state(void)
{
    vmcs_write(VMCS_GUEST_CR0, vmcs_read(VMCS_GUEST_CR0) & ~(uint64_t)(CR0_PE | CR0_PG));
    vmcs_write(VMCS_GUEST_CR4, vmcs_read(VMCS_GUEST_CR4) & ~(uint64_t)CR4_PAE);
    for (int seg = 0; seg < 6; seg++) {
        vmcs_write(VMCS_GUEST_ES_SELECTOR + 2 * seg, 0);
        vmcs_write(VMCS_GUEST_ES_BASE + 2 * seg, 0);
        vmcs_write(VMCS_GUEST_ES_LIMIT + 2 * seg, 0xffff);
        vmcs_write(VMCS_GUEST_ES_AR + 2 * seg, seg == 1 ? 0x9b : 0x93);
    }
    vmcs_write(VMCS_GUEST_IDTR_BASE, 0);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, 0x3ff);
}

static bool real_mode_event(struct scenario *s, struct vcpu *v, const uint8_t *stack_page,
                            const struct real_mode_event *e)
{
    vmcs_write(VMCS_GUEST_RIP, RM_CODE * PAGE_SIZE);
    vmcs_write(VMCS_GUEST_RSP, RM_STACK_TOP);
    vmcs_write(VMCS_GUEST_RFLAGS, 0x2 | RFLAGS_IF);
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, e->info);
    vmcs_write(VMCS_ENTRY_INSTRUCTION_LENGTH, e->length);
    v->regs.rax = v->regs.rbx = 0;
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (v->regs.rax == CALL_NO_EVENT)
        return scenario_bad(s, "real mode, %s: expected its handler to run, observed the guest going on without it",
                            e->what);
    if (!expect_eq(s, "real-mode guest VMCALL", GUEST_CALL_EVENT, v->regs.rax) ||
        !expect_eq(s, "real-mode handler's vector", e->info & 0xff, v->regs.rbx))
        return false;
    uint32_t sp = (uint32_t)vmcs_read(VMCS_GUEST_RSP) & 0xffff;
    if (sp != RM_STACK_TOP - 6)
        return scenario_bad(s, "real mode, %s: expected a 6-byte IRET frame (SP 0x%x), observed SP 0x%x", e->what,
                            RM_STACK_TOP - 6, sp);
    const uint16_t *frame = (const uint16_t *)(stack_page + (sp - RM_STACK * PAGE_SIZE));
    if (frame[0] != e->frame_ip || frame[1] != 0 || !(frame[2] & RFLAGS_IF))
        return scenario_bad(s, "real mode, %s: expected the frame IP 0x%x CS 0 FLAGS with IF, observed IP 0x%x CS 0x%x "
                               "FLAGS 0x%x",
                            e->what, e->frame_ip, frame[0], frame[1], frame[2]);
    return expect_injection_consumed(s, e->what);
}

static bool real_mode_events(struct scenario *s)
{
    static const struct real_mode_event events[3] = {
        { "external interrupt 0x30", EVENT(INTR_TYPE_EXTERNAL, 0x30), 0, RM_CODE * PAGE_SIZE },
        { "INT 0x31 (length 2)", EVENT(INTR_TYPE_SW_INTERRUPT, 0x31), 2, RM_CODE * PAGE_SIZE + 2 },
        { "#UD", EVENT(INTR_TYPE_HW_EXCEPTION, 6), 0, RM_CODE * PAGE_SIZE },
    };
    struct ept ept;
    ept_build_identity(&ept, false);
    uint8_t *page[RM_PAGES];
    rm_build(&ept, page, events, 3);
    static struct vcpu v; /* the watchdog may look at it after this function */
    struct guest_config cfg = { .mode = GUEST_MODE_PAE32, .entry = RM_CODE * PAGE_SIZE, .stack_top = RM_STACK_TOP,
                                .eptp = ept.eptp, .unrestricted = true };
    vcpu_init(&v, &cfg);
    rm_guest_state();
    vcpu_set_controls(VMCS_EXCEPTION_BITMAP, 0, 1u << 6);
    for (int i = 0; i < 3; i++)
        if (!real_mode_event(s, &v, page[RM_STACK], &events[i]))
            return false;
    return true;
}

static bool real_mode_possible(struct scenario *s)
{
    char reason[120];
    uint64_t bits = LHV_OPT_USE_EPT | LHV_OPT_USE_UNRESTRICTED_GUEST;
    if ((lhv_opt() & bits) != bits) {
        scenario_info(s, "real-mode part left out: LHV_OPT lacks 0x4 (EPT) or 0x20 (unrestricted guest)");
        return false;
    }
    if (vmx_requirement_check("ug", 2, reason, sizeof(reason)) != REQ_MET ||
        vmx_requirement_check("load_efer", 9, reason, sizeof(reason)) != REQ_MET) {
        scenario_info(s, "real-mode part left out: %s", reason);
        return false;
    }
    return true;
}

static void event_injection(struct scenario *s)
{
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)ei_landing,
                                .stack_top = guest_stack_top() };
    vcpu_init(&v, &cfg);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    uint32_t delivered = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 6) | (1u << 13);
    vcpu_set_controls(VMCS_EXCEPTION_BITMAP, 0, delivered);
    /* Each part runs whatever the one before said: an implementation that gets one type wrong
     * must not hide the others. */
    bool good = protected_mode_events(s, &v);
    if (ALLOWED1(g_vmx.proc, PROC_MTF))
        good = pending_mtf(s, &v) && good;
    else
        scenario_info(s, "monitor trap flag not offered (IA32_VMX_PROCBASED_CTLS=0x%llx): type 7 left out",
                      (unsigned long long)g_vmx.proc);
    if (real_mode_possible(s)) /* last: it makes a VMCS of its own current */
        good = real_mode_events(s) && good;
    if (good)
        scenario_good(s);
}
