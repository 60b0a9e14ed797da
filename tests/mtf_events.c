/*
 * mtf_events: the monitor trap flag around instructions an L0 may emulate and around events.
 *
 * Intel SDM Vol. 3C 26.5.2 "Monitor Trap Flag" says where an MTF VM exit (reason 37) is pending:
 *  - MTF control 1 and VM entry injecting a vectored event: on the instruction boundary before
 *    the first instruction following the VM entry, i.e. after the event's delivery, with the
 *    guest RIP at the handler's first instruction (not yet executed);
 *  - VM entry injecting a pending MTF VM exit (27.6.2 "Injection of Pending MTF VM Exits",
 *    interruption type 7, vector 0): before the first instruction, even with the control 0;
 *  - the first instruction after VM entry is a REP-prefixed string instruction: if its first
 *    iteration faults, after the delivery of the fault (RIP at the handler); if not, on the
 *    boundary after that iteration (RIP still on the instruction, RCX one less);
 *  - any other instruction: on the boundary after it (after the delivery of its fault, if any);
 *  - priority: SMIs, INIT and higher-priority events come before MTF VM exits, which come before
 *    debug-trap exceptions: a single-step trap (RFLAGS.TF) pending after the instruction does not
 *    come first; 28.3.4 "Saving Non-Register State" then records it in the pending debug
 *    exceptions field (BS, bit 14, for a single-step with IA32_DEBUGCTL.BTF=0), and 27.7.3 (VM
 *    entry with pending debug exceptions) delivers it after the next VM entry as a trap.
 * Steps (each runs whatever the one before said; L2's IDT from guest/idt.c with its own #UD and
 * #GP handlers that report the frame's RIP):
 *  (1) MTF over OUT 0x80, a port L1 does not intercept (I/O bitmaps all zero): exit 37 with RIP
 *      after the 2-byte OUT. A nested L0 emulates such an OUT itself; KVM 5ef8acbdd687 "KVM:
 *      nVMX: Emulate MTF when performing instruction emulation" (2020) and its follow-ups (research
 *      notes K13) are the bugs: without it L1 got no MTF exit, or one instruction late;
 *  (2) MTF with an injected #UD: exit 37 at the #UD handler's first instruction, no IDT-vectoring
 *      information; resumed without MTF, the handler reports the injecting RIP (delivered once);
 *  (3) type 7 with the control 0: exit 37 with RIP at the guest's first instruction;
 *  (4) REP MOVSB of 4 bytes under MTF: exit 37 with RIP on the REP MOVSB, RCX 3, RSI and RDI one
 *      further; then a REP MOVSB whose first iteration faults (#GP(0): a non-canonical RDI on
 *      amd64, an unusable ES on i386): exit 37 at the #GP handler's first instruction, RCX still
 *      4, and the handler reports the REP MOVSB's RIP;
 *  (5) MTF with RFLAGS.TF=1 over a NOP: exit 37 (not #DB) with RIP after the NOP and BS in the
 *      pending debug exceptions field; re-entered without MTF, the #DB trap (exception exit,
 *      vector 1, qualification BS) comes at that RIP.
 * Bochs 2.7 offers MTF on tigerlake and corei7_icelake_u but never delivers MTF exits
 * (harness/known_bugs.py lists this scenario with `mtf`); Bochs commits b94657083 and fac15a7d0
 * (2022-08, first in 2.8) implement it.
 * GOOD: every exit as above. BAD: the first step that differed, with what was seen.
 * Negative control (inject=mtf_events): L1 forgets to set the control for step (1), so the OUT
 * and the rest run to the guest's VMCALL.
 * Needs: the monitor trap flag (IA32_VMX_PROCBASED_CTLS allowed-1 bit 27).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(mtf_events, 0, "vmx,mtf", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE, mtf_events);

#define CALL_GUEST_RAN_ON 0x101 /* GUEST_CALL_USER + 1: the guest reached the end of a step */
#define CALL_HANDLER 0x102      /* GUEST_CALL_USER + 2: EBX = the frame's RIP */
_Static_assert(CALL_GUEST_RAN_ON == GUEST_CALL_USER + 1 && CALL_HANDLER == GUEST_CALL_USER + 2,
               "keep the assembly's constants in step");
