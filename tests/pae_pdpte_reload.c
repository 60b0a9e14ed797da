/*
 * pae_pdpte_reload: a PAE guest that switches between two page-table sets with MOV CR3 (which
 * L1 does not intercept) while VMX-preemption-timer exits keep landing right after those
 * switches. After every exit the VMCS PDPTE fields must hold the PDPTEs of the current CR3, and
 * when L2 resumes it must translate with them.
 *
 * Source: seed 002, Linux KVM commit "KVM: nVMX: Update VMCS02 when L2 PAE PDPTE updates
 * detected" (Peter Shier, 2020; kvm-unit-tests vmx_mtf_pdpte_test): when an exit to L1 (MTF,
 * preemption timer, pending exception) came right after L2 changed its PDPTEs, KVM re-entered L2
 * with the stale PDPTEs of vmcs12, and L2 triple-faulted or used the old mappings.
 * Intel SDM Vol. 3A 4.4.1 "PDPTE Registers" (MOV CR3 loads them with PAE paging); Vol. 3C
 * 28.3.4 "Saving Non-Register State" (with EPT and PAE paging, VM exit stores the PDPTEs in the
 * guest-state area) and 27.3.2.4 "Loading Page-Directory-Pointer-Table Entries" (with EPT, VM
 * entry loads them from there, not from memory).
 * The two table sets differ in one page: at the probe address the guest reads 'AAAA' under the
 * first CR3 and 'BBBB' under the second; a stale PDPTE set shows up as the wrong letters.
 * GOOD: thousands of switches, every read right, the PDPTE fields right at every timer exit.
 * BAD: the guest read the other table's page, or the fields held the other CR3's PDPTEs.
 * Negative control (inject=pae_pdpte_reload): at each timer exit L1 writes back the PDPTEs of
 * the other table set, as KVM did with vmcs12's stale copy.
 * Needs: EPT, the preemption timer, the EFER load controls; CR3-load exiting must be clearable.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(pae_pdpte_reload, LHV_OPT_USE_EPT, "vmx,ept,preempt_timer,load_efer", 8000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, pae_pdpte_reload);

#define CALL_WRONG_READ 0x102 /* GUEST_CALL_USER + 2: EBX = value, EDX = 0 under A, 1 under B */
#define SWITCHES 3000
_Static_assert(CALL_WRONG_READ == GUEST_CALL_USER + 2, "keep the assembly's constant in step");
_Static_assert(MARKER_A == 0x41414141u && MARKER_B == 0x42424242u, "the assembly compares with these");


/* ESI = CR3 of set A, EDI = CR3 of set B, EBP = probe address, ECX = switches left. */
extern const uint8_t pdpte_guest[];
__asm__(GUEST32_CODE_BEGIN
        "pdpte_guest:\n"
        "1:  mov %edi, %cr3\n"
        "    mov (%ebp), %ebx\n"
        "    cmp $0x42424242, %ebx\n"
        "    mov $1, %edx\n"
        "    jne 2f\n"
        "    mov %esi, %cr3\n"
        "    mov (%ebp), %ebx\n"
        "    cmp $0x41414141, %ebx\n"
        "    mov $0, %edx\n"
        "    jne 2f\n"
        "    dec %ecx\n"
        "    jnz 1b\n"
        "    mov $0x10, %eax\n"          /* GUEST_CALL_DONE */
        "    vmcall\n"
        "    ud2\n"
        "2:  mov $0x102, %eax\n"          /* CALL_WRONG_READ */
        "    vmcall\n"
        "    ud2\n"
        GUEST32_CODE_END);

