/*
 * ept_rights_walk: EPT access rights count at every level of the walk, not just the leaf.
 *
 * Intel SDM Vol. 3C 29.3.3.2 "EPT Violations": an access is allowed only if every EPT
 * paging-structure entry on its path allows it; Table 28-7: exit-qualification bits 3-5 report
 * the logical AND of the read, write and execute bits of all those entries. Source: seed 003,
 * XMHF nesting LHV: its walker (hptw_get_pmeo) looked at the rights of the leaf only, so an L1
 * that write-protected an upper-level entry got no EPT violation (fixed with
 * hptw_checked_get_pmeo, which walks all four levels).
 * For each level in turn (PML4E, PDPTE, PDE, PTE) L1 clears the write bit of the entry on the
 * probe page's path, INVEPTs, and lets a 32-bit PAE guest (no stack, accessed and dirty bits
 * preset, so its only write is the probe store) read then write the probe. The read must work;
 * the write must give an EPT violation at the probe with qualification 0x1aa (a write; rights
 * R and X, not W; linear address valid; the final translation). L1 restores the bit and the
 * write completes.
 * GOOD: four violations, each exact. BAD: a missing violation or a wrong qualification.
 * Negative control (inject=ept_rights_walk): L1 leaves the upper-level entries writable (it
 * write-protects nothing above the leaf, as the broken walker effectively did), so the PML4E
 * step gets no violation.
 * Needs: EPT; the EFER load controls (a 32-bit guest under a 64-bit L1).
 */
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(ept_rights_walk, LHV_OPT_USE_EPT, "vmx,ept,load_efer", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, ept_rights_walk);

#define CALL_WROTE 0x101 /* GUEST_CALL_USER + 1 */
#define QUAL_WRITE_RX 0x1aaull
#define QUAL_CHECKED 0x1bfull
_Static_assert(CALL_WROTE == GUEST_CALL_USER + 1, "keep the assembly's constant in step");

static const char *const g_level_names[5] = { "", "PTE", "PDE", "PDPTE", "PML4E" };
static uint32_t g_probe_page[PAGE_SIZE / 4] __attribute__((aligned(PAGE_SIZE)));

/* EBP = probe. Reads, writes, reports; no stack. */
extern const uint8_t rights_guest[];
__asm__(GUEST32_CODE_BEGIN
        "rights_guest:\n"
        "1:  mov (%ebp), %ebx\n"
        "    movl $0x57524954, (%ebp)\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    jmp 1b\n"
        GUEST32_CODE_END);

static bool check_level(struct scenario *s, struct vcpu *v, struct ept *ept, int level)
{
    uintptr_t probe = (uintptr_t)g_probe_page;
    uint64_t *entry = ept_entry(ept, level, probe);
    if (!s->inject || level == 1)
        *entry &= ~EPT_WRITE;
    ept_invalidate(ept); /* rights went down: INVEPT */
    bool entered = vcpu_run_entered(s, v);
    *entry |= EPT_WRITE;
    if (!entered)
        return false;
    if ((v->exit.reason & 0xffff) != EXIT_EPT_VIOLATION)
        return scenario_bad(s, "expected an EPT violation for a write with W clear in the %s, observed %s (%u)",
                            g_level_names[level], exit_reason_name(v->exit.reason), v->exit.reason & 0xffff);
    if (!expect_eq(s, "guest-physical address", probe, v->exit.guest_physical))
        return false;
    if ((v->exit.qualification & QUAL_CHECKED) != QUAL_WRITE_RX)
        return scenario_bad(s, "expected qualification 0x%llx (bits 0-5, 7, 8) with W clear in the %s, observed 0x%llx",
                            QUAL_WRITE_RX, g_level_names[level], (unsigned long long)v->exit.qualification);
    return vcpu_expect_call(s, v, CALL_WROTE); /* the write goes through once W is back */
}

static void ept_rights_walk(struct scenario *s)
{
    struct ept ept;
    ept_build_identity(&ept, false); /* the probe page sits under 4 KiB mappings: four levels */
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_PAE32, .entry = (uintptr_t)rights_guest,
                                .stack_top = guest_stack_top(), .eptp = ept.eptp };
    vcpu_init(&v, &cfg);
    v.regs.rbp = (uintptr_t)g_probe_page;
    if (!vcpu_expect_call(s, &v, CALL_WROTE)) /* with every right: no violation */
        return;
    for (int level = 4; level >= 1; level--)
        if (!check_level(s, &v, &ept, level))
            return;
    scenario_good(s);
}