#define VECTOR_DB 1
#define VECTOR_UD 6
#define VECTOR_GP 13
#define RFLAGS_TF (1u << 8)
#define DEBUG_BS (1u << 14)
#define OUT_LENGTH 2
#define NOP_LENGTH 1
#define COPY_BYTES 4
#define AR_DATA 0xc093

#ifdef __x86_64__
#define FRAME_RIP_NO_ERROR "    mov (%rsp), %rbx\n"
#define FRAME_RIP_ERROR "    mov 8(%rsp), %rbx\n"
#else
#define FRAME_RIP_NO_ERROR "    mov (%esp), %ebx\n"
#define FRAME_RIP_ERROR "    mov 4(%esp), %ebx\n"
#endif

extern const uint8_t mtfe_out[], mtfe_landing[], mtfe_rep[], mtfe_tf_nop[], mtfe_ud_handler[], mtfe_gp_handler[];
__asm__(".pushsection .text\n"
        "mtfe_out:\n"
        "    out %al, $0x80\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        "mtfe_landing:\n"
        "    nop\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        "mtfe_rep:\n"
        "    rep movsb\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        "mtfe_tf_nop:\n"
        "    nop\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        "mtfe_ud_handler:\n" FRAME_RIP_NO_ERROR
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        "mtfe_gp_handler:\n" FRAME_RIP_ERROR
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

static uint8_t g_copy_from[COPY_BYTES] = { 1, 2, 3, 4 }, g_copy_to[COPY_BYTES];

static void set_mtf(bool on) { vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, on ? PROC_MTF : 0, on ? 0 : PROC_MTF); }

/* A fresh start at `rip`: stack, no event, no blocking, no pending debug exceptions. */
static void start_at(const uint8_t *rip)
{
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)rip);
    vmcs_write(VMCS_GUEST_RSP, guest_stack_top());
    vmcs_write(VMCS_GUEST_INTERRUPTIBILITY, 0);
    vmcs_write(VMCS_GUEST_PENDING_DEBUG, 0);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, 0);
}

/* Run once; the exit must be MTF at `rip`. */
static bool expect_mtf_at(struct scenario *s, struct vcpu *v, const char *step, const uint8_t *rip)
{
    if (!vcpu_run_entered(s, v))
        return false;
    if ((v->exit.reason & 0xffff) == EXIT_VMCALL && v->regs.rax == CALL_GUEST_RAN_ON)
        return scenario_bad(s, "%s: expected an MTF exit (37) at rip 0x%llx, observed none: the guest ran on to its "
                               "VMCALL",
                            step, (unsigned long long)(uintptr_t)rip);
    if (!vcpu_check_exit(s, v, EXIT_MTF))
        return false;
    if (v->exit.guest_rip != (uintptr_t)rip)
        return scenario_bad(s, "%s: expected the MTF exit at rip 0x%llx, observed rip 0x%llx", step,
                            (unsigned long long)(uintptr_t)rip, (unsigned long long)v->exit.guest_rip);
    return true;
}

/* The handler reached (MTF off now) reports the frame's RIP. */
static bool expect_handler_report(struct scenario *s, struct vcpu *v, const char *step, const uint8_t *frame_rip)
{
    set_mtf(false);
    if (!vcpu_run_expect(s, v, EXIT_VMCALL))
        return false;
    if (v->regs.rax != CALL_HANDLER || v->regs.rbx != (uintptr_t)frame_rip)
        return scenario_bad(s, "%s: expected the handler to report frame rip 0x%llx (VMCALL 0x%x), observed VMCALL "
                               "0x%llx with 0x%llx",
                            step, (unsigned long long)(uintptr_t)frame_rip, CALL_HANDLER,
                            (unsigned long long)v->regs.rax, (unsigned long long)v->regs.rbx);
    return true;
}

