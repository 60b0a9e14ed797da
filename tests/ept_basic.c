/*
 * ept_basic: an identity EPT with the write-back memory type runs the guest; a read of a page
 * that EPT does not map gives an EPT violation with the right guest-physical address, guest-
 * linear address and exit qualification; L1 then maps that guest page to a different host page
 * and the guest reads the value L1 put there.
 *
 * Intel SDM Vol. 3C: 29.3.2 "EPT Translation Mechanism", 29.3.3.2 "EPT Violations", 28.2.1
 * Table 28-7 "Exit Qualification for EPT Violations", 29.3.7 "EPT and memory typing"
 * (EPTP and leaf entries use type 6, WB). Going from not-present to present needs no INVEPT
 * (29.4.3.1): L1 deliberately does none, which is also what the hypervisor in seed 000
 * (infinite EPT violation loop under VMware ESXi 7) relied on; a lost update shows up here as
 * a second identical violation (BAD).
 * Qualification bits checked: 0 (read) = 1, 1 (write) = 0, 2 (fetch) = 0, 3-5 (the
 * translation's R/W/X) = 0, 7 (linear address valid) = 1, 8 (access to the final address, not
 * to a paging structure) = 1.
 * GOOD: exit and qualification as above, then the guest reads L1's value.
 * Negative control (inject=ept_basic): L1 "forgets" to remove the page from EPT (the step the
 * check depends on), so no violation comes and the guest reads the original value.
 * Needs: EPT with 4-level write-back tables.
 */
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(ept_basic, LHV_OPT_USE_EPT, "vmx,ept", 3000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, ept_basic);

#define PROBE_OFFSET 0x120
#define ORIGINAL_VALUE ((uintptr_t)0x1111111111111111ull)
#define L1_VALUE ((uintptr_t)0x2222222222222222ull)
#define QUAL_EXPECTED 0x181ull /* read, linear address valid, final translation */
#define QUAL_CHECKED 0x1bfull  /* bits 0-5, 7, 8 */

static uint8_t g_probe_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t g_l1_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static uintptr_t guest_read_probe(uintptr_t address)
{
    return *(volatile uintptr_t *)address;
}

static bool check_violation(struct scenario *s, const struct vmx_exit *e, uintptr_t address)
{
    if (!expect_eq(s, "guest-physical address", address, e->guest_physical))
        return false;
    if (!expect_eq(s, "guest-linear address", address, e->guest_linear))
        return false;
    return expect_eq(s, "exit qualification bits 0-8", QUAL_EXPECTED, e->qualification & QUAL_CHECKED);
}

static void ept_basic(struct scenario *s)
{
    uintptr_t probe = (uintptr_t)g_probe_page + PROBE_OFFSET;
    *(volatile uintptr_t *)probe = ORIGINAL_VALUE;
    *(volatile uintptr_t *)(g_l1_page + PROBE_OFFSET) = L1_VALUE;

    struct ept ept;
    ept_build_identity(&ept, (lhv_opt() & LHV_OPT_USE_LARGE_PAGE) != 0);
    if (!s->inject)
        ept_set_4k(&ept, (uintptr_t)g_probe_page, 0, 0);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .eptp = ept.eptp };
    vcpu_init_c_guest(&v, &cfg, guest_read_probe, probe);

    if (!vcpu_run_expect(s, &v, EXIT_EPT_VIOLATION) || !check_violation(s, &v.exit, probe))
        return;
    /* Not-present to present: no INVEPT needed (SDM 29.4.3.1), and none is done. */
    ept_set_4k(&ept, (uintptr_t)g_probe_page, (uintptr_t)g_l1_page, EPT_RWX);
    if (!vcpu_expect_call(s, &v, GUEST_CALL_DONE))
        return;
    if (!expect_eq(s, "value the guest read after L1 mapped its page", L1_VALUE, v.regs.rbx))
        return;
    scenario_good(s);
}
