/*
 * l1_user_mode (LHV_OPT 0x40 USER_MODE, the original LHV's bit): L1 runs code at CPL 3 between
 * two VM entries and comes back by a software interrupt, with VMX operation intact.
 *
 * The original LHV did this in the middle of a VMCALL exit (lhv-user.c: its own user page
 * tables, user segments, TSS ESP0/RSP0, `int $0x23` back), to run TrustVisor's pal_demo from L1's
 * user mode. Here, while L2 waits in a VMCALL exit, L1 makes three trips to CPL 3 (arch/user.c:
 * page tables with U=1, the DPL-3 code/data segments of L1's GDT, RSP0/ESP0 in L1's TSS, a copy of
 * the IDT whose vector 0x42 is a DPL-3 gate) and then resumes L2.
 * - CS read at CPL 3: RPL 3 (Intel SDM Vol. 3A 5.5, CPL is CS.RPL), and INT 0x42 through the
 *   DPL-3 gate comes back with the interrupted CS's RPL 3 in the frame (Vol. 3A 6.12.1, 6.12.1.1).
 * - MOV from CR0 at CPL 3: #GP(0) (Vol. 3A 5.9 "Privileged Instructions"), caught by L1 at the
 *   instruction.
 * - VMREAD at CPL 3 in VMX root operation: #GP(0) (Vol. 3C 31.3 VMREAD: "ELSIF CPL > 0 THEN
 *   #GP(0)"; not #UD, which is for outside VMX operation or compatibility mode).
 * - Then the current VMCS is the same (VMPTRST) and VMRESUME takes L2 on to its end.
 * GOOD: all of that. BAD: what differed. A hypervisor that runs L1 as a guest must get CPL 3 and
 * these faults right in L1 (nested VMX instructions at CPL 3 must not be emulated as if at CPL 0).
 * Negative control (inject=l1_user_mode): L1 makes the same trips with its own CPL-0 selectors,
 * so CS.RPL reads 0 and nothing faults: BAD.
 * Needs: VMX. Not with 0x2 (the option parser refuses 0x40|0x2: user code runs with IF=1, so
 * timer interrupts also come from CPL 3 through the TSS stack).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(l1_user_mode, LHV_OPT_USER_MODE, "vmx", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, l1_user_mode);

_Static_assert(VECTOR_USER_RETURN == 0x42, "the user code below says int $0x42");
#define GUEST_DONE_VALUE 0x5a

/* The user code: native mode of L1 (64-bit or 32-bit); the instruction bytes are the same in both. */
extern const uint8_t user_read_cs[], user_mov_from_cr0[], user_vmread[], user_vmread_insn[];
__asm__(".pushsection .text\n"
        "user_read_cs:\n"
        "    mov %cs, %eax\n"
        "    int $0x42\n"
        "user_mov_from_cr0:\n"
        "    .byte 0x0f, 0x20, 0xc0\n"   /* mov %cr0, %eax / %rax */
        "    int $0x42\n"
        "user_vmread:\n"
        "    mov $0x681e, %eax\n"        /* guest RIP */
        "user_vmread_insn:\n"
        "    .byte 0x0f, 0x78, 0xc3\n"   /* vmread %eax/%rax (field) -> %ebx/%rbx */
        "    int $0x42\n"
        ".popsection\n");

static uintptr_t guest_main(uintptr_t arg)
{
    guest_vmcall(GUEST_CALL_USER, 0, 0); /* L1 goes to CPL 3 while this exit is open */
    return GUEST_DONE_VALUE;
}

static bool trip_returned_at_cpl3(struct scenario *s, const struct user_trip *t)
{
    if (t->vector != VECTOR_USER_RETURN)
        return scenario_bad(s, "CS read at CPL 3: expected return by INT 0x42, observed vector %lu at 0x%lx",
                            (unsigned long)t->vector, (unsigned long)t->ip);
    if ((t->ax & 3) != 3 || (t->cs & 3) != 3)
        return scenario_bad(s, "expected CS.RPL=3 in user mode (read 0x%lx, INT frame CS 0x%lx), observed RPL %lu",
                            (unsigned long)t->ax & 0xffff, (unsigned long)t->cs, (unsigned long)(t->ax & 3));
    return true;
}

static bool trip_faulted_gp0(struct scenario *s, const char *what, const struct user_trip *t, const uint8_t *at)
{
    if (t->vector == 13 && t->error == 0 && t->ip == (uintptr_t)at && (t->cs & 3) == 3)
        return true;
    return scenario_bad(s, "%s at CPL 3: expected #GP(0) at 0x%lx, observed vector %lu error 0x%lx at 0x%lx (CS 0x%lx)",
                        what, (unsigned long)(uintptr_t)at, (unsigned long)t->vector, (unsigned long)t->error,
                        (unsigned long)t->ip, (unsigned long)t->cs);
}

static void l1_user_mode(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_main, 0);
    if (!vcpu_expect_call(s, &v, GUEST_CALL_USER))
        return;
    uint64_t vmcs_before = 0, vmcs_after = 0;
    vmcs_store(&vmcs_before);
    bool cpl0 = s->inject; /* negative control: the same trips with L1's own selectors */
    int cpu = this_cpu_index();
    struct user_trip t;
    user_mode_run((uintptr_t)user_read_cs, cpl0, true, cpu, &t);
    bool ok = trip_returned_at_cpl3(s, &t);
    user_mode_run((uintptr_t)user_mov_from_cr0, cpl0, true, cpu, &t);
    ok &= trip_faulted_gp0(s, "MOV from CR0", &t, user_mov_from_cr0);
    user_mode_run((uintptr_t)user_vmread, cpl0, true, cpu, &t);
    ok &= trip_faulted_gp0(s, "VMREAD in VMX root operation", &t, user_vmread_insn);
    vmcs_store(&vmcs_after);
    if (!expect_eq(s, "current VMCS after the CPL-3 trips", vmcs_before, vmcs_after))
        return;
    /* VMX operation intact: VMRESUME takes L2 on. */
    if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE) || !expect_eq(s, "guest result", GUEST_DONE_VALUE, v.regs.rbx))
        return;
    if (ok)
        scenario_good(s);
}
