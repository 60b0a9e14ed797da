/*
 * NMIs that reach L1. A scenario that sends NMIs (to itself or from another CPU) installs a hook
 * for as long as it expects them; any other NMI (a stray one from the platform, or one a
 * scenario left pending) is counted here and returns by IRET, so the runner can report it after
 * the scenario instead of losing L1 to it.
 */
#include "arch/arch.h"

static nmi_hook_fn volatile g_nmi_hook;
static nmi_hook_fn volatile g_nmi_fallback; /* noise=nmi: NMIs that are expected, though not by a scenario */
static volatile uint32_t g_nmi_unexpected[MAX_CPUS]; /* each CPU writes only its own slot */

void nmi_set_hook(nmi_hook_fn hook) { g_nmi_hook = hook; }

void nmi_set_fallback_hook(nmi_hook_fn hook) { g_nmi_fallback = hook; }

void nmi_handle(struct trap_frame *f)
{
    nmi_hook_fn hook = g_nmi_hook ? g_nmi_hook : g_nmi_fallback;
    if (hook)
        hook(f);
    else
        g_nmi_unexpected[this_cpu_index()]++;
}

uint32_t nmi_take_unexpected(void)
{
    uint32_t total = 0;
    for (int i = 0; i < g_cpu_count; i++) {
        total += g_nmi_unexpected[i];
        g_nmi_unexpected[i] = 0;
    }
    return total;
}

volatile uint32_t g_nmi_guest_count;

void nmi_keep_blocked(struct trap_frame *f) { f->vector = NMI_NO_IRET_MARK; }

void nmi_after_scenario(void)
{
    if (!g_nmi_hook)
        return;
    /* A scenario that ended while NMI-blocked: one IRET under its hook takes an NMI still pending
     * (the hook keeps NMIs blocked again), then a second IRET without the hook unblocks for good. */
    nmi_iret();
    g_nmi_hook = NULL;
    nmi_iret();
}

volatile uint32_t g_nmi_taken;

void nmi_count_and_keep_blocked(struct trap_frame *f)
{
    g_nmi_taken++;
    nmi_keep_blocked(f);
}

bool nmi_count_moves(volatile uint32_t *count, uint32_t before)
{
    uint64_t end = rdtsc() + g_tsc_hz / 1000000 * NMI_WAIT_US;
    for (int i = 0;; i++) {
        if (*count != before)
            return true;
        if (i > NMI_MIN_SPINS && rdtsc() > end)
            return false;
        cpu_relax();
    }
}

bool nmi_iret_until_quiet(void)
{
    for (int i = 0; i < 4; i++) {
        uint32_t before = g_nmi_taken;
        nmi_iret();
        if (!nmi_count_moves(&g_nmi_taken, before))
            return true;
    }
    return false;
}
