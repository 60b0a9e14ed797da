/*
 * ug_paging_toggle: with unrestricted guest, L2 turns paging off and on again, many times; on
 * amd64 that means leaving long mode through compatibility mode and coming back.
 *
 * Intel SDM Vol. 3C 25.6.2 ("unrestricted guest": CR0.PE and CR0.PG may be 0 in VMX non-root
 * operation) and 28.2 (a VM exit stores EFER.LMA into the "IA-32e mode guest" VM-entry control);
 * Vol. 3A 10.8.5 "Initializing IA-32e Mode" (long mode is left by clearing CR0.PG in
 * compatibility mode, entered again by setting it with EFER.LME=1). Source: seed 003, LHV and
 * XMHF: "lhv 73a70bf6e..1a35764bb makes it possible to disable paging in 64-bit mode", and XMHF
 * failing at first because "the 64-bit flag in VMENTRY control fields may change".
 * Each round: (amd64: far return to a 32-bit code segment,) clear CR0.PG, VMCALL, set CR0.PG,
 * (amd64: far jump back to 64-bit code,) VMCALL. At the first VMCALL L1 checks CR0.PG=0 and, on
 * amd64, EFER.LMA=0 and the IA-32e mode guest control 0; at the second, CR0.PG=1 and on amd64
 * LMA=1, the control 1 and a 64-bit CS.
 * GOOD: ten rounds of both checks. BAD: the first state that differs.
 * Negative control (inject=ug_paging_toggle): L1 does not enable unrestricted guest, so clearing
 * CR0.PG is L1's to handle (a CR-access exit) instead of happening.
 * Needs: EPT and unrestricted guest; the EFER load/save controls.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(ug_paging_toggle, LHV_OPT_USE_EPT | LHV_OPT_USE_UNRESTRICTED_GUEST,
                   "vmx,ept,ug,load_efer", 3000, SUBARCH_ALL, SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, ug_paging_toggle);

#define CALL_PAGING_OFF 0x101 /* GUEST_CALL_USER + 1 */
#define CALL_PAGING_ON 0x102
#define ROUNDS 10
#define CS_AR_LONG (1u << 13)
_Static_assert(CALL_PAGING_OFF == GUEST_CALL_USER + 1, "keep the assembly's constants in step");

/* ESI = rounds. */
extern const uint8_t ugpt_guest[];
__asm__(".pushsection .text\n"
        "ugpt_guest:\n"
#ifdef __x86_64__
        "1:  pushq $0x08\n"                /* SEL_CODE32: on to compatibility mode */
        "    lea 2f(%rip), %rax\n"
        "    pushq %rax\n"
        "    lretq\n"
        ".code32\n"
        "2:\n"
#else
        "1:\n"
#endif
        "    mov %cr0, %eax\n"
        "    and $0x7fffffff, %eax\n"
        "    mov %eax, %cr0\n"              /* paging off (amd64: long mode off) */
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    mov %cr0, %eax\n"
        "    or $0x80000000, %eax\n"
        "    mov %eax, %cr0\n"              /* paging on (amd64: EFER.LME=1, so long mode again) */
#ifdef __x86_64__
        "    ljmp $0x18, $3f\n"             /* SEL_CODE64 */
        ".code64\n"
        "3:\n"
#endif
        "    mov $0x102, %eax\n"
        "    vmcall\n"
        "    dec %esi\n"
        "    jnz 1b\n"
        "    xor %ebx, %ebx\n"
        "    mov $0x10, %eax\n"             /* GUEST_CALL_DONE */
        "    vmcall\n"
        "    ud2\n"
        ".popsection\n");

static bool expect_paging(struct scenario *s, bool paging, int round)
{
    if (((vmcs_read(VMCS_GUEST_CR0) & CR0_PG) != 0) != paging)
        return scenario_bad(s, "expected guest CR0.PG=%d in round %d, observed CR0=0x%llx", paging, round,
                            (unsigned long long)vmcs_read(VMCS_GUEST_CR0));
    if (sizeof(uintptr_t) == 4)
        return true;
    bool lma = (vmcs_read(VMCS_GUEST_IA32_EFER) & EFER_LMA) != 0;
    bool ia32e = (vmcs_read(VMCS_ENTRY_CONTROLS) & ENTRY_IA32E_MODE_GUEST) != 0;
    if (lma != paging || ia32e != paging)
        return scenario_bad(s, "expected EFER.LMA=%d and the IA-32e mode guest control %d in round %d, observed %d "
                               "and %d",
                            paging, paging, round, lma, ia32e);
    if (paging && !(vmcs_read(VMCS_GUEST_CS_AR) & CS_AR_LONG))
        return scenario_bad(s, "expected a 64-bit CS after the far jump back in round %d, observed CS AR 0x%llx", round,
                            (unsigned long long)vmcs_read(VMCS_GUEST_CS_AR));
    return true;
}

static void ug_paging_toggle(struct scenario *s)
{
    struct ept ept;
    ept_build_identity(&ept, (lhv_opt() & LHV_OPT_USE_LARGE_PAGE) != 0);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .entry = (uintptr_t)ugpt_guest,
                                .stack_top = guest_stack_top(), .eptp = ept.eptp, .unrestricted = !s->inject };
    vcpu_init(&v, &cfg);
    v.regs.rsi = ROUNDS;
    for (int round = 1; round <= ROUNDS; round++) {
        if (!vcpu_expect_call(s, &v, CALL_PAGING_OFF) || !expect_paging(s, false, round))
            return;
        if (!vcpu_expect_call(s, &v, CALL_PAGING_ON) || !expect_paging(s, true, round))
            return;
    }
    if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE))
        return;
    scenario_good(s);
}
