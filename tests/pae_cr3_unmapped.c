/*
 * pae_cr3_unmapped: reproducer of Linux KVM bug 216212 (https://bugzilla.kernel.org/show_bug.cgi?id=216212),
 * found with the original LHV and XMHF (seed 003, "Reproducing KVM bug in LHV", LHV_OPT 0x3e).
 *
 * The guest runs with PAE paging and unrestricted guest. It clears CR0.PG, asks L1 (VMCALL) to
 * remove from EPT the page that holds its PDPT (the page CR3 points to), then sets CR0.PG again.
 * Setting CR0.PG with CR4.PAE=1 and EFER.LME=0 loads the four PDPTEs from CR3 (Intel SDM Vol. 3A
 * 4.4.1 "PDPTE Registers"); with EPT that load is a guest-physical read (Vol. 3C 29.3.3.2), so the
 * MOV to CR0 must cause an EPT violation at the CR3 page, delivered to L1. KVM instead failed
 * load_pdptrs() while emulating the CR0 write for L2 and injected #GP into L2 (handle_set_cr0 ->
 * kvm_set_cr0 -> load_pdptrs). Real hardware and Bochs give the EPT violation.
 * After the violation L1 restores the mapping (INVEPT) and the guest's MOV CR0 completes.
 * The same holds for every other instruction that loads the PDPTEs under PAE paging (Vol. 3A
 * 4.4.1: MOV to CR3, and MOV to CR0/CR4 that changes CR0.CD, CR0.NW, CR0.PG, CR4.PAE, CR4.PGE,
 * CR4.PSE or CR4.SMEP): KVM's load_pdptrs() failure paths for kvm_set_cr3() and kvm_set_cr4()
 * were the same #GP. With PAE paging on, the guest asks for the page to go again before MOV to
 * CR3 (same value), MOV to CR4 toggling PGE, toggling PSE, and MOV to CR0 setting CD.
 * GOOD: an EPT violation at the CR3 page on each of these instructions (RIP on the MOV), then
 * the guest finishes.
 * BAD: #GP (or any other exit) in its place, with what was seen.
 * Negative control (inject=pae_cr3_unmapped): L1 skips removing the page, so no violation comes.
 * Needs: EPT, unrestricted guest, the EFER load controls (a 32-bit guest under a 64-bit L1).
 * L2 is 32-bit code on both subarchs, so it is written in assembly below.
 */
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(pae_cr3_unmapped, LHV_OPT_USE_EPT | LHV_OPT_USE_UNRESTRICTED_GUEST,
                   "vmx,ept,ug,load_efer", 3000, SUBARCH_ALL, SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, pae_cr3_unmapped);

#define CALL_UNMAP_CR3_PAGE 0x101 /* GUEST_CALL_USER + 1 */
_Static_assert(CALL_UNMAP_CR3_PAGE == GUEST_CALL_USER + 1, "keep the assembly's constant in step");

extern const uint8_t pae_guest[], pae_guest_set_pg[], pae_guest_mov_cr3[], pae_guest_cr4_pge[], pae_guest_cr4_pse[],
    pae_guest_cr0_cd[];
__asm__(GUEST32_CODE_BEGIN
        "pae_guest:\n"
        "    mov %cr0, %eax\n"
        "    and $0x7fffffff, %eax\n"
        "    mov %eax, %cr0\n"           /* paging off: allowed by unrestricted guest */
        "    mov $0x101, %eax\n"
        "    vmcall\n"                   /* L1 removes the CR3 page from EPT */
        "    mov %cr0, %eax\n"
        "    or $0x80000000, %eax\n"
        "pae_guest_set_pg:\n"
        "    mov %eax, %cr0\n"           /* PDPTE load from CR3: EPT violation expected */
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    mov %cr3, %eax\n"
        "pae_guest_mov_cr3:\n"
        "    mov %eax, %cr3\n"           /* MOV to CR3 under PAE paging loads the PDPTEs */
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    mov %cr4, %eax\n"
        "    xor $0x80, %eax\n"
        "pae_guest_cr4_pge:\n"
        "    mov %eax, %cr4\n"           /* CR4.PGE changes: PDPTE load */
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    mov %cr4, %eax\n"
        "    xor $0x10, %eax\n"
        "pae_guest_cr4_pse:\n"
        "    mov %eax, %cr4\n"           /* CR4.PSE changes: PDPTE load */
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    mov %cr0, %edx\n"
        "    mov %edx, %eax\n"
        "    or $0x40000000, %eax\n"
        "pae_guest_cr0_cd:\n"
        "    mov %eax, %cr0\n"           /* CR0.CD changes: PDPTE load */
        "    mov %edx, %cr0\n"           /* and back (the page is mapped again) */
        "    xor %ebx, %ebx\n"
        "    mov $0x10, %eax\n"          /* GUEST_CALL_DONE */
        "    vmcall\n"
        "    ud2\n"
        GUEST32_CODE_END);