/* (1) OUT to a port nobody intercepts, stepped by MTF. */
static bool mtf_over_out(struct scenario *s, struct vcpu *v)
{
    vmcs_write(VMCS_IO_BITMAP_A, (uintptr_t)page_alloc());
    vmcs_write(VMCS_IO_BITMAP_B, (uintptr_t)page_alloc());
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS, PROC_USE_IO_BITMAPS, 0);
    start_at(mtfe_out);
    set_mtf(!s->inject);
    return expect_mtf_at(s, v, "MTF over OUT 0x80 (not intercepted)", mtfe_out + OUT_LENGTH);
}

/* (2) An injected #UD under MTF: the exit comes at the handler, before its first instruction. */
static bool mtf_with_injection(struct scenario *s, struct vcpu *v)
{
    const char *step = "MTF with an injected #UD";
    start_at(mtfe_landing);
    set_mtf(true);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, INTR_INFO_VALID | INTR_TYPE_HW_EXCEPTION | VECTOR_UD);
    if (!expect_mtf_at(s, v, step, mtfe_ud_handler))
        return false;
    if (v->exit.idt_vectoring_info & INTR_INFO_VALID)
        return scenario_bad(s, "%s: expected no IDT-vectoring information (delivery completed), observed 0x%x", step,
                            v->exit.idt_vectoring_info);
    return expect_handler_report(s, v, step, mtfe_landing);
}

/* (3) Type 7, vector 0, with the control 0: MTF exit before the first instruction. */
static bool pending_mtf_injection(struct scenario *s, struct vcpu *v)
{
    start_at(mtfe_landing);
    set_mtf(false);
    vmcs_write(VMCS_ENTRY_INTERRUPTION_INFO, INTR_INFO_VALID | INTR_TYPE_OTHER | 0);
    return expect_mtf_at(s, v, "injected pending MTF (type 7) with the control 0", mtfe_landing);
}

static void set_copy_registers(struct vcpu *v, uintptr_t destination)
{
    v->regs.rsi = (uintptr_t)g_copy_from;
    v->regs.rdi = destination;
    v->regs.rcx = COPY_BYTES;
}

/* (4a) A REP MOVSB that does not fault: the exit after its first iteration. */
static bool mtf_rep_one_iteration(struct scenario *s, struct vcpu *v)
{
    const char *step = "MTF over REP MOVSB (no fault)";
    start_at(mtfe_rep);
    set_mtf(true);
    set_copy_registers(v, (uintptr_t)g_copy_to);
    if (!expect_mtf_at(s, v, step, mtfe_rep))
        return false;
    if (v->regs.rcx != COPY_BYTES - 1 || v->regs.rsi != (uintptr_t)g_copy_from + 1 ||
        v->regs.rdi != (uintptr_t)g_copy_to + 1)
        return scenario_bad(s, "%s: expected one iteration done (RCX %u, RSI/RDI +1), observed RCX %llu, RSI +%lld, "
                               "RDI +%lld",
                            step, COPY_BYTES - 1, (unsigned long long)v->regs.rcx,
                            (long long)(v->regs.rsi - (uintptr_t)g_copy_from),
                            (long long)(v->regs.rdi - (uintptr_t)g_copy_to));
    set_mtf(false);
    return vcpu_expect_call(s, v, CALL_GUEST_RAN_ON) &&
           expect_eq(s, "bytes copied by REP MOVSB after the MTF exit", 0x04030201u,
                     (uint32_t)g_copy_to[0] | (uint32_t)g_copy_to[1] << 8 | (uint32_t)g_copy_to[2] << 16 |
                         (uint32_t)g_copy_to[3] << 24);
}

