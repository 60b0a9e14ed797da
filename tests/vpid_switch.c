/*
 * vpid_switch: a VPID that was never used has no cached translations, so switching an L2 to a
 * fresh VPID needs no INVVPID; with VPIDs off every VM entry flushes.
 *
 * Intel SDM Vol. 3C 29.4.1 "Information That May Be Cached" and 29.4.2 "Creating and Using
 * Cached Translation Information": linear mappings are cached per VPID and used only while the
 * current VPID is the one they were created with. 29.4.3.3 "Guidelines for Use of the INVVPID
 * Instruction": software may reuse a VPID only after invalidating it; with the "enable VPID"
 * control 0, VM entries and VM exits invalidate the mappings of VPID 0000H, so an L2 without a
 * VPID never uses a translation from an earlier entry. 31.3 "INVVPID".
 * Steps: L1 first invalidates all VPIDs (all-context INVVPID, or single-context for each VPID
 * it will use), so the VPIDs below are fresh. A PAE guest with its own tables reads a probe
 * page through VPID A, which points at marker page A. Then three times: L1 changes the guest's
 * PTE for the probe (no INVVPID, the guest does not invalidate either) and resumes it with a
 * VPID never used since the flush: the guest must read the new page. Back on VPID A with the PTE
 * changed again and no INVVPID: the old page (A's cached translation) or the new one are both
 * allowed (INFO), but the page a different VPID cached is BAD. With VPID off, four PTE changes
 * without INVVPID: the guest must read the new page every time.
 * Source: KVM 712494de96f3 ("KVM: nVMX: Flush TLB on nested VM-Entry with new VPID": L0 kept
 * using L2 translations cached under the previous VPID when L1 switched vmcs12's VPID); HyperDbg
 * turning VPID off under Hyper-V (research notes H2).
 * GOOD: every fresh VPID and every VPID-off entry saw the new page. BAD: names the step that
 * saw the old one. Bochs 2.7 flushes its TLB on every VM entry and exit (shared/DESIGN.md), so
 * the stale case cannot show there: the INFO says "new page" and the fresh-VPID checks pass.
 * Negative control (inject=vpid_switch): L1 forgets to change the PTE before switching to the
 * fresh VPID, so the guest reads the old page where the check expects the new one.
 * Needs: VPID; the EFER load controls (a 32-bit guest under a 64-bit L1). INVVPID optional.
 */
#include "arch/arch.h"
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(vpid_switch, 0, "vmx,vpid,load_efer", 3000, SUBARCH_ALL, SCENARIO_NOISE_SAFE, vpid_switch);

#define VPID_A 0x30
#define FRESH_VPIDS 3 /* VPID_A + 1 ... VPID_A + FRESH_VPIDS */
#define VPID_OFF_ROUNDS 4
#define CALL_READ 0x101 /* GUEST_CALL_USER + 1: EBX = the value at the probe */
_Static_assert(CALL_READ == GUEST_CALL_USER + 1, "keep the assembly's constant in step");

/* EBP = probe address: read it, tell L1, again and again. */
extern const uint8_t vpid_switch_guest[];
__asm__(GUEST32_CODE_BEGIN
        "vpid_switch_guest:\n"
        "1:  mov (%ebp), %ebx\n"
        "    mov $0x101, %eax\n"
        "    vmcall\n"
        "    jmp 1b\n"
        GUEST32_CODE_END);

static const char *marker_name(uint32_t value)
{
    return value == MARKER_A ? "A" : value == MARKER_B ? "B" : value == MARKER_C ? "C" : "unknown";
}

static bool guest_reads(struct scenario *s, struct vcpu *v, uint32_t *value)
{
    if (!vcpu_expect_call(s, v, CALL_READ))
        return false;
    *value = (uint32_t)v->regs.rbx;
    return true;
}