/* The instructions that load the PDPTEs under PAE paging (SDM Vol. 3A 4.4.1): MOV to CR3, and
 * MOV to CR0/CR4 changing CR0.CD, CR0.NW, CR0.PG, CR4.PAE, CR4.PGE, CR4.PSE or CR4.SMEP. The
 * guest takes PG, then CR3, PGE, PSE and CD; NW alone is not a legal change and SMEP depends
 * on CPUID, and the loads are the same. */
struct pdpte_load {
    const char *what;
    const uint8_t *rip;
};
static const struct pdpte_load g_loads[] = {
    { "MOV to CR0 setting PG", pae_guest_set_pg },   { "MOV to CR3", pae_guest_mov_cr3 },
    { "MOV to CR4 toggling PGE", pae_guest_cr4_pge }, { "MOV to CR4 toggling PSE", pae_guest_cr4_pse },
    { "MOV to CR0 setting CD", pae_guest_cr0_cd },
};

static bool expect_violation_at_cr3(struct scenario *s, struct vcpu *v, uint64_t cr3_page, const struct pdpte_load *load)
{
    struct vmx_exit *e = &v->exit;
    uint32_t reason = e->reason & 0xffff;
    if (reason == EXIT_EXCEPTION_NMI && (e->interruption_info & 0xff) == 13)
        return scenario_bad(s, "%s: expected EPT violation at CR3 page 0x%llx, observed #GP in L2 at rip 0x%llx "
                               "(KVM bug 216212)",
                            load->what, (unsigned long long)cr3_page, (unsigned long long)e->guest_rip);
    if (reason != EXIT_EPT_VIOLATION)
        return scenario_bad(s, "%s: expected EPT violation at CR3 page 0x%llx, observed %s exit (%u) at rip 0x%llx",
                            load->what, (unsigned long long)cr3_page, exit_reason_name(reason), reason,
                            (unsigned long long)e->guest_rip);
    if (!expect_eq(s, "EPT violation page", cr3_page, e->guest_physical & ~0xfffull))
        return false;
    return expect_eq(s, "guest rip at the violation", (uintptr_t)load->rip, e->guest_rip);
}

/* The guest asks (VMCALL) for the CR3 page to go, then runs one PDPTE-loading instruction. */
static bool pdpte_load_step(struct scenario *s, struct vcpu *v, struct ept *ept, const struct pdpte_load *load)
{
    if (!vcpu_expect_call(s, v, CALL_UNMAP_CR3_PAGE))
        return false;
    if (load->rip == pae_guest_set_pg && (vmcs_read(VMCS_GUEST_CR0) & CR0_PG))
        return scenario_error(s, "guest CR0.PG still set after clearing it");
    uint64_t cr3_page = vmcs_read(VMCS_GUEST_CR3) & ~0xfffull;
    if (!s->inject) {
        ept_set_4k(ept, cr3_page, 0, 0);
        ept_invalidate(ept); /* removing a mapping needs INVEPT (SDM 29.4.3.1) */
    }
    if (!vcpu_run_entered(s, v) || !expect_violation_at_cr3(s, v, cr3_page, load))
        return false;
    scenario_info(s, "%s: EPT violation at 0x%llx, qualification 0x%llx", load->what,
                  (unsigned long long)v->exit.guest_physical, (unsigned long long)v->exit.qualification);
    ept_set_4k(ept, cr3_page, cr3_page, EPT_RWX);
    ept_invalidate(ept);
    return true;
}

static void pae_cr3_unmapped(struct scenario *s)
{
    struct ept ept;
    ept_build_identity(&ept, (lhv_opt() & LHV_OPT_USE_LARGE_PAGE) != 0);
    struct vcpu v;
    struct guest_config cfg = {
        .mode = GUEST_MODE_PAE32, .entry = (uintptr_t)pae_guest, .stack_top = guest_stack_top(),
        .eptp = ept.eptp, .unrestricted = true,
    };
    vcpu_init(&v, &cfg);
    for (int i = 0; i < (int)ARRAY_SIZE(g_loads); i++)
        if (!pdpte_load_step(s, &v, &ept, &g_loads[i]))
            return;
    if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE))
        return;
    const uint64_t *pdpt = guest_pae_pdpt();
    for (int i = 0; i < 4; i++)
        if (vmcs_read(VMCS_GUEST_PDPTE0 + 2 * i) != pdpt[i])
            scenario_info(s, "VMCS GUEST_PDPTE%d=0x%llx differs from the guest's PDPTE 0x%llx", i,
                          (unsigned long long)vmcs_read(VMCS_GUEST_PDPTE0 + 2 * i), (unsigned long long)pdpt[i]);
    scenario_good(s);
}