/* The PDPTE fields must be the four entries at the guest's current CR3. */
static bool check_pdpte_fields(struct scenario *s, uint64_t cr3_a, uint64_t cr3_b, int exit_number)
{
    uint64_t cr3 = vmcs_read(VMCS_GUEST_CR3) & ~0x1full;
    if (cr3 != cr3_a && cr3 != cr3_b)
        return scenario_error(s, "guest CR3 0x%llx is neither table set", (unsigned long long)cr3);
    const uint64_t *pdpt = (const uint64_t *)(uintptr_t)cr3;
    for (int i = 0; i < 4; i++) {
        uint64_t field = vmcs_read(VMCS_GUEST_PDPTE0 + 2 * i);
        if (field != pdpt[i])
            return scenario_bad(s, "expected GUEST_PDPTE%d=0x%llx (CR3 0x%llx) at timer exit %d, observed 0x%llx", i,
                                (unsigned long long)pdpt[i], (unsigned long long)cr3, exit_number,
                                (unsigned long long)field);
    }
    return true;
}

/* What KVM did: the PDPTEs of the other set go back into the VMCS. */
static void write_stale_pdptes(uint64_t cr3_a, uint64_t cr3_b)
{
    uint64_t cr3 = vmcs_read(VMCS_GUEST_CR3) & ~0x1full;
    const uint64_t *other = (const uint64_t *)(uintptr_t)(cr3 == cr3_a ? cr3_b : cr3_a);
    for (int i = 0; i < 4; i++)
        vmcs_write(VMCS_GUEST_PDPTE0 + 2 * i, other[i]);
}

static void pae_pdpte_reload(struct scenario *s)
{
    if ((uint32_t)g_vmx.proc & PROC_CR3_LOAD_EXITING) /* allowed-0 half: the CPU forces it on */
        return (void)scenario_skip(s, "CR3-load exiting cannot be cleared (IA32_VMX_PROCBASED_CTLS=0x%llx)",
                                   (unsigned long long)g_vmx.proc);
    marker_pages_init();
    struct ept ept;
    ept_build_identity(&ept, (lhv_opt() & LHV_OPT_USE_LARGE_PAGE) != 0);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_PAE32, .entry = (uintptr_t)pdpte_guest,
                                .stack_top = guest_stack_top(), .eptp = ept.eptp };
    vcpu_init(&v, &cfg);
    uint64_t cr3_a = vmcs_read(VMCS_GUEST_CR3) & ~0x1full;
    uint64_t cr3_b = guest_pae_build_remapped(marker_page(0), marker_page(1));
    v.regs.rsi = cr3_a;
    v.regs.rdi = cr3_b;
    v.regs.rbp = marker_page(0);
    v.regs.rcx = SWITCHES;
    vcpu_set_controls(VMCS_PIN_BASED_CONTROLS, PIN_PREEMPTION_TIMER, 0);
    uint32_t seed = 12345;
    int timer_exits = 0;
    for (;;) {
        seed = seed * 1103515245u + 12345u; /* timer values 16..527: exits land all over the loop */
        vmcs_write(VMCS_PREEMPTION_TIMER_VALUE, 16 + ((seed >> 16) & 511));
        if (!vcpu_run_entered(s, &v))
            return;
        if ((v.exit.reason & 0xffff) != EXIT_PREEMPTION_TIMER)
            break;
        if (!check_pdpte_fields(s, cr3_a, cr3_b, ++timer_exits))
            return;
        if (s->inject)
            write_stale_pdptes(cr3_a, cr3_b);
    }
    if ((v.exit.reason & 0xffff) == EXIT_VMCALL && v.regs.rax == CALL_WRONG_READ)
        return (void)scenario_bad(s, "expected 0x%x at the probe under CR3 %s, observed 0x%llx after %d timer exits "
                                     "(stale PDPTEs)",
                                  v.regs.rdx ? MARKER_B : MARKER_A, v.regs.rdx ? "B" : "A",
                                  (unsigned long long)(uint32_t)v.regs.rbx, timer_exits);
    if (!vcpu_check_exit(s, &v, EXIT_VMCALL) || !expect_eq(s, "guest VMCALL", GUEST_CALL_DONE, v.regs.rax))
        return;
    scenario_info(s, "%d CR3 switches, %d preemption-timer exits in between, PDPTE fields right at each",
                  2 * SWITCHES, timer_exits);
    scenario_good(s);
}
