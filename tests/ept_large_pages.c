/*
 * ept_large_pages: 2 MiB and (when offered) 1 GiB EPT pages translate with the right offset, and
 * a not-present large page gives an EPT violation at the exact address.
 *
 * Intel SDM Vol. 3C 29.3.2 "EPT Translation Mechanism" (bit 7 of an EPT PDE or PDPTE maps a
 * 2 MiB or 1 GiB page; bits 20:0 or 29:0 of the guest-physical address are the offset),
 * IA32_VMX_EPT_VPID_CAP bits 16 and 17. Source: the original LHV's USE_LARGE_PAGE (0x100).
 * A 2 MiB guest-physical window at 128 MiB maps to the 2 MiB region that holds a marker page in
 * LHV's image; a 1 GiB window at 2 GiB maps to host physical 0. The guest reads the marker through
 * both windows; then the 2 MiB window is made not present, the read gives an EPT violation with
 * that exact guest-physical address, L1 maps it again, and the read completes.
 * GOOD: all three reads give the marker and the violation is exact. BAD: the first that is not.
 * Negative control (inject=ept_large_pages): L1 leaves out bit 7 of the 2 MiB entry, so the CPU
 * takes host memory for a page table.
 * Needs: EPT with 2 MiB pages (1 GiB pages are checked when offered, INFO otherwise).
 */
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(ept_large_pages, LHV_OPT_USE_EPT, "vmx,ept,ept_2m", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, ept_large_pages);

#define CALL_READ (GUEST_CALL_USER + 1) /* EBX = value read at the address in ECX */
#define WINDOW_2M 0x8000000ull          /* 128 MiB: above the 4 KiB-mapped low 64 MiB */
#define WINDOW_1G 0x80000000ull         /* 2 GiB */
#define EPT_LARGE_BIT (1ull << 7)

struct reads {
    int count;
    uintptr_t address[3];
};
static struct reads g_reads;

static uintptr_t guest_read_list(uintptr_t list)
{
    const struct reads *r = (const struct reads *)list;
    for (int i = 0; i < r->count; i++)
        guest_vmcall(CALL_READ, *(volatile uint32_t *)r->address[i], r->address[i]);
    return 0;
}

static bool expect_marker(struct scenario *s, struct vcpu *v, const char *through)
{
    if (!vcpu_expect_call(s, v, CALL_READ))
        return false;
    if ((uint32_t)v->regs.rbx == MARKER_A)
        return true;
    return scenario_bad(s, "expected the marker 0x%x through the %s window (0x%llx), observed 0x%x", MARKER_A, through,
                        (unsigned long long)v->regs.rcx, (uint32_t)v->regs.rbx);
}

static void ept_large_pages(struct scenario *s)
{
    marker_pages_init();
    uintptr_t marker = marker_page(0), region = marker & ~(uintptr_t)((2u << 20) - 1);
    uintptr_t through_2m = (uintptr_t)(WINDOW_2M + (marker - region));
    uintptr_t through_1g = (uintptr_t)(WINDOW_1G + marker);
    bool have_1g = (g_vmx.ept_vpid & EPT_CAP_1G) != 0;
    struct ept ept;
    ept_build_identity(&ept, false);
    ept_set_large(&ept, 2, WINDOW_2M, region, EPT_RWX);
    if (s->inject)
        *ept_entry(&ept, 2, WINDOW_2M) &= ~EPT_LARGE_BIT;
    g_reads.count = 0;
    g_reads.address[g_reads.count++] = through_2m;
    if (have_1g) {
        ept_set_large(&ept, 3, WINDOW_1G, 0, EPT_RWX);
        g_reads.address[g_reads.count++] = through_1g;
    } else {
        scenario_info(s, "no 1 GiB EPT pages in IA32_VMX_EPT_VPID_CAP=0x%llx: 2 MiB only",
                      (unsigned long long)g_vmx.ept_vpid);
    }
    g_reads.address[g_reads.count++] = through_2m; /* again, once the window has gone and come back */

    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .eptp = ept.eptp };
    vcpu_init_c_guest(&v, &cfg, guest_read_list, (uintptr_t)&g_reads);
    if (!expect_marker(s, &v, "2 MiB") || (have_1g && !expect_marker(s, &v, "1 GiB")))
        return;
    ept_set_large(&ept, 2, WINDOW_2M, 0, 0);
    ept_invalidate(&ept); /* a mapping went away: INVEPT */
    if (!vcpu_run_expect(s, &v, EXIT_EPT_VIOLATION) ||
        !expect_eq(s, "guest-physical address of the violation in the 2 MiB window", through_2m,
                   v.exit.guest_physical))
        return;
    ept_set_large(&ept, 2, WINDOW_2M, region, EPT_RWX);
    if (!expect_marker(s, &v, "restored 2 MiB") || !vcpu_expect_call(s, &v, GUEST_CALL_DONE))
        return;
    scenario_good(s);
}
