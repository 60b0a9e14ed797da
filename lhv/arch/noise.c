/*
 * Noise for race hunting (noise=nmi,ipi), the way the original LHV fired random NMIs: while each
 * scenario runs, the last AP waits a PRNG-chosen time, sends the BSP an NMI or a fixed-vector IPI
 * (VECTOR_NOISE), and again, until the runner cancels the work after the scenario. The BSP takes
 * them wherever it is: in L1 (the NMI fallback hook and irq_other count them) or in L2 (an NMI
 * exit, which vcpu_run absorbs while noise is armed; an external-interrupt exit, which vcpu_run
 * already hands to L1's handler).
 * The schedule is a function of the seed and the stream (round, scenario): on a deterministic
 * target (Bochs) the same seed gives the same run. The delays are counted in TSC cycles.
 */
#include "arch/arch.h"
#include "options.h"

/* Between two events: 20 to 500 us. Short enough that a scenario of a few milliseconds sees
 * several, long enough that the BSP still makes progress under a nested L0. */
#define NOISE_MIN_US 20
#define NOISE_MAX_US 500

struct noise_job {
    uint32_t kinds; /* NOISE_NMI | NOISE_IPI */
    uint32_t bsp_apic_id;
    uint64_t state; /* splitmix64 */
};

static struct noise_job g_job;
static uint32_t g_armed; /* kinds, for the whole run */
static uint64_t g_seed;
static int g_noise_cpu;
static volatile uint32_t g_sent_nmi, g_sent_ipi, g_nmi_in_l1, g_nmi_exits, g_ipi_taken;

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit state, every seed a good stream. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Waits until `until` or until the runner cancels the work; false when cancelled. */
static bool wait_until(uint64_t until)
{
    while (rdtsc() < until)
        if (g_work_cancel)
            return false;
    return !g_work_cancel;
}

/* Runs on the noise AP until the runner cancels the work after the scenario. */
static void noise_loop(void *arg)
{
    struct noise_job *j = arg;
    uint64_t cycles_per_us = g_tsc_hz / 1000000 ? g_tsc_hz / 1000000 : 1;
    for (;;) {
        uint64_t r = next_random(&j->state);
        uint64_t us = NOISE_MIN_US + r % (NOISE_MAX_US - NOISE_MIN_US + 1);
        if (!wait_until(rdtsc() + us * cycles_per_us))
            return;
        bool nmi = j->kinds == NOISE_NMI || (j->kinds != NOISE_IPI && (r >> 40) & 1);
        if (nmi) {
            lapic_send_ipi(j->bsp_apic_id, 0x4400); /* NMI delivery, assert */
            g_sent_nmi++;
        } else {
            lapic_send_ipi(j->bsp_apic_id, 0x4000 | VECTOR_NOISE); /* fixed delivery */
            g_sent_ipi++;
        }
    }
}

/* An NMI in L1 that no scenario hook took: with noise=nmi it is one of ours. */
static void noise_nmi(struct trap_frame *f)
{
    (void)f;
    g_nmi_in_l1++;
}

bool noise_arm(uint32_t kinds, uint64_t seed, char *why, size_t size)
{
    g_noise_cpu = g_cpu_count - 1;
    if (g_noise_cpu < 1 || !g_cpus[g_noise_cpu].online) {
        snprintf(why, size, "needs a second CPU to send from (cpus=%d)", g_cpu_count);
        return false;
    }
    g_armed = kinds;
    g_seed = seed;
    if (kinds & NOISE_NMI)
        nmi_set_fallback_hook(noise_nmi);
    return true;
}

int noise_cpu(void) { return g_armed ? g_noise_cpu : -1; }

bool noise_start(uint64_t stream)
{
    if (!g_armed)
        return true;
    g_job.kinds = g_armed;
    g_job.bsp_apic_id = g_cpus[0].apic_id;
    g_job.state = g_seed ^ next_random(&stream);
    return smp_start_work(g_noise_cpu, noise_loop, &g_job);
}

bool noise_absorbs_nmi_exits(void) { return (g_armed & NOISE_NMI) != 0; }

void noise_nmi_exit_absorbed(void) { g_nmi_exits++; }

void noise_irq(void) { g_ipi_taken++; }

void noise_counts(struct noise_counts *c)
{
    c->sent_nmi = g_sent_nmi;
    c->sent_ipi = g_sent_ipi;
    c->nmi_in_l1 = g_nmi_in_l1;
    c->nmi_exits = g_nmi_exits;
    c->ipi_taken = g_ipi_taken;
}