/* (4b) A REP MOVSB whose first iteration is #GP(0): the exit at the #GP handler. */
static bool mtf_rep_faulting(struct scenario *s, struct vcpu *v)
{
    const char *step = "MTF over REP MOVSB faulting on its first iteration";
    start_at(mtfe_rep);
    set_mtf(true);
#ifdef __x86_64__
    set_copy_registers(v, 0x8000000000000000ull); /* non-canonical: #GP(0) */
#else
    set_copy_registers(v, (uintptr_t)g_copy_to);
    vmcs_write(VMCS_GUEST_ES_SELECTOR, 0); /* ES unusable: a write through it is #GP(0) */
    vmcs_write(VMCS_GUEST_ES_AR, 0x10000);
#endif
    bool ok = expect_mtf_at(s, v, step, mtfe_gp_handler) &&
              expect_eq(s, "RCX at the MTF exit after the faulting first iteration", COPY_BYTES, v->regs.rcx) &&
              expect_handler_report(s, v, step, mtfe_rep);
    vmcs_write(VMCS_GUEST_ES_SELECTOR, SEL_DATA);
    vmcs_write(VMCS_GUEST_ES_AR, AR_DATA);
    return ok;
}

/* (5) Single-step and MTF on the same boundary: MTF first, the #DB trap kept pending. */
static bool mtf_and_single_step(struct scenario *s, struct vcpu *v)
{
    const char *step = "MTF with RFLAGS.TF over a NOP";
    uint64_t rflags = vmcs_read(VMCS_GUEST_RFLAGS);
    start_at(mtfe_tf_nop);
    set_mtf(true);
    vmcs_write(VMCS_GUEST_RFLAGS, rflags | RFLAGS_TF);
    bool ok = expect_mtf_at(s, v, step, mtfe_tf_nop + NOP_LENGTH);
    uint64_t pending = vmcs_read(VMCS_GUEST_PENDING_DEBUG);
    if (ok && !(pending & DEBUG_BS))
        ok = scenario_bad(s, "%s: expected BS (bit 14) in the pending debug exceptions field at the MTF exit (SDM "
                             "28.3.4), observed 0x%llx",
                          step, (unsigned long long)pending);
    if (ok) {
        set_mtf(false);
        ok = vcpu_run_expect(s, v, EXIT_EXCEPTION_NMI) &&
             expect_eq(s, "vector of the single-step trap after the MTF exit", VECTOR_DB,
                       v->exit.interruption_info & 0xff) &&
             expect_eq(s, "rip of the single-step trap after the MTF exit", (uintptr_t)mtfe_tf_nop + NOP_LENGTH,
                       v->exit.guest_rip) &&
             expect_eq(s, "BS in the #DB exit qualification", DEBUG_BS, v->exit.qualification & DEBUG_BS);
    }
    vmcs_write(VMCS_GUEST_RFLAGS, rflags);
    vmcs_write(VMCS_GUEST_PENDING_DEBUG, 0);
    return ok;
}

static void mtf_events(struct scenario *s)
{
    uint16_t idt_limit;
    uintptr_t idt = guest_idt_build(&idt_limit);
    guest_idt_set_gate(VECTOR_UD, (uintptr_t)mtfe_ud_handler);
    guest_idt_set_gate(VECTOR_GP, (uintptr_t)mtfe_gp_handler);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)mtfe_landing,
                                .stack_top = guest_stack_top() };
    vcpu_init(&v, &cfg);
    vmcs_write(VMCS_GUEST_IDTR_BASE, idt);
    vmcs_write(VMCS_GUEST_IDTR_LIMIT, idt_limit);
    vcpu_set_controls(VMCS_EXCEPTION_BITMAP, 0, (1u << VECTOR_UD) | (1u << VECTOR_GP)); /* #DB still exits */
    /* Each step runs whatever the one before said: one bug must not hide the others. */
    bool good = mtf_over_out(s, &v);
    good = mtf_with_injection(s, &v) && good;
    good = pending_mtf_injection(s, &v) && good;
    good = mtf_rep_one_iteration(s, &v) && good;
    good = mtf_rep_faulting(s, &v) && good;
    good = mtf_and_single_step(s, &v) && good;
    if (good)
        scenario_good(s);
}