/* Make every VPID this scenario uses fresh: nothing cached for them from earlier scenarios. */
static void flush_all_vpids(void)
{
    if (!(g_vmx.ept_vpid & VPID_CAP_INVVPID))
        return;
    if (g_vmx.ept_vpid >> 42 & 1) { /* all-context */
        vmx_invvpid(2, 0, 0);
        return;
    }
    if (g_vmx.ept_vpid >> 41 & 1) /* single-context */
        for (int vpid = VPID_A; vpid <= VPID_A + FRESH_VPIDS; vpid++)
            vmx_invvpid(1, (uint64_t)vpid, 0);
}

/* Point the probe at marker page `page` (unless told to forget) and read it with `vpid`. */
static bool remap_and_read(struct scenario *s, struct vcpu *v, int page, uint16_t vpid, bool forget,
                           uint32_t *seen)
{
    if (!forget)
        guest_pae_remap(marker_page(0), marker_page(page));
    if (vpid)
        vmcs_write(VMCS_VPID, vpid);
    return guest_reads(s, v, seen);
}

static bool fresh_vpid_rounds(struct scenario *s, struct vcpu *v, int *page)
{
    for (int i = 1; i <= FRESH_VPIDS; i++) {
        uint32_t seen;
        *page = (*page + 1) % MARKER_PAGES;
        if (!remap_and_read(s, v, *page, VPID_A + i, s->inject, &seen))
            return false;
        if (seen != MARKER(*page))
            return scenario_bad(s, "expected page %s under never-used VPID 0x%x after the PTE change, observed "
                                   "page %s (0x%x): a stale translation (KVM 712494de96f3)",
                                marker_name(MARKER(*page)), VPID_A + i, marker_name(seen), seen);
    }
    return true;
}

/* Back on VPID A: A's own stale translation is allowed, another VPID's is not. */
static bool back_to_a(struct scenario *s, struct vcpu *v, int *page)
{
    uint32_t seen;
    *page = (*page + 1) % MARKER_PAGES;
    if (!remap_and_read(s, v, *page, VPID_A, false, &seen))
        return false;
    if (seen == MARKER(*page))
        scenario_info(s, "back on VPID 0x%x without INVVPID the guest saw the new page", VPID_A);
    else if (seen == MARKER_A)
        scenario_info(s, "back on VPID 0x%x without INVVPID the guest saw VPID 0x%x's old page (allowed)", VPID_A,
                      VPID_A);
    else
        return scenario_bad(s, "expected page %s (new) or A (VPID 0x%x's cached one) back on VPID 0x%x, observed "
                               "page %s (0x%x), cached under another VPID",
                            marker_name(MARKER(*page)), VPID_A, VPID_A, marker_name(seen), seen);
    return true;
}

static bool vpid_off_rounds(struct scenario *s, struct vcpu *v, int *page)
{
    vcpu_set_controls(VMCS_PROC_BASED_CONTROLS2, 0, PROC2_VPID);
    for (int i = 0; i < VPID_OFF_ROUNDS; i++) {
        uint32_t seen;
        *page = (*page + 1) % MARKER_PAGES;
        if (!remap_and_read(s, v, *page, 0, false, &seen))
            return false;
        if (seen != MARKER(*page))
            return scenario_bad(s, "expected page %s with VPID off (every VM entry flushes VPID 0, SDM 29.4.3.3), "
                                   "observed page %s (0x%x)",
                                marker_name(MARKER(*page)), marker_name(seen), seen);
    }
    return true;
}

static void vpid_switch(struct scenario *s)
{
    marker_pages_init();
    flush_all_vpids();
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_PAE32, .entry = (uintptr_t)vpid_switch_guest,
                                .stack_top = guest_stack_top(), .vpid = VPID_A };
    vcpu_init(&v, &cfg);
    vmcs_write(VMCS_GUEST_CR3, guest_pae_build_remapped(marker_page(0), marker_page(0)));
    v.regs.rbp = marker_page(0);
    int page = 0;
    uint32_t seen;
    if (!guest_reads(s, &v, &seen) || !expect_eq(s, "first read through VPID A", MARKER_A, seen))
        return;
    if (!fresh_vpid_rounds(s, &v, &page) || !back_to_a(s, &v, &page) || !vpid_off_rounds(s, &v, &page))
        return;
    scenario_good(s);
}
