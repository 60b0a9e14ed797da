/*
 * ept_on_demand: EPT filled on demand from nothing. Every guest-physical page the guest touches
 * (its code, stack, data, and the paging structures its page walks read) must cause exactly one
 * EPT violation: L1 maps the page (not-present -> present, no INVEPT) and the guest goes on.
 * A second, identical violation for a page L1 has already mapped means the EPTE update was lost.
 *
 * Source: seed 000, a hypervisor (uXen) nested under VMware ESXi 7.0.3 stuck in an endless loop
 * of identical EPT violations after updating an EPTE from not-present to present, about one boot
 * in a hundred; rewriting the identical EPTE value worked around it. Hence many rounds, each with
 * a fresh, empty EPT.
 * Intel SDM Vol. 3C: 29.3.3.2 "EPT Violations", Table 28-7 (exit qualification: bits 3-5 give
 * the rights of the translation, 0 when not present), 29.4.3.1 "Operations that Invalidate
 * Cached Mappings": a change from not-present to present needs no invalidation, since no
 * translation is cached for a not-present entry.
 * GOOD: in every round each page faulted once, with bits 3-5 clear, and the guest's checksum is
 * right. BAD: a repeated violation (the lost update), a violation that claims the page was
 * present, or a wrong checksum.
 * Negative control (inject=ept_on_demand): in the first round L1 drops its third EPTE write, the
 * way the update was lost in the seed, so the same violation comes back.
 * Needs: EPT.
 */
#include "guest/guest.h"
#include "options.h"
#include "scenario.h"
#include "vmx/vmx.h"

LHV_SCENARIO_FLAGS(ept_on_demand, LHV_OPT_USE_EPT, "vmx,ept", 5000, SUBARCH_ALL,
                   SCENARIO_REPEATABLE | SCENARIO_NOISE_SAFE, ept_on_demand);

#define ROUNDS 20
#define TOUCH_PAGES 16
#define MAX_PAGES_PER_ROUND 96
#define LOST_UPDATE 3 /* which violation of the first round the negative control loses */
#define QUAL_TRANSLATION_RIGHTS 0x38ull

static uint8_t g_touch[TOUCH_PAGES][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

/* Writes then reads one word in each page; the sum tells L1 the guest saw its own writes. */
static uintptr_t guest_touch_pages(uintptr_t round)
{
    uintptr_t sum = 0;
    for (uintptr_t i = 0; i < TOUCH_PAGES; i++) {
        volatile uintptr_t *word = (volatile uintptr_t *)g_touch[i];
        *word = round * 1000 + i;
        sum += *word;
    }
    return sum;
}

static uintptr_t expected_sum(uintptr_t round)
{
    uintptr_t sum = 0;
    for (uintptr_t i = 0; i < TOUCH_PAGES; i++)
        sum += round * 1000 + i;
    return sum;
}

struct round_pages {
    uint64_t page[MAX_PAGES_PER_ROUND];
    int count;
};

static bool already_mapped(const struct round_pages *r, uint64_t page)
{
    for (int i = 0; i < r->count; i++)
        if (r->page[i] == page)
            return true;
    return false;
}

/* One EPT violation: check it is new and claims nothing was mapped, then map the page. */
static bool handle_violation(struct scenario *s, struct ept *ept, struct round_pages *r, int round)
{
    const struct vmx_exit *e = &g_running_vcpu->exit;
    uint64_t page = e->guest_physical & ~0xfffull;
    if (already_mapped(r, page))
        return scenario_bad(s, "expected one EPT violation per page, observed a repeated violation at 0x%llx "
                               "(qualification 0x%llx) in round %d after L1 mapped it: lost EPTE update",
                            (unsigned long long)e->guest_physical, (unsigned long long)e->qualification, round);
    if (e->qualification & QUAL_TRANSLATION_RIGHTS)
        return scenario_bad(s, "expected qualification bits 3-5 clear (not present), observed 0x%llx at 0x%llx",
                            (unsigned long long)e->qualification, (unsigned long long)e->guest_physical);
    if (r->count == MAX_PAGES_PER_ROUND)
        return scenario_error(s, "more than %d pages touched in one round", MAX_PAGES_PER_ROUND);
    r->page[r->count++] = page;
    bool lose_it = s->inject && round == 0 && r->count == LOST_UPDATE;
    if (!lose_it)
        ept_set_4k(ept, page, page, EPT_RWX); /* not-present -> present: no INVEPT (SDM 29.4.3.1) */
    return true;
}

static bool run_round(struct scenario *s, struct vcpu *v, int round, int *violations)
{
    struct ept ept;
    ept_init_empty(&ept);
    vmcs_write(VMCS_EPT_POINTER, ept.eptp);
    vcpu_restart_c_guest(v, guest_touch_pages, (uintptr_t)round);
    static struct round_pages pages;
    pages.count = 0;
    for (;;) {
        if (!vcpu_run_entered(s, v))
            return false;
        if ((v->exit.reason & 0xffff) != EXIT_EPT_VIOLATION)
            break;
        if (!handle_violation(s, &ept, &pages, round))
            return false;
    }
    if ((v->exit.reason & 0xffff) != EXIT_VMCALL || v->regs.rax != GUEST_CALL_DONE)
        return scenario_bad(s, "expected an EPT violation or the guest's final VMCALL in round %d, observed %s (%u) "
                               "at rip 0x%llx",
                            round, exit_reason_name(v->exit.reason), v->exit.reason & 0xffff,
                            (unsigned long long)v->exit.guest_rip);
    *violations = pages.count;
    return expect_eq(s, "guest checksum", expected_sum((uintptr_t)round), v->regs.rbx);
}

static void ept_on_demand(struct scenario *s)
{
    struct ept first;
    ept_init_empty(&first);
    struct vcpu v;
    struct guest_config cfg = { .mode = GUEST_MODE_NATIVE, .eptp = first.eptp };
    vcpu_init_c_guest(&v, &cfg, guest_touch_pages, 0);
    int violations[ROUNDS];
    for (int round = 0; round < ROUNDS; round++)
        if (!run_round(s, &v, round, &violations[round]))
            return;
    int least = violations[0], most = violations[0];
    for (int round = 1; round < ROUNDS; round++) {
        least = violations[round] < least ? violations[round] : least;
        most = violations[round] > most ? violations[round] : most;
    }
    scenario_info(s, "%d rounds from an empty EPT, %d to %d violations each, one per page", ROUNDS, least, most);
    scenario_good(s);
}
