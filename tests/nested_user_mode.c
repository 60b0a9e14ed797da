/*
 * nested_user_mode (LHV_OPT 0x800 NESTED_USER_MODE, the original LHV's bit): the L2 guest itself
 * enters CPL 3 and runs there, and the VM exits it causes from CPL 3 reach L1 with CPL 3 in the
 * guest state.
 *
 * The original LHV's L2 entered user mode to run TrustVisor's pal_demo in a nested guest
 * (lhv-guest.c, lhv_guest_test_nested_user). Here L2 uses the same CPL-3 trip as L1 does for 0x40
 * (arch/user.c): the DPL-3 segments of the GDT it shares with L1, RSP0/ESP0 in the TSS its TR
 * names, a copy of its IDT with a DPL-3 gate 0x42 for the return; L1 gives it page tables with
 * U=1 as its guest CR3 (no EPT, so no CR3 write happens in L2). At CPL 3 L2 executes:
 * - VMCALL: a VM exit in VMX non-root operation whatever the CPL (Intel SDM Vol. 3C 31.3 VMCALL:
 *   "ELSIF in VMX non-root operation THEN VM exit", before any CPL check; 26.1.2);
 * - CPUID: exits unconditionally (26.1.2);
 * - MOV from CR0: #GP(0) at CPL 3, which the exception bitmap (bit 13) turns into an exception
 *   exit (26.2, 28.2.2) with interruption information 0x80000b0d and error code 0;
 * and at each of these exits the guest CS selector's RPL and the SS access rights' DPL are 3
 * (28.3.2: they are saved as they were; SS.DPL is the CPL, 27.3.1.2). L1 resumes after each (the
 * #GP one at the next instruction); then INT 0x42 takes L2 back to CPL 0 through its own IDT
 * (a software interrupt, no exit), and L2 reports the CS it read at CPL 3.
 * GOOD: the three exits in that order with CPL 3, then the trip's return with CS.RPL 3.
 * BAD: a missing exit, another exit, or CPL 0 at one of them (a hypervisor that loses L2's CPL
 * on the way to L1, or treats a CPL-3 VMCALL as #GP/#UD in L2).
 * Negative control (inject=nested_user_mode): L2 makes the trip with its CPL-0 selectors, so the
 * VMCALL exit shows CS.RPL 0: BAD.
 * Needs: VMX. Not with 0x2 (the option parser refuses 0x800|0x2).
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(nested_user_mode, LHV_OPT_NESTED_USER_MODE, "vmx", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, nested_user_mode);

#define CALL_FROM_CPL3 0x101 /* GUEST_CALL_USER + 1 */
_Static_assert(CALL_FROM_CPL3 == GUEST_CALL_USER + 1, "keep the assembly's constant in step");
_Static_assert(VECTOR_USER_RETURN == 0x42, "the user code below says int $0x42");
#define INTR_INFO_GP0 0x80000b0du /* valid, error code, hardware exception, vector 13 */

extern const uint8_t nested_user_code[], nested_user_gp[], nested_user_after_gp[];
__asm__(".pushsection .text\n"
        "nested_user_code:\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    xor %eax, %eax\n"
        "    xor %ecx, %ecx\n"
        "    cpuid\n"
        "nested_user_gp:\n"
        "    .byte 0x0f, 0x20, 0xc0\n"   /* mov %cr0, %eax / %rax: #GP(0) at CPL 3 */
        "nested_user_after_gp:\n"
        "    mov %cs, %eax\n"
        "    int $0x42\n"
        ".popsection\n");

/* L2 (CPL 0): the trip; returns the vector that ended it and, above bit 16, the CS read at CPL 3. */
static uintptr_t guest_main(uintptr_t at_cpl0)
{
    struct user_trip t;
    user_mode_run((uintptr_t)nested_user_code, at_cpl0 != 0, false, 0, &t);
    return (t.vector & 0xffff) | ((t.ax & 0xffff) << 16);
}

static bool guest_at_cpl3(struct scenario *s, const char *exit_name)
{
    uint64_t cs = vmcs_read(VMCS_GUEST_CS_SELECTOR), ss_ar = vmcs_read(VMCS_GUEST_SS_AR);
    if ((cs & 3) == 3 && ((ss_ar >> 5) & 3) == 3)
        return true;
    return scenario_bad(s, "%s exit from L2's user mode: expected guest CS.RPL=3 and SS.DPL=3, observed CS 0x%llx, "
                        "SS access rights 0x%llx", exit_name, (unsigned long long)cs, (unsigned long long)ss_ar);
}

static void nested_user_mode(struct scenario *s)
{
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE };
    vcpu_init_c_guest(&v, &cfg, guest_main, s->inject ? 1 : 0);
    vmcs_write(VMCS_GUEST_CR3, user_page_tables()); /* U=1 everywhere; no EPT: PDPTEs come from CR3 */

    if (!vcpu_run_expect(s, &v, EXIT_VMCALL) || !expect_eq(s, "VMCALL number from CPL 3", CALL_FROM_CPL3, v.regs.rax) ||
        !guest_at_cpl3(s, "VMCALL"))
        return;
    vcpu_skip_instruction(&v);

    if (!vcpu_run_expect(s, &v, EXIT_CPUID) || !guest_at_cpl3(s, "CPUID"))
        return;
    v.regs.rax = v.regs.rbx = v.regs.rcx = v.regs.rdx = 0;
    vcpu_skip_instruction(&v);

    if (!vcpu_run_expect(s, &v, EXIT_EXCEPTION_NMI) ||
        !expect_eq(s, "interruption information of MOV from CR0 at CPL 3", INTR_INFO_GP0, v.exit.interruption_info) ||
        !expect_eq(s, "#GP error code", 0, v.exit.interruption_error) ||
        !expect_eq(s, "#GP exit guest RIP", (uintptr_t)nested_user_gp, v.exit.guest_rip) || !guest_at_cpl3(s, "#GP"))
        return;
    vmcs_write(VMCS_GUEST_RIP, (uintptr_t)nested_user_after_gp);

    if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE))
        return;
    uint64_t vector = v.regs.rbx & 0xffff, cs = (v.regs.rbx >> 16) & 0xffff;
    if (!expect_eq(s, "the trip's end (INT 0x42 in L2)", VECTOR_USER_RETURN, vector) ||
        !expect_eq(s, "CS.RPL read by L2 at CPL 3", 3, cs & 3))
        return;
    scenario_good(s);
}
